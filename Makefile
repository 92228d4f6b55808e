# lockex: `make demo` shows it working, `make test` proves it.
export PATH := /usr/local/go/bin:$(PATH)
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/lockex/lockex/internal/app.Version=$(VERSION)

# make soak SOAK=30m SEED=123: the fault-injection soak for longer than the
# minute per kind make test gives it. SOAK is each kind's length: the mutex
# runs for SOAK, then the semaphore for SOAK. KIND=mutex or KIND=semaphore
# runs one of them; SEED repeats an earlier schedule.
SOAK ?= 10m
SEED ?=
KIND ?=

.PHONY: build demo test soak bench deps-demo deps-test deps-k8s image deploy-check k8s-test

# make image IMAGE=registry/lockex:tag: with docker (its daemon must answer),
# else with ko (KO_DOCKER_REPO names where it pushes).
IMAGE ?= lockex:$(VERSION)

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/lockex ./cmd/lockex

deps-demo:
	@scripts/install-deps.sh

deps-test:
	@scripts/install-deps.sh test

# podman, etcd, kube-apiserver and kube-controller-manager: e2e's pod tests
# and the Kubernetes kit need them, so make test installs them before any
# test starts its clock.
deps-k8s:
	@scripts/install-k8s-tools.sh >/dev/null

demo: deps-demo build
	@scripts/demo.sh bin/lockex

test: deps-test deps-k8s
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 25m ./...
	@$(MAKE) --no-print-directory deploy-check
	@$(MAKE) --no-print-directory k8s-test

soak: deps-test
	LOCKEX_SOAK=$(SOAK) LOCKEX_SOAK_SEED=$(SEED) $(GO) test -count=1 -timeout 0 -run '^TestSoak$$/$(KIND)' -v ./e2e/

# The Dockerfile, Helm chart, kustomize, alert rules and release workflow,
# checked by the Go tests of the separate module in deploy/ (helm, kustomize,
# promtool and actionlint are installed with go install at pinned versions
# when missing, shellcheck from Debian).
deploy-check:
	@scripts/install-deploy-tools.sh >/dev/null
	cd deploy && test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
	cd deploy && $(GO) vet ./...
	cd deploy && $(GO) test -count=1 -timeout 10m $$($(GO) list ./... | grep -v '/deploy/kube$$')

# The Kubernetes kit, deploy/kube: the chart's pods run on podman (host
# networking, ZooKeeper on 127.0.0.1) with the image built from the
# Dockerfile, and every chart rendering is installed on a real kube-apiserver
# and etcd. podman, etcd and kube-apiserver are installed at pinned versions
# when missing (kube-apiserver is built from source once, in about 8 minutes).
k8s-test: deps-k8s
	@scripts/install-deploy-tools.sh >/dev/null
	cd deploy && $(GO) test -count=1 -timeout 10m ./kube/

image:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
		set -x; docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) . && docker run --rm $(IMAGE) --version; \
	elif command -v ko >/dev/null 2>&1; then \
		[ -n "$$KO_DOCKER_REPO" ] || { echo "make image: ko needs KO_DOCKER_REPO (a registry to push to, or ko.local for a docker daemon)" >&2; exit 1; }; \
		set -x; VERSION=$(VERSION) ko build --bare --tags=$(VERSION) ./cmd/lockex; \
	else \
		if command -v docker >/dev/null 2>&1; then \
			echo "make image: docker is installed but its daemon does not answer (docker info failed), and ko is not installed:" >&2; \
		else \
			echo "make image: neither docker nor ko is installed:" >&2; \
		fi; \
		echo "  no image was built. Start a docker daemon, or install ko and set KO_DOCKER_REPO." >&2; \
		exit 1; \
	fi

# make bench: handoff, takeover, herd and footprint on a local ZooKeeper; writes docs/benchmarks.md.
# make bench ONLY=handoff: the handoff and its floor alone, printed, no report.
# make bench ONLY=size: the stripped binary's size, and before the Kubernetes mode.
ONLY ?=
bench: deps-test
	LOCKEX_BENCH=1 LOCKEX_BENCH_ONLY=$(ONLY) LOCKEX_BENCH_VERSION=$(VERSION) $(GO) test -count=1 -timeout 15m -run '^TestBench$$' -v ./bench/
