#!/usr/bin/env bash
# The local demo (README: `make demo`): everything runs on this machine, on loopback, under
# out/demo. `hack/demo.sh down` stops what `up` started and removes the state.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=$ROOT/out/demo
BIN=$ROOT/bin
REGISTRY=${SEALPOD_REGISTRY:-127.0.0.1:5000}
KBS_ADDR=${SEALPOD_KBS_ADDR:-127.0.0.1:8443}
export GOFLAGS=-buildvcs=false

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
t0=$(date +%s.%N)
phase() { printf '    (%.1fs)\n' "$(echo "$(date +%s.%N) - $t0" | bc)"; }

start_bg() { # name, command...
	local name=$1; shift
	"$@" >"$STATE/$name.log" 2>&1 &
	echo $! >"$STATE/$name.pid"
}

wait_http() { # url, what
	for _ in $(seq 1 100); do
		if curl -ks -o /dev/null "$1"; then return 0; fi
		sleep 0.1
	done
	echo "demo: $2 did not come up; see $STATE/*.log" >&2
	return 1
}

down() {
	for p in "$STATE"/*.pid; do
		[ -e "$p" ] || continue
		kill "$(cat "$p")" 2>/dev/null || true
		rm -f "$p"
	done
	rm -rf "$STATE"
	echo "demo: stopped and removed $STATE"
}

up() {
	command -v curl >/dev/null && command -v bc >/dev/null || {
		say "installing curl and bc"; apt-get update -qq && apt-get install -y -qq curl bc >/dev/null; }
	[ -d "$STATE" ] && down >/dev/null
	mkdir -p "$STATE" "$BIN"

	say "build tools"
	go build -o "$BIN/devregistry" ./hack/cmd/devregistry
	go build -o "$BIN/standin-guest" ./hack/cmd/standin-guest
	CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$BIN/hello" ./examples/hello/cmd/hello
	[ -x "$BIN/sealctl" ] && [ -x "$BIN/sealpod-kbs" ] || make -s build
	phase

	say "start a local OCI registry on $REGISTRY"
	start_bg registry "$BIN/devregistry" serve --listen "$REGISTRY" --dir "$STATE/registry"
	wait_http "http://$REGISTRY/v2/" registry
	"$BIN/devregistry" push-binary --binary "$BIN/hello" --path /opt/sealpod-demo/hello-server --ref "$REGISTRY/sealpod/hello:1.0" >"$STATE/hello.ref"
	echo "    pushed $(cat "$STATE/hello.ref")"
	phase

	say "start the key broker on https://$KBS_ADDR (simulated TEE roots enabled: demo only)"
	"$BIN/sealpod-kbs" init --dir "$STATE/kbs" --host 127.0.0.1 --url "https://$KBS_ADDR" >/dev/null
	"$BIN/sealpod-kbs" sim-roots --out "$STATE/sim-roots.pem" --key-out "$STATE/sim-node.key" >/dev/null
	start_bg kbs "$BIN/sealpod-kbs" serve --dir "$STATE/kbs" --listen "$KBS_ADDR" --insecure-sim-roots "$STATE/sim-roots.pem"
	wait_http "https://$KBS_ADDR/healthz" "key broker"
	phase

	say "guest bundle"
	if [ -f "$ROOT/out/guest/guest.json" ]; then
		GUEST=$ROOT/out/guest
	else
		GUEST=$STATE/guest
		"$BIN/standin-guest" --out "$GUEST"
		echo "    (stand-in guest: the measured Debian guest is built by 'make guest' once it exists)"
	fi
	phase

	say "seal examples/demo/app.yaml for the sim TEE and push the secure image"
	"$BIN/sealctl" image create -f examples/demo/app.yaml --seal-secrets \
		--guest "$GUEST" --tee sim --kbs-dir "$STATE/kbs" \
		--insecure-registry --push "$REGISTRY/sealpod/demo-app" -o "$STATE/app.sealed.yaml"
	phase

	say "workloads registered at the key broker"
	"$BIN/sealctl" kbs --kbs-dir "$STATE/kbs" workload list

	say "sealed manifests ($STATE/app.sealed.yaml)"
	cat "$STATE/app.sealed.yaml"
	IMAGE=$(grep -m1 'sealpod.io/image:' "$STATE/app.sealed.yaml" | awk '{print $2}')

	say "secure image $IMAGE"
	"$BIN/sealctl" image inspect --insecure-registry "$IMAGE"

	say "no plaintext left the owner's machine"
	"$BIN/sealctl" image inspect --insecure-registry -o json "$IMAGE" >"$STATE/image.json"
	"$BIN/sealctl" kbs --kbs-dir "$STATE/kbs" workload list -o json >"$STATE/workloads.json"
	fail=0
	for canary in demo-canary-token-c4f1e2 demo-canary-greeting /opt/sealpod-demo/hello-server "sealpod/hello:1.0"; do
		if grep -qF -- "$canary" "$STATE/app.sealed.yaml" "$STATE/image.json" "$STATE/workloads.json"; then
			echo "    LEAK: '$canary' in the sealed manifests, image description or broker listing"; fail=1
		else
			echo "    ok: '$canary' absent from the sealed manifests, the image description and the broker listing"
		fi
	done
	[ $fail = 0 ] || exit 1
	phase

	say "done. The registry and key broker keep running; stop them with 'make demo-down'."
}

case "${1:-up}" in
up) up ;;
down) down ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
