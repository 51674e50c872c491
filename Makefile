# Sealpod — build, test and demo entry points. See README.md.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
export GOFLAGS := -buildvcs=false

BINARIES := sealctl=./ctl/cmd/sealctl sealpod-kbs=./kbs/cmd/sealpod-kbs containerd-shim-sealpod-v2=./runtime-shim/cmd/containerd-shim-sealpod-v2

AGENT_LDFLAGS := -s -w -X main.version=$(shell git describe --always --dirty 2>/dev/null || echo dev) -extldflags -static

.PHONY: all build agent shim deps e2e-node test test-short fuzz bench lint golangci-lint archtest generate demo demo-down demo-node demo-node-down clean

all: build

build:
	@mkdir -p $(BIN)
	@for b in $(BINARIES); do \
		name=$${b%%=*}; pkg=$${b#*=}; \
		if [ -d "$$pkg" ]; then echo "go build $$name"; $(GO) build -trimpath -o $(BIN)/$$name $$pkg || exit 1; fi; \
	done
	@$(MAKE) --no-print-directory agent

# The guest agent (PID 1 of the measured guest): static, with cgo for runc's nsenter and,
# with the seccomp tag, a static libseccomp (Debian: libseccomp-dev, pkg-config).
agent:
	@mkdir -p $(BIN)
	CGO_ENABLED=1 $(GO) build -trimpath -tags netgo,osusergo,seccomp -ldflags '$(AGENT_LDFLAGS)' -o $(BIN)/sealpod-agent ./agent/cmd/sealpod-agent

# The containerd shim (runtime type io.containerd.sealpod.v2); containerd finds it on its PATH.
shim:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/containerd-shim-sealpod-v2 ./runtime-shim/cmd/containerd-shim-sealpod-v2

# Everything the suites, the demos and the cluster need (one list: hack/install-deps.sh):
# Debian packages and the protoc tools. Idempotent, about a second when all is present.
# Runs before any test, so no suite skips for a missing dependency (under CI=true one that
# would skip fails instead: internal/testdeps).
deps:
	./hack/install-deps.sh

# The node end-to-end suite (tests/node): Debian's containerd, runc, CNI plugins and QEMU,
# crictl built from the Go module proxy (hack/build-crictl.sh, cached in ~/.cache/sealpod/bin),
# a sealed two-container pod run through CRI next to a plain runc pod. Needs root.
e2e-node: deps
	./hack/build-crictl.sh
	$(GO) test -count=1 -v -timeout 40m ./tests/node/

# The default suite: unit, integration and end-to-end tests that run on this machine —
# including the guest in QEMU (tests/guest), a containerd node with the shim (tests/node) and a
# local Kubernetes cluster (tests/e2e, `make e2e-k8s`; builds Kubernetes once, cached).
test: deps lint kernel kernel-ppc64le
	$(GO) test -tags seccomp -count=1 -timeout 30m ./...
	$(MAKE) e2e-k8s

test-short:
	$(GO) test -tags seccomp -short -count=1 ./...

# Run every fuzz target for FUZZTIME each (default 10s).
FUZZTIME ?= 10s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f"; $(GO) test -run XXX -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; done

bench:
	$(GO) test -run XXX -bench . -benchmem ./imagebuilder/... ./kbs/... ./guest-image/... ./agent/unseal/...

# gofmt, go vet, the component rules (internal/archtest, docs/testing.md) and golangci-lint
# (.golangci.yml; built once from the Go module proxy into $(LINT_BIN)).
GOLANGCI_VERSION := v2.15.0
LINT_BIN := $(HOME)/.cache/sealpod/bin
GOLANGCI := $(LINT_BIN)/golangci-lint
lint: golangci-lint
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 ./internal/archtest/
	$(GOLANGCI) run ./...

golangci-lint:
	@if ! $(GOLANGCI) version 2>/dev/null | grep -q 'version $(GOLANGCI_VERSION:v%=%) '; then \
		echo "go install golangci-lint@$(GOLANGCI_VERSION) into $(LINT_BIN) (once; a few minutes)"; \
		mkdir -p $(LINT_BIN) && GOBIN=$(LINT_BIN) GOFLAGS= $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION); fi

archtest:
	$(GO) test -count=1 -v ./internal/archtest/

# agent/api needs protoc, protoc-gen-go and protoc-gen-go-ttrpc: hack/install-protoc-tools.sh
generate:
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" $(GO) generate ./...

# The main job: seal the two-service mTLS app and run it on a local Kubernetes cluster with the
# sim TEE (see README; installs the Debian packages it needs, then builds).
demo: deps
	./hack/demo.sh up

demo-down:
	./hack/demo.sh down

# The same without Kubernetes: one sealed pod through CRI on a local containerd node.
demo-node: deps build
	./hack/demo-node.sh up

demo-node-down:
	./hack/demo-node.sh down

# The measured guest bundle (docs/formats.md, docs/guest.md): $(GUEST_OUT)/{vmlinuz,initrd.img,
# guest.json,SOURCES.txt} from the minimal kernel (built once from Debian's linux-source-6.1,
# cached under ~/.cache/sealpod/kernel) and the static agent binary AGENT as /init (built
# first when it is the default bin/sealpod-agent). MKGUEST_FLAGS passes mkguest flags, e.g.
# MKGUEST_FLAGS='--kernel debian' for Debian's packaged kernel with modules.
# ARCH=ppc64le builds the ppc64le (pseries, IBM PEF) guest into out/guest-ppc64le around the
# cross-compiled agent bin/sealpod-agent-ppc64le (docs/pef.md).
GUEST_ARCH := $(if $(ARCH),$(ARCH),x86_64)
ifeq ($(GUEST_ARCH),ppc64le)
AGENT ?= bin/sealpod-agent-ppc64le
GUEST_OUT ?= out/guest-ppc64le
else
AGENT ?= bin/sealpod-agent
GUEST_OUT ?= out/guest
endif
MKGUEST_FLAGS ?=
.PHONY: guest kernel kernel-ppc64le agent-ppc64le
guest: deps $(if $(filter bin/sealpod-agent,$(AGENT)),agent) $(if $(filter bin/sealpod-agent-ppc64le,$(AGENT)),agent-ppc64le)
	@if [ ! -f "$(AGENT)" ]; then \
		echo "make guest: the agent binary $(AGENT) does not exist: pass AGENT=/path/to/static/init (see docs/guest.md)" >&2; \
		exit 1; fi
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/mkguest ./guest-image/cmd/mkguest
	$(BIN)/mkguest --arch $(GUEST_ARCH) --init $(AGENT) --out $(GUEST_OUT) $(MKGUEST_FLAGS)

# The minimal guest kernel alone (guest-image/kernel: BuildMinimal): about 10 minutes on
# 2 cores the first time, then served from ~/.cache/sealpod/kernel. `make test` runs it first
# so no test waits for the build inside its timeout.
kernel: deps
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/mkguest ./guest-image/cmd/mkguest
	$(BIN)/mkguest kernel --arch $(GUEST_ARCH)

# The ppc64le (pseries) kernel, cross-compiled (about 15-25 minutes on 2 cores the first time;
# cached like the x86 one): `make test` builds it so tests/guest TestBootPPC64LE does not wait.
kernel-ppc64le: deps
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/mkguest ./guest-image/cmd/mkguest
	$(BIN)/mkguest kernel --arch ppc64le

# The ppc64le agent: cgo cross-compiled with powerpc64le-linux-gnu-gcc against Debian's static
# glibc (libc6-dev-ppc64el-cross) and libseccomp for ppc64el (libseccomp-dev:ppc64el).
PPC64LE_CGO_ENV := CGO_ENABLED=1 GOARCH=ppc64le CC=powerpc64le-linux-gnu-gcc PKG_CONFIG_LIBDIR=/usr/lib/powerpc64le-linux-gnu/pkgconfig:/usr/share/pkgconfig
agent-ppc64le:
	@mkdir -p $(BIN)
	$(PPC64LE_CGO_ENV) $(GO) build -trimpath -tags netgo,osusergo,seccomp -ldflags '$(AGENT_LDFLAGS)' -o $(BIN)/sealpod-agent-ppc64le ./agent/cmd/sealpod-agent

clean:
	rm -rf $(BIN) out

# The local single-node Kubernetes cluster (docs/cluster.md): Kubernetes v1.33 built from the
# Go module proxy (hack/k8s/build.sh, cached in ~/.cache/sealpod/k8s), Debian's containerd and
# etcd, devregistry, sealpod-kbs with sim roots, the node runtime installed by its DaemonSet.
# State under out/cluster (SEALPOD_CLUSTER_DIR). Needs root.
.PHONY: cluster-packages cluster-up cluster-down e2e-k8s
cluster-packages: deps

cluster-up: cluster-packages
	./hack/k8s/cluster.sh up

cluster-down:
	./hack/k8s/cluster.sh down

# The cluster smoke test (tests/e2e, build tag e2e; not part of `make test`): its own cluster
# under out/e2e-cluster, a plain Deployment, a sealed pod Ready with its greeting in kubectl logs.
e2e-k8s: cluster-packages
	$(GO) test -tags cluster -count=1 -timeout 10m ./hack/k8s/
	$(GO) test -tags e2e -count=1 -v -timeout 40m ./tests/e2e/
