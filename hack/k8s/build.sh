#!/usr/bin/env bash
# hack/k8s/build.sh — builds the Kubernetes binaries of the local cluster (docs/cluster.md):
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl at
# K8S_VERSION (default v1.33.13) from the Go module proxy, into
# $HOME/.cache/sealpod/k8s/<version>/bin. Builds only the binaries that are missing there.
# Prints the bin dir on stdout last.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces every k8s.io staging module
# with ./staging/... and pins them at v0.0.0. So we build in a scratch module (outside the repo)
# that requires k8s.io/kubernetes and replaces each staging module with its published v0.<minor>.<patch>
# tag (or the newest published v0.<minor>.x when that exact patch is missing on the proxy).
# v1.32.x does not resolve on this proxy; v1.35+ refuse cgroup v1 / containerd 1.x.
set -euo pipefail
K=${K8S_VERSION:-v1.33.13}
CACHE=${SEALPOD_K8S_CACHE:-$HOME/.cache/sealpod/k8s}/$K
CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
BIN=$CACHE/bin

missing=(); for c in "${CMDS[@]}"; do [ -x "$BIN/$c" ] || missing+=("$c"); done
if [ ${#missing[@]} = 0 ]; then echo "hack/k8s/build.sh: $K cached in $BIN" >&2; echo "$BIN"; exit 0; fi

minor=$(echo "$K" | cut -d. -f2); staging=v0.${K#v1.}
work=$CACHE/src; mkdir -p "$work"
q=$(mktemp -d); trap 'rm -rf "$q"' EXIT   # module-less dir for version queries
export GOFLAGS=-mod=mod
start=$(date +%s)
(cd "$q" && go mod download k8s.io/kubernetes@"$K")
kmod=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K.mod
goversion=$(awk '$1=="go"{print $2; exit}' "$kmod")
{
  printf 'module example.com/sealpod-k8s-build\n\ngo %s\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$goversion" "$K"
  for m in $(awk '$2=="=>" && $3 ~ /^\.\/staging\// {print $1}' "$kmod" | sort -u); do
    versions=$(cd "$q" && go list -m -versions "$m" 2>/dev/null | tr ' ' '\n' | tail -n +2 || true)
    if grep -qx "$staging" <<<"$versions"; then v=$staging
    else v=$(grep -E "^v0\.$minor\.[0-9]+$" <<<"$versions" | sort -V | tail -1 || true); fi
    # unpublished staging modules (samples) are not imported by the five commands
    [ -n "$v" ] && printf '\t%s => %s %s\n' "$m" "$m" "$v"
  done
  printf ')\n'
} > "$work/go.mod.tmp"
mv "$work/go.mod.tmp" "$work/go.mod"
{ printf '//go:build tools\n\npackage tools\n\nimport (\n'
  for c in "${CMDS[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
  printf ')\n'; } > "$work/tools.go"
cd "$work"
go mod tidy
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld="$ld -X $p.gitVersion=$K -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
pkgs=(); for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
rm -rf "$BIN.tmp"; mkdir -p "$BIN.tmp" "$BIN"
CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$BIN.tmp/" "${pkgs[@]}"
for c in "${missing[@]}"; do mv "$BIN.tmp/$c" "$BIN/$c"; done
rmdir "$BIN.tmp"
echo "hack/k8s/build.sh: built ${missing[*]} ($K) in $(( $(date +%s) - start ))s into $BIN" >&2
echo "$BIN"
