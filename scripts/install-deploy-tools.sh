#!/bin/sh
# Installs the tools the deploy checks (make deploy-check) drive: helm,
# kustomize, promtool and actionlint, at pinned versions, built from the Go
# module proxy with `go install` into Go's bin directory (GOBIN, else
# GOPATH/bin), and Debian's shellcheck. A tool is built only when it is
# missing or reports another version, so after the first run (helm and
# promtool take a few minutes each to compile) this costs nothing.
# Prints the bin directory on stdout, for the caller's PATH.
set -eu

# helm.sh/helm/v3 v3.22.0 is built against k8s.io/client-go v0.37, which the
# upstream release stamps in as Kubernetes 1.37 (the default KubeVersion of
# `helm template` and the API deprecation checks of `helm lint`).
HELM_VERSION=v3.22.0
HELM_KUBE_MINOR=37
# v5.8.2 is the newest kustomize whose go.mod accepts Go 1.26.
KUSTOMIZE_VERSION=v5.8.2
# promtool runs the alert rules' unit tests (promtool test rules). Prometheus
# publishes its Go module as v0.<major*100+minor>.<patch>: v0.316.0 is
# Prometheus 3.16.0, whose version promtool --version is stamped with.
PROMTOOL_MODULE_VERSION=v0.316.0
PROMTOOL_VERSION=3.16.0
# actionlint lints the release workflow, which cannot run here.
ACTIONLINT_VERSION=v1.7.12

go=${GO:-go}
bin=$($go env GOBIN)
[ -n "$bin" ] || bin=$($go env GOPATH)/bin

helm_version() { "$bin/helm" version --template '{{.Version}}' 2>/dev/null || true; }
kustomize_version() { "$bin/kustomize" version 2>/dev/null || true; }
# The version of module $2 that the binary $1 was built from, as Go's build
# information records it (so a binary built from other sources is rebuilt).
module_version() {
	[ -x "$1" ] || return 0
	$go version -m "$1" 2>/dev/null | awk -v m="$2" '$1 == "mod" && $2 == m { print $3 }'
}

if [ "$(helm_version)" != "$HELM_VERSION" ]; then
	echo "install-deploy-tools: go install helm $HELM_VERSION into $bin (takes a few minutes once)" >&2
	CGO_ENABLED=0 GOBIN=$bin $go install -trimpath -ldflags "-s -w \
		-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
		-X helm.sh/helm/v3/internal/version.gitTreeState=clean \
		-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
		-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$HELM_KUBE_MINOR \
		-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
		-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$HELM_KUBE_MINOR" \
		"helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
	got=$(helm_version)
	[ "$got" = "$HELM_VERSION" ] || {
		echo "install-deploy-tools: $bin/helm reports '$got', want $HELM_VERSION" >&2
		exit 1
	}
fi

if [ "$(kustomize_version)" != "$KUSTOMIZE_VERSION" ]; then
	echo "install-deploy-tools: go install kustomize $KUSTOMIZE_VERSION into $bin" >&2
	CGO_ENABLED=0 GOBIN=$bin $go install -trimpath -ldflags '-s -w' \
		"sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
	got=$(kustomize_version)
	[ "$got" = "$KUSTOMIZE_VERSION" ] || {
		echo "install-deploy-tools: $bin/kustomize reports '$got', want $KUSTOMIZE_VERSION" >&2
		exit 1
	}
fi

if [ "$(module_version "$bin/promtool" github.com/prometheus/prometheus)" != "$PROMTOOL_MODULE_VERSION" ]; then
	echo "install-deploy-tools: go install promtool $PROMTOOL_VERSION into $bin (takes a few minutes once)" >&2
	CGO_ENABLED=0 GOBIN=$bin $go install -trimpath -ldflags "-s -w \
		-X github.com/prometheus/common/version.Version=$PROMTOOL_VERSION" \
		"github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_MODULE_VERSION"
	got=$(module_version "$bin/promtool" github.com/prometheus/prometheus)
	[ "$got" = "$PROMTOOL_MODULE_VERSION" ] || {
		echo "install-deploy-tools: $bin/promtool is built from prometheus '$got', want $PROMTOOL_MODULE_VERSION" >&2
		exit 1
	}
fi

if [ "$(module_version "$bin/actionlint" github.com/rhysd/actionlint)" != "$ACTIONLINT_VERSION" ]; then
	echo "install-deploy-tools: go install actionlint $ACTIONLINT_VERSION into $bin" >&2
	CGO_ENABLED=0 GOBIN=$bin $go install -trimpath -ldflags '-s -w' \
		"github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
	got=$(module_version "$bin/actionlint" github.com/rhysd/actionlint)
	[ "$got" = "$ACTIONLINT_VERSION" ] || {
		echo "install-deploy-tools: $bin/actionlint is built from actionlint '$got', want $ACTIONLINT_VERSION" >&2
		exit 1
	}
fi

# actionlint checks the workflow's run scripts with shellcheck, Debian's
# package (its version is the distribution's).
if ! command -v shellcheck >/dev/null 2>&1; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "install-deploy-tools: shellcheck is missing (run as root, or: sudo apt-get install shellcheck)" >&2
		exit 1
	fi
	echo "install-deploy-tools: apt-get install shellcheck" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q --no-install-recommends shellcheck >/dev/null ||
		{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends shellcheck >/dev/null; }
fi

echo "$bin"
