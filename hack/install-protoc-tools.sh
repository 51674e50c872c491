#!/usr/bin/env bash
# Installs the tools `make generate` needs for agent/api (agent.proto → agent.pb.go and
# agent_ttrpc.pb.go): protoc from Debian, protoc-gen-go matching the google.golang.org/protobuf
# version in go.mod, and containerd's protoc-gen-go-ttrpc. Binaries go to $(go env GOPATH)/bin,
# which must be on PATH when running `make generate`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v protoc >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ]; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q protobuf-compiler
	else
		echo "install-protoc-tools: protoc missing; run: sudo apt-get install -y protobuf-compiler" >&2
		exit 1
	fi
fi
protobuf_version=$(go list -m -f '{{.Version}}' google.golang.org/protobuf)
ttrpc_version=v1.2.10
GOFLAGS= go install "google.golang.org/protobuf/cmd/protoc-gen-go@${protobuf_version}"
GOFLAGS= go install "github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@${ttrpc_version}"
echo "protoc $(protoc --version), protoc-gen-go ${protobuf_version}, protoc-gen-go-ttrpc ${ttrpc_version} installed in $(go env GOPATH)/bin"
