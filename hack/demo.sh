#!/usr/bin/env bash
# The local demo (README: `make demo`): seal a two-service app (examples/mesh: a web server and
# a client that calls it over mutual TLS with the workload certificates) and run it on a local
# single-node Kubernetes cluster (hack/k8s/cluster.sh) with the simulated TEE: the sealed pods
# are created with plain `kubectl create`, boot in QEMU micro-VMs, attest to the key broker,
# unseal, pull their images inside the guest and talk mTLS. Then `sealctl verify` checks the
# broker against the sealed manifests and writes the mesh root that `curl --cacert` trusts.
# State: out/demo (the cluster in out/demo/cluster). `hack/demo.sh down` removes everything.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=$ROOT/out/demo
BIN=$ROOT/bin
export SEALPOD_CLUSTER_DIR=$STATE/cluster
export GOFLAGS=-buildvcs=false

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
T0=$(date +%s%N)
LAST=$T0
PHASES=()
mark() { # phase name: time since the previous mark
	local now; now=$(date +%s%N)
	PHASES+=("$(printf '%-34s %7.1f s' "$1" "$(echo "($now - $LAST) / 1000000000" | bc -l)")")
	LAST=$now
}
die() { echo "demo: $*" >&2; exit 1; }

down() {
	"$ROOT/hack/k8s/cluster.sh" down || true
	rm -rf "$STATE"
	echo "demo: stopped and removed $STATE"
}

up() {
	say "packages (hack/install-deps.sh)"
	"$ROOT/hack/install-deps.sh"
	[ -d "$STATE" ] && down >/dev/null
	mkdir -p "$STATE" "$BIN"
	mark "packages, previous demo removed"

	say "build (sealctl, sealpod-kbs, the shim, the static agent, mkguest, the demo app)"
	make -s build
	go build -o "$BIN/" ./guest-image/cmd/mkguest ./hack/cmd/devregistry
	CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$BIN/meshapp" ./examples/mesh/cmd/meshapp
	mark "build"

	say "local Kubernetes cluster + registry + key broker (hack/k8s/cluster.sh up; Kubernetes is built once and cached)"
	"$ROOT/hack/k8s/cluster.sh" up
	# shellcheck disable=SC1091
	. "$SEALPOD_CLUSTER_DIR/env"
	local kbs=$SEALPOD_KBS_DIR
	mark "cluster up"

	say "measured guest (Debian kernel + initrd with the agent) and the app image"
	"$BIN/mkguest" --init "$BIN/sealpod-agent" --out "$STATE/guest" \
		--cmdline "console=ttyS0 quiet panic=-1 sealpod.insecure_registries=$SEALPOD_GUEST_REGISTRY"
	"$BIN/devregistry" push-binary --binary "$BIN/meshapp" --path /meshapp --ref "$SEALPOD_REGISTRY/sealpod/meshapp:1.0" >/dev/null
	mark "guest + app image"

	say "seal examples/mesh/app.yaml for the sim TEE, register both workloads at the broker, push the secure image"
	"$BIN/sealctl" image create -f examples/mesh/app.yaml --seal-secrets --guest "$STATE/guest" --tee sim \
		--kbs "$SEALPOD_KBS_URL" --kbs-ca "$kbs/tls/ca.pem" --kbs-config "$kbs/admin/sealctl-kbs.json" \
		--mirror "$SEALPOD_GUEST_REGISTRY=$SEALPOD_REGISTRY" --insecure-registry \
		--push "$SEALPOD_REGISTRY/sealpod/mesh-app" --output-file "$STATE/app.sealed.yaml"
	"$BIN/sealctl" kbs --kbs-dir "$kbs" workload list
	mark "seal + push"

	say "kubectl create -f $STATE/app.sealed.yaml"
	kubectl create -f "$STATE/app.sealed.yaml"
	kubectl rollout status deployment/web --timeout=600s
	kubectl rollout status deployment/client --timeout=600s
	mark "sealed pods Ready"
	kubectl get pods -o wide
	# The client found the web Service by name through the cluster DNS (CoreDNS at 10.96.0.10);
	# curl on the host, whose resolver does not know the cluster domain, is given the address.
	local service_ip
	service_ip=$(kubectl get service web -o jsonpath='{.spec.clusterIP}')
	/bin/busybox nslookup web.default.svc.cluster.local 10.96.0.10 | sed -n '/^Name:/,$p' | grep -qwF "$service_ip" ||
		die "the cluster DNS (10.96.0.10) does not resolve web.default.svc.cluster.local to $service_ip"
	echo "--- the cluster DNS: web.default.svc.cluster.local is $service_ip"
	local i logs=""
	for i in $(seq 1 120); do
		logs=$(kubectl logs deployment/client 2>/dev/null || true)
		grep -q "mTLS from" <<<"$logs" && break
		sleep 0.5
	done
	echo "--- kubectl logs deployment/client:"
	tail -n 3 <<<"$logs"
	grep -q "mTLS from spiffe://sealpod/ns/default/deployment/client" <<<"$logs" || die "the client did not reach the server over mTLS"
	echo "--- kubectl logs deployment/web:"
	kubectl logs deployment/web
	echo "--- the shim's phases of the web pod (containerd log):"
	grep -o 'msg="sealpod phase".*' "$SEALPOD_CLUSTER_DIR/logs/containerd.log" | sed 's/^msg="sealpod phase" /    /' | head -n 8 || true
	mark "client -> web over mTLS"

	say "sealctl verify: the broker's signed manifest and history vs the sealed manifests and the secure image"
	"$BIN/sealctl" verify --kbs "$SEALPOD_KBS_URL" --kbs-ca "$kbs/tls/ca.pem" --kbs-key "$kbs/signing.pub.pem" \
		--expect "$STATE/app.sealed.yaml" --insecure-registry --dir "$STATE/verify" | tail -n 12
	mark "sealctl verify"

	say "curl --cacert $STATE/verify/mesh-root.pem https://web.default.svc:8443/ (the Service IP $service_ip through kube-proxy)"
	curl -sS --fail --cacert "$STATE/verify/mesh-root.pem" --resolve "web.default.svc:8443:$service_ip" https://web.default.svc:8443/
	local code
	code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$STATE/verify/mesh-root.pem" --resolve "web.default.svc:8443:$service_ip" https://web.default.svc:8443/mesh)
	[ "$code" = 403 ] || die "/mesh without a workload certificate answered $code, want 403"
	echo "    /mesh without a workload certificate: $code (mesh members only)"
	if curl -s -o /dev/null https://web.default.svc:8443/ --resolve "web.default.svc:8443:$service_ip" 2>/dev/null; then
		die "the server's certificate verified against the system roots"
	fi
	echo "    without --cacert: refused (the certificate chains only to the broker's mesh root)"
	mark "curl"

	say "checks: no plaintext on the node"
	local fail=0 canary where
	# The sealed API token must be nowhere; the greeting is sealed too, but the client prints
	# the server's answer and the sealed policy allows logs, so the pod logs may show it.
	for canary in demo-canary-token-7d93a1 "hello from web, inside the TEE"; do
		where=$(grep -rlF --exclude-dir=pod-logs -- "$canary" "$STATE/app.sealed.yaml" "$SEALPOD_CLUSTER_DIR/etcd" \
			"$SEALPOD_CLUSTER_DIR/containerd" "$SEALPOD_CLUSTER_DIR/kubelet" "$SEALPOD_CLUSTER_DIR/registry" 2>/dev/null || true)
		[ "$canary" = demo-canary-token-7d93a1 ] && where+=$(grep -rlF -- "$canary" "$SEALPOD_CLUSTER_DIR/kubelet/pod-logs" || true)
		if [ -n "$where" ]; then
			echo "    LEAK: '$canary' in: $where"; fail=1
		else
			echo "    ok: '$canary' is in none of: sealed manifests, etcd, containerd root/state, kubelet dirs, registry"
		fi
	done
	if kubectl exec deployment/web -- cat /proc/self/environ >/dev/null 2>&1; then
		echo "    LEAK: kubectl exec into the sealed server was allowed"; fail=1
	else
		echo "    ok: kubectl exec into the sealed server is refused (sealed policy)"
	fi
	[ $fail = 0 ] || exit 1
	mark "checks"

	guestbook

	say "timings"
	printf '    %s\n' "${PHASES[@]}"
	printf '    %-34s %7.1f s\n' "total" "$(echo "($(date +%s%N) - $T0) / 1000000000" | bc -l)"
	say "done. The app keeps running: . $SEALPOD_CLUSTER_DIR/env; kubectl get pods. Stop everything with 'make demo-down'."
}

# guestbook: the Kubernetes guestbook sealed, with real applications (examples/guestbook):
# Redis built from Debian's redis-server package (hack/cmd/debimage) as leader and followers
# replicating by Service name, and the Go frontend. An entry POSTed to the frontend's Service
# goes to the leader and is read back through a follower.
guestbook() {
	local kbs=$SEALPOD_KBS_DIR
	say "the guestbook (examples/guestbook): Redis from Debian packages (debimage), the Go frontend; sealed"
	go build -o "$BIN/" ./hack/cmd/debimage
	CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$BIN/frontend" ./examples/guestbook/cmd/frontend
	"$BIN/debimage" --recipe redis --ref "$SEALPOD_REGISTRY/sealpod/redis:7.0" --insecure
	"$BIN/devregistry" push-binary --binary "$BIN/frontend" --path /frontend --user 65532:65532 \
		--ref "$SEALPOD_REGISTRY/sealpod/guestbook-frontend:1.0"
	"$BIN/sealctl" image create -f examples/guestbook/ --guest "$STATE/guest" --tee sim \
		--kbs "$SEALPOD_KBS_URL" --kbs-ca "$kbs/tls/ca.pem" --kbs-config "$kbs/admin/sealctl-kbs.json" \
		--mirror "$SEALPOD_GUEST_REGISTRY=$SEALPOD_REGISTRY" --insecure-registry \
		--push "$SEALPOD_REGISTRY/sealpod/guestbook" --output-file "$STATE/guestbook.sealed.yaml"
	kubectl apply -f "$STATE/guestbook.sealed.yaml"
	# Upstream's 2 followers and 3 frontends do not fit beside the mesh on a 2-core node: each
	# sealed pod asks 100m plus the RuntimeClass's 250m overhead. One of each.
	kubectl scale deployment redis-follower frontend --replicas=1
	local d
	for d in redis-leader redis-follower frontend; do kubectl rollout status "deployment/$d" --timeout=600s; done
	mark "guestbook sealed, pods Ready"
	local fe entry i
	fe=http://$(kubectl get service frontend -o jsonpath='{.spec.clusterIP}')
	entry="hello from the demo, $(date -u +%H:%M:%S)"
	for i in $(seq 1 60); do
		curl -sf --data-urlencode "entry=$entry" "$fe/guestbook" >/dev/null && break
		[ "$i" = 60 ] && die "POST $fe/guestbook failed"
		sleep 1
	done
	for i in $(seq 1 60); do
		curl -sf "$fe/guestbook" | grep -qF "\"$entry\"" && break
		[ "$i" = 60 ] && die "the entry did not reach a follower"
		sleep 1
	done
	echo "--- curl $fe/guestbook (read from a follower):"
	curl -sS "$fe/guestbook"
	curl -sS "$fe/info" | tr -d '\r' | grep -E '^(role|master_host|master_link_status):' | sed 's/^/    /'
	mark "guestbook entry leader -> follower"
}

case "${1:-up}" in
up) up ;;
down) down ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
