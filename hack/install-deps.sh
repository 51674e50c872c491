#!/usr/bin/env bash
# The one install step (make deps): every Debian package the test suites, the demos and the local
# cluster use, and the protoc tools agent/api's generated-code test needs. `make test`,
# `make demo`, `make demo-node` and .ci/run all run it first, so no suite skips for a missing
# dependency on a fresh Debian 12 machine (and under CI=true, one that would skip fails:
# internal/testdeps). Idempotent; a second run only checks (about a second). Needs root to install.
# hack/install-deps.sh --check lists what is missing and exits 1 if anything is.
set -euo pipefail
cd "$(dirname "$0")/.."

# One list (docs/testing.md says which suite needs what):
#   etcd-server            real etcd for the broker's replicated store (kbs/store/etcd)
#   ovmf                   Debian's OVMF for the SNP/TDX launch-measurement reference checks
#   qemu-system-x86        boots the measured guest under software emulation (tests/guest, runtime-shim/qemu)
#   busybox-static         a static busybox packed into test images for the in-guest runtime
#   gcc libc6-dev libseccomp-dev pkg-config   cgo + static glibc and libseccomp for the agent
#   containerd runc containernetworking-plugins   the node (tests/node, installer, demo-node, cluster)
#   iptables               kube-proxy of the local Kubernetes cluster (tests/e2e, make demo)
#   protobuf-compiler      protoc, for agent/api's generated-code check
#   git make curl bc file iproute2   build tools, cluster and demo helpers
#   linux-source-6.1 flex bison libelf-dev cpio xz-utils patch   the minimal guest kernel (guest-image/kernel:
#                          BuildMinimal; built once, cached in ~/.cache/sealpod/kernel)
#   lz4                    the reference decoder the LZ4 initrd is checked against (guest-image/initrd)
#   pesign                 independent Authenticode (PE hash) the TDX RTMR[1] code is checked against (guest-image/measure/authenticode)
#   gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross libseccomp-dev:ppc64el   the ppc64le (IBM PEF) guest:
#                          its kernel and the cgo agent, cross-compiled (make guest ARCH=ppc64le; needs
#                          dpkg --add-architecture ppc64el, done below)
#   qemu-system-ppc        qemu-system-ppc64, boots the ppc64le guest on the pseries machine (tests/guest)
PACKAGES=(etcd-server ovmf qemu-system-x86 busybox-static gcc libc6-dev libseccomp-dev pkg-config
	containerd runc containernetworking-plugins iptables protobuf-compiler
	git make curl bc file iproute2
	linux-source-6.1 flex bison libelf-dev cpio xz-utils patch lz4 pesign
	gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross libseccomp-dev:ppc64el qemu-system-ppc)

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

gobin=$(go env GOPATH)/bin
tools=()
[ -x "$gobin/protoc-gen-go" ] || tools+=(protoc-gen-go)
[ -x "$gobin/protoc-gen-go-ttrpc" ] || tools+=(protoc-gen-go-ttrpc)

if [ "${1:-}" = --check ]; then
	[ ${#missing[@]} -eq 0 ] && [ ${#tools[@]} -eq 0 ] && { echo "deps: all present"; exit 0; }
	echo "deps: missing Debian packages: ${missing[*]:-none}; Go tools: ${tools[*]:-none}" >&2
	exit 1
fi

if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: missing ${missing[*]}; run as root: apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
	echo "deps: apt-get install ${missing[*]}"
	# libseccomp-dev:ppc64el comes from Debian's ppc64el archive (multiarch).
	dpkg --print-foreign-architectures | grep -qx ppc64el || dpkg --add-architecture ppc64el
	# A mirror in mid-sync fails one index (seen for binary-ppc64el); install from what there is.
	apt-get update -qq || echo "deps: apt-get update reported errors; installing from the indexes apt has" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ${#tools[@]} -gt 0 ]; then
	echo "deps: go install ${tools[*]} (hack/install-protoc-tools.sh)"
	./hack/install-protoc-tools.sh
fi
