{{/* Names and labels, as helm create writes them. */}}
{{- define "lockex.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lockex.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lockex.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lockex.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lockex.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "lockex.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
lockex.mode: "mutex" (singleton), "semaphore" (concurrency N) or "plain"
(no lockex). Refuses contradictory values.
*/}}
{{- define "lockex.mode" -}}
{{- $c := .Values.concurrency -}}
{{- if .Values.singleton -}}
{{- if and $c (ne (int $c) 1) -}}
{{- fail (printf "singleton: true runs one holder; for concurrency: %v set singleton: false" $c) -}}
{{- end -}}
mutex
{{- else if $c -}}
{{- if lt (int $c) 1 -}}
{{- fail (printf "concurrency: %v must be at least 1" $c) -}}
{{- end -}}
semaphore
{{- else -}}
plain
{{- end -}}
{{- end }}

{{- define "lockex.wrapped" -}}
{{- if ne (include "lockex.mode" .) "plain" }}true{{ end -}}
{{- end }}

{{- define "lockex.image" -}}
{{- if not .Values.image.repository }}
{{- fail "image.repository is required: the workload's image" }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default "latest") }}
{{- end }}

{{- define "lockex.lockexImage" -}}
{{- printf "%s:%s" .Values.lockexImage.repository (.Values.lockexImage.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "lockex.lockPath" -}}
{{- .Values.lock.path | default (printf "lockex/%s" .Release.Namespace) }}
{{- end }}

{{- define "lockex.lockId" -}}
{{- .Values.lock.id | default (include "lockex.fullname" .) }}
{{- end }}

{{- define "lockex.hostsFromSecret" -}}
{{- if and .Values.zookeeper.existingSecret .Values.zookeeper.hostsKey (not .Values.zookeeper.hosts) }}true{{ end -}}
{{- end }}

{{/* The argv of the main container with lockex: flags, "--", then the workload. */}}
{{- define "lockex.command" -}}
{{- if not .Values.command }}
{{- fail "command is required with lockex (singleton or concurrency): lockex starts the workload itself and cannot read the image's ENTRYPOINT" }}
{{- end }}
{{- if not (or .Values.zookeeper.hosts (include "lockex.hostsFromSecret" .)) }}
{{- fail "zookeeper.hosts is required (or zookeeper.existingSecret with zookeeper.hostsKey)" }}
{{- end }}
- /lockex/lockex
{{- if .Values.zookeeper.hosts }}
- {{ printf "--zkhosts=%s" .Values.zookeeper.hosts | quote }}
{{- end }}
- {{ printf "--lockpath=%s" (include "lockex.lockPath" .) | quote }}
- {{ printf "--lockid=%s" (include "lockex.lockId" .) | quote }}
{{- if eq (include "lockex.mode" .) "semaphore" }}
- {{ printf "--concurrent=%d" (int .Values.concurrency) | quote }}
{{- end }}
- {{ printf "--session-timeout=%v" .Values.lock.sessionTimeout | quote }}
- {{ printf "--kill-grace=%v" .Values.lock.killGrace | quote }}
- {{ printf "--http-addr=:%d" (int .Values.metrics.port) | quote }}
- {{ printf "--log-format=%s" .Values.log.format | quote }}
- {{ printf "--log-level=%s" .Values.log.level | quote }}
{{- if .Values.zookeeper.auth.enabled }}
- "--zk-password-file=/var/run/secrets/lockex/zk-password"
{{- end }}
{{- range .Values.extraLockexArgs }}
- {{ . | quote }}
{{- end }}
- "--"
{{- range .Values.command }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* Environment lockex reads from the Secret (hosts, user). */}}
{{- define "lockex.secretEnv" -}}
{{- $z := .Values.zookeeper }}
{{- if include "lockex.hostsFromSecret" . }}
- name: LOCKEX_ZKHOSTS
  valueFrom:
    secretKeyRef:
      name: {{ $z.existingSecret }}
      key: {{ $z.hostsKey }}
{{- end }}
{{- if $z.auth.enabled }}
{{- if not $z.existingSecret }}
{{- fail "zookeeper.auth.enabled needs zookeeper.existingSecret holding the password (key zookeeper.auth.passwordKey)" }}
{{- end }}
{{- if $z.auth.userKey }}
- name: LOCKEX_ZK_USER
  valueFrom:
    secretKeyRef:
      name: {{ $z.existingSecret }}
      key: {{ $z.auth.userKey }}
{{- else if $z.auth.user }}
- name: LOCKEX_ZK_USER
  value: {{ $z.auth.user | quote }}
{{- else }}
{{- fail "zookeeper.auth.enabled needs zookeeper.auth.user or zookeeper.auth.userKey" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lockex.probe" -}}
httpGet:
  path: {{ .path }}
  port: lockex-metrics
periodSeconds: {{ .period }}
timeoutSeconds: 2
failureThreshold: {{ .failures }}
{{- end }}
