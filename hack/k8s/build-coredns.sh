#!/usr/bin/env bash
# hack/k8s/build-coredns.sh — builds CoreDNS (github.com/coredns/coredns, COREDNS_VERSION, default
# v1.15.0) from the Go module proxy for the local cluster's DNS (docs/cluster.md, "Cluster DNS"),
# into $HOME/.cache/sealpod/k8s/coredns/<version>/coredns. Builds only when missing there.
# Prints the binary's path on stdout last.
#
# The build is a scratch module (outside the repo) whose main is CoreDNS's own coredns.go with
# only the plugins of kubeadm's default Corefile but prometheus, plus bind and log, imported
# instead of all of core/plugin (the cluster's Corefile: hack/cmd/clusterkit dns): the
# directive order stays CoreDNS's (core/dnsserver.Directives), and the cloud back ends
# (route53, azure, clouddns, ...) and their SDKs are neither downloaded nor compiled.
# v1.15.0's go.mod asks for go 1.26.0 (the project's toolchain).
set -euo pipefail
V=${COREDNS_VERSION:-v1.15.0}
CACHE=${SEALPOD_K8S_CACHE:-$HOME/.cache/sealpod/k8s}/coredns/$V
OUT=$CACHE/coredns
PLUGINS=(bind errors health ready log kubernetes forward cache loop reload loadbalance)
if [ -x "$OUT" ]; then echo "hack/k8s/build-coredns.sh: $V cached in $OUT" >&2; echo "$OUT"; exit 0; fi
mkdir -p "$CACHE"
SCRATCH=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
cd "$SCRATCH"
export GOFLAGS=-mod=mod
start=$(date +%s)
cat >go.mod <<EOF
module sealpod.local/corednsbuild

go 1.26

require github.com/coredns/coredns $V
EOF
{
	printf 'package main\n\n// CoreDNS %s with the plugins of the local cluster'"'"'s Corefile (hack/k8s/build-coredns.sh).\n\nimport (\n' "$V"
	for p in "${PLUGINS[@]}"; do printf '\t_ "github.com/coredns/coredns/plugin/%s"\n' "$p"; done
	printf '\n\t"github.com/coredns/coredns/coremain"\n)\n\nfunc main() { coremain.Run() }\n'
} >main.go
go mod tidy >&2
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$OUT.tmp" . >&2
mv "$OUT.tmp" "$OUT"
"$OUT" -version >&2
echo "hack/k8s/build-coredns.sh: built CoreDNS $V in $(($(date +%s) - start))s into $OUT" >&2
echo "$OUT"
