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

{{/*
lockex.imageRef: repository[:tag][@digest] of an image's values. A tag
given as a number (--set image.tag=1, or tag: 2 in a values file) is
rendered as written; YAML reads an unquoted 1.0 as the number 1, so such a
tag must be quoted. With a digest and no tag, no default tag is added.
*/}}
{{- define "lockex.imageRef" -}}
{{- $img := .image -}}
{{- $tag := "" -}}
{{- if kindIs "float64" $img.tag -}}
{{- $tag = $img.tag | int64 | toString -}}
{{- if ne (float64 $tag) $img.tag -}}
{{- $tag = toString $img.tag -}}
{{- end -}}
{{- else if not (kindIs "invalid" $img.tag) -}}
{{- $tag = toString $img.tag -}}
{{- end -}}
{{- if and (not $tag) (not $img.digest) -}}
{{- $tag = .defaultTag -}}
{{- end -}}
{{- $img.repository -}}
{{- with $tag }}:{{ . }}{{ end -}}
{{- with $img.digest }}@{{ . }}{{ end -}}
{{- end }}

{{- define "lockex.image" -}}
{{- if not .Values.image.repository }}
{{- fail "image.repository is required: the workload's image" }}
{{- end }}
{{- include "lockex.imageRef" (dict "image" .Values.image "defaultTag" "latest") }}
{{- end }}

{{- define "lockex.lockexImage" -}}
{{- include "lockex.imageRef" (dict "image" .Values.lockexImage "defaultTag" .Chart.AppVersion) }}
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
{{- include "lockex.zkFlags" . }}
{{- include "lockex.activeFlags" . }}
{{- include "lockex.healthFlags" . }}
{{- range .Values.extraLockexArgs }}
- {{ . | quote }}
{{- end }}
- "--"
{{- range .Values.command }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Environment lockex reads: hosts and user from the Secret, and who it is,
which it writes into its nodes for --status. With the pod's UID and the
container's name, lockex (PID 1 here) deletes the node of this container's
earlier incarnation when the container restarts after a crash, so the next
in line takes over at once, not a session timeout later (docs/design.md
§3.4). The container's name is a literal: the downward API cannot give it.
*/}}
{{- define "lockex.env" -}}
{{- include "lockex.secretEnv" . }}
- name: LOCKEX_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: LOCKEX_POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: LOCKEX_POD_UID
  valueFrom:
    fieldRef:
      fieldPath: metadata.uid
- name: LOCKEX_POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: LOCKEX_CONTAINER_NAME
  value: {{ .Values.containerName | quote }}
{{- end }}

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

{{/* Where the Secrets lockex reads are mounted, in every container that runs it. */}}
{{- define "lockex.secretsDir" -}}/var/run/secrets/lockex{{- end }}

{{/* The flags that reach ZooKeeper with the mounted password and certificates. */}}
{{- define "lockex.zkFlags" -}}
{{- $dir := include "lockex.secretsDir" . }}
{{- if .Values.zookeeper.auth.enabled }}
- {{ printf "--zk-password-file=%s/zk-password/zk-password" $dir | quote }}
{{- end }}
{{- with .Values.zookeeper.tls }}
{{- if .enabled }}
{{- if not .secretName }}
{{- fail "zookeeper.tls.enabled needs zookeeper.tls.secretName: a Secret with the CA (and the client certificate and key), as cert-manager writes it" }}
{{- end }}
- {{ printf "--zk-tls-ca=%s/zk-tls/ca.crt" $dir | quote }}
{{- if .clientCertificate }}
- {{ printf "--zk-tls-cert=%s/zk-tls/tls.crt" $dir | quote }}
- {{ printf "--zk-tls-key=%s/zk-tls/tls.key" $dir | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Files of a Secret lockex reads, as any user: 0444, or 0440 when the pod
gives an fsGroup that makes them the group's. The container is the only
reader either way.
*/}}
{{- define "lockex.secretMode" -}}
{{- if (include "lockex.podSecurityContext" . | fromYaml).fsGroup }}0440{{ else }}0444{{ end }}
{{- end }}

{{/* The mounts of the Secrets lockex reads. */}}
{{- define "lockex.secretMounts" -}}
{{- $dir := include "lockex.secretsDir" . }}
{{- if .Values.zookeeper.auth.enabled }}
- name: lockex-zk-password
  mountPath: {{ $dir }}/zk-password
  readOnly: true
{{- end }}
{{- if .Values.zookeeper.tls.enabled }}
- name: lockex-zk-tls
  mountPath: {{ $dir }}/zk-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "lockex.secretVolumes" -}}
{{- $z := .Values.zookeeper }}
{{- if $z.auth.enabled }}
- name: lockex-zk-password
  secret:
    secretName: {{ $z.existingSecret }}
    items:
      - key: {{ $z.auth.passwordKey }}
        path: zk-password
    defaultMode: {{ include "lockex.secretMode" . }}
{{- end }}
{{- if $z.tls.enabled }}
- name: lockex-zk-tls
  secret:
    secretName: {{ $z.tls.secretName }}
    items:
      - key: {{ $z.tls.caKey }}
        path: ca.crt
      {{- if $z.tls.clientCertificate }}
      - key: {{ $z.tls.certKey }}
        path: tls.crt
      - key: {{ $z.tls.keyKey }}
        path: tls.key
      {{- end }}
    defaultMode: {{ include "lockex.secretMode" . }}
{{- end }}
{{- end }}

{{/*
lockex.activeFlags: the workload's readiness check behind /active
(activeCheck), with routeToActive the label lockex puts on its pod while it
is active, and with routeToActive or deletionCost the deletion cost it
keeps on its pod.
*/}}
{{- define "lockex.activeFlags" -}}
{{- $c := .Values.activeCheck }}
{{- if and $c.httpGet $c.tcpSocket }}
{{- fail "activeCheck: give httpGet or tcpSocket, not both" }}
{{- end }}
{{- if $c.httpGet }}
{{- $scheme := $c.httpGet.scheme | default "HTTP" | lower }}
{{- if not (has $scheme (list "http" "https")) }}
{{- fail (printf "activeCheck.httpGet.scheme %q: want HTTP or HTTPS" $c.httpGet.scheme) }}
{{- end }}
{{- $path := $c.httpGet.path | default "/" }}
{{- if not (hasPrefix "/" $path) }}
{{- fail (printf "activeCheck.httpGet.path %q: want an absolute path, like /ready" $path) }}
{{- end }}
- {{ printf "--active-http=%s://%s/%s" $scheme (include "lockex.checkAddr" (dict "check" $c.httpGet "what" "activeCheck.httpGet" "ports" .Values.ports)) (trimPrefix "/" $path) | quote }}
{{- else if $c.tcpSocket }}
- {{ printf "--active-tcp=%s" (include "lockex.checkAddr" (dict "check" $c.tcpSocket "what" "activeCheck.tcpSocket" "ports" .Values.ports)) | quote }}
{{- end }}
{{- if or $c.httpGet $c.tcpSocket }}
- {{ printf "--active-period=%ds" (int $c.periodSeconds) | quote }}
- {{ printf "--active-timeout=%ds" (int $c.timeoutSeconds) | quote }}
- {{ printf "--active-failure-threshold=%d" (int $c.failureThreshold) | quote }}
{{- end }}
{{- if .Values.routeToActive }}
- {{ printf "--active-label=%s" (include "lockex.activeLabel" .) | quote }}
{{- end }}
{{- if include "lockex.patchesPod" . }}
- "--deletion-cost"
{{- end }}
{{- end }}

{{/*
lockex.patchesPod: "true" when lockex patches its own pod through the
Kubernetes API (routeToActive's label, deletionCost's annotation): the pod
then needs its service account's token and the Role that allows it.
*/}}
{{- define "lockex.patchesPod" -}}
{{- if and (include "lockex.wrapped" .) (or .Values.routeToActive .Values.deletionCost) }}true{{ end }}
{{- end }}

{{/*
lockex.healthFlags: the workload's health check (healthCheck), whose
failures stop the workload and give the lock up, and the standby's own
check (healthCheck.standby), which keeps an unfit standby out of the
queue; both with healthCheck's timing.
*/}}
{{- define "lockex.healthFlags" -}}
{{- $c := .Values.healthCheck }}
{{- $s := $c.standby | default dict }}
{{- include "lockex.checkFlag" (dict "check" $c "what" "healthCheck" "flag" "health" "ports" .Values.ports) }}
{{- include "lockex.checkFlag" (dict "check" $s "what" "healthCheck.standby" "flag" "standby" "ports" .Values.ports) }}
{{- if or $c.httpGet $c.exec $s.httpGet $s.exec }}
- {{ printf "--health-period=%ds" (int $c.periodSeconds) | quote }}
- {{ printf "--health-timeout=%ds" (int $c.timeoutSeconds) | quote }}
- {{ printf "--health-failure-threshold=%d" (int $c.failureThreshold) | quote }}
{{- end }}
{{- if or $c.httpGet $c.exec }}
- {{ printf "--health-start-period=%ds" (int $c.startPeriodSeconds) | quote }}
{{- end }}
{{- end }}

{{/*
lockex.checkFlag: --<flag>-url or --<flag>-cmd for a check of httpGet or
exec. An exec command's words are single-quoted, which lockex splits back
as a shell would and runs without one.
*/}}
{{- define "lockex.checkFlag" -}}
{{- $c := .check }}
{{- if and $c.httpGet $c.exec }}
{{- fail (printf "%s: give httpGet or exec, not both" .what) }}
{{- end }}
{{- if $c.httpGet }}
{{- $scheme := $c.httpGet.scheme | default "HTTP" | lower }}
{{- $path := $c.httpGet.path | default "/" }}
{{- if not (hasPrefix "/" $path) }}
{{- fail (printf "%s.httpGet.path %q: want an absolute path, like /healthz" .what $path) }}
{{- end }}
- {{ printf "--%s-url=%s://%s/%s" .flag $scheme (include "lockex.checkAddr" (dict "check" $c.httpGet "what" (printf "%s.httpGet" .what) "ports" .ports)) (trimPrefix "/" $path) | quote }}
{{- else if $c.exec }}
{{- if not $c.exec.command }}
{{- fail (printf "%s.exec.command is required" .what) }}
{{- end }}
{{- $words := list }}
{{- range $c.exec.command }}
{{- $words = append $words (printf "'%s'" (replace "'" "'\\''" .)) }}
{{- end }}
- {{ printf "--%s-cmd=%s" .flag (join " " $words) | quote }}
{{- end }}
{{- end }}

{{/* host:port of an activeCheck, its port a number or a name in ports. */}}
{{- define "lockex.checkAddr" -}}
{{- $port := .check.port }}
{{- if not $port }}
{{- fail (printf "%s.port is required" .what) }}
{{- end }}
{{- if kindIs "string" $port }}
{{- $found := 0 }}
{{- range .ports }}
{{- if eq .name $port }}{{ $found = .containerPort }}{{ end }}
{{- end }}
{{- if not $found }}
{{- fail (printf "%s.port %q: no port of that name in ports" .what $port) }}
{{- end }}
{{- $port = $found }}
{{- end }}
{{- $host := .check.host | default "127.0.0.1" }}
{{- if contains ":" $host }}{{ $host = printf "[%s]" $host }}{{ end }}
{{- printf "%s:%d" $host (int $port) }}
{{- end }}

{{/* The label of the pods that are active, which the Service selects. */}}
{{- define "lockex.activeLabel" -}}lockex.io/active=true{{- end }}

{{- define "lockex.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "lockex.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The pod's and the workload container's securityContext: the values as
given, over the restricted profile when hardened.
*/}}
{{- define "lockex.podSecurityContext" -}}
{{- $sc := deepCopy .Values.podSecurityContext }}
{{- if .Values.hardened }}
{{- $sc = include "lockex.given" (list $sc (dict "runAsNonRoot" true "seccompProfile" (dict "type" "RuntimeDefault"))) | fromYaml }}
{{- end }}
{{- with $sc }}{{ toYaml . }}{{ end }}
{{- end }}

{{- define "lockex.securityContext" -}}
{{- $sc := deepCopy .Values.securityContext }}
{{- if .Values.hardened }}
{{- $sc = include "lockex.given" (list $sc (include "lockex.restricted" . | fromYaml)) | fromYaml }}
{{- end }}
{{- with $sc }}{{ toYaml . }}{{ end }}
{{- end }}

{{/*
lockex.given: the first dict with each key of the second it lacks added.
Not sprig's merge, which also overwrites keys given as false or 0.
*/}}
{{- define "lockex.given" -}}
{{- $given := index . 0 }}
{{- range $k, $v := index . 1 }}
{{- if not (hasKey $given $k) }}{{ $_ := set $given $k $v }}{{ end }}
{{- end }}
{{- toYaml $given }}
{{- end }}

{{/* lockex's own image runs restricted, whatever the workload does. */}}
{{- define "lockex.restricted" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* hardened mounts an emptyDir at /tmp, unless a volumeMount is there already. */}}
{{- define "lockex.tmpVolume" -}}
{{- if .Values.hardened }}
{{- $taken := false }}
{{- range .Values.volumeMounts }}{{ if eq (clean .mountPath) "/tmp" }}{{ $taken = true }}{{ end }}{{ end }}
{{- if not $taken }}true{{ end }}
{{- end }}
{{- end }}
