#!/bin/sh
# Installs the tools the deploy checks (make deploy-check) drive: helm and
# kustomize, at pinned versions, built from the Go module proxy with
# `go install` into Go's bin directory (GOBIN, else GOPATH/bin). A tool is
# built only when it is missing or reports another version, so after the
# first run (helm takes a few minutes to compile) this costs nothing.
# Prints the bin directory on stdout, for the caller's PATH.
set -eu

# helm.sh/helm/v3 v3.22.0 is built against k8s.io/client-go v0.37, which the
# upstream release stamps in as Kubernetes 1.37 (the default KubeVersion of
# `helm template` and the API deprecation checks of `helm lint`).
HELM_VERSION=v3.22.0
HELM_KUBE_MINOR=37
# v5.8.2 is the newest kustomize whose go.mod accepts Go 1.26.
KUSTOMIZE_VERSION=v5.8.2

go=${GO:-go}
bin=$($go env GOBIN)
[ -n "$bin" ] || bin=$($go env GOPATH)/bin

helm_version() { "$bin/helm" version --template '{{.Version}}' 2>/dev/null || true; }
kustomize_version() { "$bin/kustomize" version 2>/dev/null || true; }

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

echo "$bin"
