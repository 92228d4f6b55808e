# lockex: `make demo` shows it working, `make test` proves it.
export PATH := /usr/local/go/bin:$(PATH)
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/lockex/lockex/internal/app.Version=$(VERSION)

# make soak SOAK=30m SEED=123: the fault-injection soak for longer than the
# minute make test gives it; SEED repeats an earlier schedule.
SOAK ?= 20m
SEED ?=

.PHONY: build demo test soak deps-demo deps-test
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/lockex ./cmd/lockex

deps-demo:
	@scripts/install-deps.sh

deps-test:
	@scripts/install-deps.sh test

demo: deps-demo build
	@scripts/demo.sh bin/lockex

test: deps-test
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...

soak: deps-test
	LOCKEX_SOAK=$(SOAK) LOCKEX_SOAK_SEED=$(SEED) $(GO) test -count=1 -timeout 0 -run '^TestSoak$$' -v ./e2e/
