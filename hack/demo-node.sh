#!/usr/bin/env bash
# The node-level demo (`make demo-node`; `make demo` runs on a Kubernetes cluster: hack/demo.sh):
# seal a sample workload and run it end to end on a
# local node with the simulated TEE — a real containerd with the Sealpod shim, the pod in a
# QEMU micro-VM whose agent attests to a real key broker. Everything runs on this machine,
# on loopback, with its state under out/demo. `hack/demo.sh down` stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=$ROOT/out/demo
BIN=$ROOT/bin
NODE=$STATE/node
SHIM_STATE=/run/sealpod-demo
REGISTRY=127.0.0.1:5000
GUEST_REGISTRY=10.0.2.2:5000 # the host's loopback as the guest sees it (QEMU user networking)
KBS_PORT=8443
export GOFLAGS=-buildvcs=false

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
T0=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - T0) / 1000000 ))"; }
declare -A PHASES
mark() { PHASES[$1]=$(elapsed); }

start_bg() { # name, command...
	local name=$1; shift
	setsid "$@" >"$STATE/$name.log" 2>&1 &
	echo $! >"$STATE/$name.pid"
}

wait_for() { # what, command...
	local what=$1; shift
	for _ in $(seq 1 300); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	echo "demo: $what did not come up; see $STATE/*.log" >&2
	return 1
}

crictl() { "$CRICTL" --config "$STATE/crictl.yaml" "$@"; }

down() {
	if [ -S "$NODE/containerd.sock" ] && [ -x "${CRICTL:-}" ] && [ -f "$STATE/crictl.yaml" ]; then
		crictl rmp -fa >/dev/null 2>&1 || true
	fi
	for p in "$STATE"/*.pid; do
		[ -e "$p" ] || continue
		kill -TERM -- "-$(cat "$p")" 2>/dev/null || kill "$(cat "$p")" 2>/dev/null || true
		rm -f "$p"
	done
	sleep 1
	pkill -f "sealpod-demo" 2>/dev/null || true # QEMU of a pod the shim could not stop
	# containerd's mounts (rootfs, sandbox shm) under the state directory.
	if [ -d "$STATE" ]; then
		{ grep -o " $STATE[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	fi
	rm -rf "$STATE" "$SHIM_STATE"
	echo "demo: stopped and removed $STATE"
}

up() {
	say "packages (hack/install-deps.sh)"
	"$ROOT/hack/install-deps.sh"
	[ -d "$STATE" ] && down >/dev/null
	mkdir -p "$STATE" "$BIN" "$NODE"

	say "build (sealctl, sealpod-kbs, the shim, the static agent, the node installer, crictl, the demo app)"
	make -s build
	go build -o "$BIN/devregistry" ./hack/cmd/devregistry
	go build -o "$BIN/mkguest" ./guest-image/cmd/mkguest
	go build -o "$BIN/sealpod-node-installer" ./runtime-shim/cmd/sealpod-node-installer
	CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$BIN/hello" ./examples/hello/cmd/hello
	CRICTL=$(./hack/build-crictl.sh)
	mark build

	say "local OCI registry on $REGISTRY, with the demo app and the node's pause image"
	start_bg registry "$BIN/devregistry" serve --listen "$REGISTRY" --dir "$STATE/registry"
	wait_for registry curl -fs "http://$REGISTRY/v2/"
	"$BIN/devregistry" push-binary --binary "$BIN/hello" --path /opt/sealpod-demo/hello-server --ref "$REGISTRY/sealpod/hello:1.0"
	PAUSE=$("$BIN/devregistry" push-binary --binary "$BIN/hello" --path /pause --ref "$REGISTRY/sealpod/pause:demo")

	say "key broker on https://127.0.0.1:$KBS_PORT (simulated TEE roots enabled: demo only)"
	"$BIN/sealpod-kbs" init --dir "$STATE/kbs" --host 127.0.0.1 --host 10.0.2.2 --url "https://127.0.0.1:$KBS_PORT" >/dev/null
	"$BIN/sealpod-kbs" sim-roots --out "$STATE/sim-roots.pem" --key-out "$STATE/sim-node.key" >/dev/null
	start_bg kbs "$BIN/sealpod-kbs" serve --dir "$STATE/kbs" --listen "127.0.0.1:$KBS_PORT" --insecure-sim-roots "$STATE/sim-roots.pem"
	wait_for "key broker" curl -ks "https://127.0.0.1:$KBS_PORT/healthz"
	mark services

	say "measured guest (Debian kernel + initrd with the agent)"
	"$BIN/mkguest" --init "$BIN/sealpod-agent" --out "$STATE/guest" \
		--cmdline "console=ttyS0 quiet panic=-1 sealpod.insecure_registries=$GUEST_REGISTRY"
	mark guest

	say "seal examples/demo/app.yaml for the sim TEE, register it at the broker, push the secure image"
	"$BIN/sealctl" image create -f examples/demo/app.yaml --seal-secrets \
		--guest "$STATE/guest" --tee sim --kbs-dir "$STATE/kbs" --kbs "https://10.0.2.2:$KBS_PORT" \
		--mirror "$GUEST_REGISTRY=$REGISTRY" --insecure-registry \
		--push "$REGISTRY/sealpod/demo-app" --output-file "$STATE/app.sealed.yaml"
	"$BIN/sealctl" kbs --kbs-dir "$STATE/kbs" workload list
	IMAGE=$(grep -m1 'sealpod.io/image:' "$STATE/app.sealed.yaml" | awk '{print $2}')
	WORKLOAD=$(grep -m1 'sealpod.io/workload:' "$STATE/app.sealed.yaml" | awk '{print $2}')
	mark seal

	say "sealed manifests ($STATE/app.sealed.yaml)"
	cat "$STATE/app.sealed.yaml"
	say "secure image $IMAGE"
	"$BIN/sealctl" image inspect --insecure-registry "$IMAGE"

	say "local node: containerd with the sealpod runtime handler (node installer's config)"
	"$BIN/sealpod-node-installer" standalone-config --dir "$NODE" --sandbox-image "${PAUSE%@*}:demo" \
		--restrict-oom-score-adj >"$NODE/config.toml"
	cat >>"$NODE/config.toml" <<EOT

[plugins."io.containerd.grpc.v1.cri".registry.mirrors."$REGISTRY"]
  endpoint = ["http://$REGISTRY"]
EOT
	cat >"$STATE/shim.json" <<EOT
{"tee": "sim", "simKey": "$STATE/sim-node.key", "stateDir": "$SHIM_STATE", "network": "user", "bootTimeout": "300s"}
EOT
	PATH="$BIN:$PATH" SEALPOD_SHIM_CONFIG="$STATE/shim.json" start_bg containerd containerd --config "$NODE/config.toml"
	wait_for containerd test -S "$NODE/containerd.sock"
	mark node

	say "run the sealed pod through CRI (what the kubelet does)"
	mkdir -p "$STATE/logs"
	printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 300\n' "$NODE/containerd.sock" "$NODE/containerd.sock" >"$STATE/crictl.yaml"
	cat >"$STATE/pod.json" <<EOT
{"metadata": {"name": "hello", "namespace": "default", "uid": "demo-hello-1", "attempt": 0},
 "annotations": {"sealpod.io/image": "$IMAGE", "sealpod.io/workload": "$WORKLOAD", "sealpod.io/kbs": "https://10.0.2.2:$KBS_PORT"},
 "log_directory": "$STATE/logs",
 "linux": {"security_context": {"namespace_options": {"network": 2}}}}
EOT
	cat >"$STATE/server.json" <<EOT
{"metadata": {"name": "server"}, "image": {"image": "$IMAGE"}, "log_path": "server.log"}
EOT
	crictl pull "$IMAGE" >/dev/null
	mark pull
	POD=$(crictl runp --runtime sealpod "$STATE/pod.json" 2>/dev/null)
	SRV=$(crictl create "$POD" "$STATE/server.json" "$STATE/pod.json")
	mark create
	crictl start "$SRV" >/dev/null
	mark start
	wait_for "the greeting in the pod's log" sh -c "\"$CRICTL\" --config \"$STATE/crictl.yaml\" logs $SRV 2>&1 | grep -q 'hello from inside the TEE'"
	mark running
	crictl pods
	crictl ps
	echo "--- crictl logs server:"
	crictl logs "$SRV"
	echo "--- the shim's phases:"
	grep -o 'msg="sealpod phase".*' "$STATE/containerd.log" | sed 's/^msg="sealpod phase" /    /' | head

	say "checks: no plaintext left the owner's machine or reached the node"
	local fail=0 where
	"$BIN/sealctl" image inspect --insecure-registry -o json "$IMAGE" >"$STATE/image.json"
	"$BIN/sealctl" kbs --kbs-dir "$STATE/kbs" workload list -o json >"$STATE/workloads.json"
	pgrep -a qemu-system >"$STATE/qemu-cmdline.txt" || true
	for canary in demo-canary-token-c4f1e2 demo-canary-greeting /opt/sealpod-demo/hello-server; do
		where=$(grep -rlF -- "$canary" "$STATE/app.sealed.yaml" "$STATE/image.json" "$STATE/workloads.json" \
			"$STATE/qemu-cmdline.txt" "$STATE/containerd.log" "$NODE/root" "$NODE/state" "$SHIM_STATE" 2>/dev/null || true)
		if [ -n "$where" ]; then
			echo "    LEAK: '$canary' in: $where"; fail=1
		else
			echo "    ok: '$canary' is in none of: sealed manifests, image, broker listing, QEMU command line, containerd root/state/log, shim state"
		fi
	done
	if crictl exec "$SRV" cat /proc/self/environ >/dev/null 2>&1; then
		echo "    LEAK: crictl exec was allowed"; fail=1
	else
		echo "    ok: crictl exec into the sealed container is refused (sealed policy)"
	fi
	[ $fail = 0 ] || exit 1
	mark checks

	say "sealctl verify: the broker's signed manifest and history vs the sealed manifests and the secure image"
	"$BIN/sealctl" verify --kbs "https://127.0.0.1:$KBS_PORT" --kbs-alias "https://10.0.2.2:$KBS_PORT" \
		--kbs-ca "$STATE/kbs/tls/ca.pem" --kbs-key "$STATE/kbs/signing.pub.pem" \
		--expect "$STATE/app.sealed.yaml" --insecure-registry --dir "$STATE/verify" | tail -n 20
	echo "    clients of the sealed pods trust $STATE/verify/mesh-root.pem"
	mark verify

	say "timings (ms since start)"
	for k in build services guest seal node pull create start running checks verify; do printf '    %-9s %6s\n' "$k" "${PHASES[$k]}"; done
	echo "    (start = VM boot + attestation + unseal + in-guest image pull + start; the shim's phases above break it down)"
	say "done. The pod keeps running: $CRICTL --config $STATE/crictl.yaml ps; stop everything with 'make demo-down'."
}

case "${1:-up}" in
up) up ;;
down)
	CRICTL=$HOME/.cache/sealpod/bin/crictl
	down
	;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
