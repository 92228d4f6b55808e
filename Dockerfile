# syntax=docker/dockerfile:1
# lockex as a static binary on a distroless base, running as non-root.
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t lockex .
# The same binary as make build (and .ko.yaml): CGO_ENABLED=0, -trimpath, the
# version stamped with -ldflags.

ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd/ cmd/
COPY internal/ internal/
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X github.com/lockex/lockex/internal/app.Version=${VERSION}" \
    -o /out/lockex ./cmd/lockex
# ko (.ko.yaml, the released images) keeps the binary at /ko-app/lockex and
# cannot be told otherwise: the same path here, as a link, so that
# COPY --from=<any lockex image> /ko-app/lockex works on both.
RUN mkdir -p /out/ko-app && ln -s /lockex /out/ko-app/lockex

FROM ${BASE_IMAGE}
COPY --from=build /out/lockex /lockex
COPY --from=build /out/ko-app/ /ko-app/
# distroless's nonroot user; numeric, so runAsNonRoot can check it.
USER 65532:65532
ENTRYPOINT ["/lockex"]
