# Sealpod — build, test and demo entry points. See README.md.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
export GOFLAGS := -buildvcs=false

BINARIES := sealctl=./ctl/cmd/sealctl sealpod-kbs=./kbs/cmd/sealpod-kbs

AGENT_LDFLAGS := -s -w -X main.version=$(shell git describe --always --dirty 2>/dev/null || echo dev) -extldflags -static

.PHONY: all build agent test test-short fuzz bench lint generate demo demo-down clean

all: build

build:
	@mkdir -p $(BIN)
	@for b in $(BINARIES); do \
		name=$${b%%=*}; pkg=$${b#*=}; \
		if [ -d "$$pkg" ]; then echo "go build $$name"; $(GO) build -trimpath -o $(BIN)/$$name $$pkg || exit 1; fi; \
	done
	@$(MAKE) --no-print-directory agent

# The guest agent (PID 1 of the measured guest): static, with cgo for runc's nsenter.
agent:
	@mkdir -p $(BIN)
	CGO_ENABLED=1 $(GO) build -trimpath -tags netgo,osusergo -ldflags '$(AGENT_LDFLAGS)' -o $(BIN)/sealpod-agent ./agent/cmd/sealpod-agent

# The default suite: unit, integration and end-to-end tests that run on this machine.
test: lint
	$(GO) test -count=1 -timeout 30m ./...

test-short:
	$(GO) test -short -count=1 ./...

# Run every fuzz target for FUZZTIME each (default 10s).
FUZZTIME ?= 10s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f"; $(GO) test -run XXX -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; done

bench:
	$(GO) test -run XXX -bench . -benchmem ./imagebuilder/... ./kbs/... ./guest-image/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

generate:
	$(GO) generate ./...

# The main job: seal the sample application end to end on this machine (see README).
demo: build
	./hack/demo.sh up

demo-down:
	./hack/demo.sh down

clean:
	rm -rf $(BIN) out
