#!/usr/bin/env bash
# hack/k8s/cluster.sh up|down|status|env — a local single-node Kubernetes cluster with the
# Sealpod node runtime (docs/cluster.md), the node offering the simulated TEEs sim and sim-tdx. Everything lives under one state dir
# ($SEALPOD_CLUSTER_DIR, default out/cluster): binaries, configs, PKI, data, logs, PID files.
# Needs root and Debian's containerd, runc, containernetworking-plugins, etcd-server,
# qemu-system-x86 and busybox-static (`make cluster-up` installs what is missing).
#
#   up      build what is missing (Kubernetes, CoreDNS: cached in ~/.cache/sealpod/k8s), start
#           everything (CoreDNS as the cluster DNS), install the runtime through the
#           node-installer DaemonSet (SEALPOD_CLUSTER_INSTALL=direct: the installer binary on
#           the host instead), print the env
#   down    stop everything (PID files), remove pods, mounts, the bridge, global leftovers and
#           the state dir
#   status  what runs
#   env     shell exports: KUBECONFIG, SEALPOD_REGISTRY, SEALPOD_KBS_URL, ...
#   kbs-stop, kbs-start
#           stop / start the key broker alone (fault tests: pods wait for it)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
STATE=${SEALPOD_CLUSTER_DIR:-$ROOT/out/cluster}
case $STATE in /*) ;; *) STATE=$ROOT/$STATE ;; esac
INSTALL=${SEALPOD_CLUSTER_INSTALL:-daemonset}
NODE=localhost # the apiserver reaches the kubelet (logs, exec) by the node name: 127.0.0.1
BRIDGE=sealpod0
POD_CIDR=10.244.0.0/24
GW=10.244.0.1 # the bridge's address: pods and sealed guests reach the host here
SVC_CIDR=10.96.0.0/24
# Cluster DNS (docs/cluster.md, "Cluster DNS"): CoreDNS runs on the host, bound to the bridge
# gateway; the kube-dns Service's fixed cluster IP (the kubelet's clusterDNS) routes to it.
DNS_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local
COREDNS_READY=127.0.0.1:8181
APISERVER=https://$GW:6443
REGISTRY=127.0.0.1:5000
KBS_PORT=8443
ETCD_CLIENT=127.0.0.1:23790
ETCD_PEER=127.0.0.1:23800
TOOLS=$STATE/tools
# The host-path provisioner's fixed parent of PV directories (k8s.io/kubernetes
# pkg/volume/hostpath: /tmp/hostpath_pv/<uuid>); up links it to $STATE/volumes.
PV_LINK=/tmp/hostpath_pv
# The node's TEEs (installer --tee, in order of preference) and the labels the installer sets for
# them when they are ready: one per TEE, so that the node matches each TEE's RuntimeClass.
TEES=sim,sim-tdx
TEE_SELECTOR=sealpod.io/tee.sim=true,sealpod.io/tee.sim-tdx=true
export GOFLAGS=-buildvcs=false

T0=$(date +%s.%N)
say() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
die() { echo "cluster: $*" >&2; exit 1; }
waitfor() { # what, timeout seconds, command...
	local what=$1 timeout=$2 end; shift 2
	end=$(($(date +%s) + timeout))
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$end" ] || die "timed out after ${timeout}s waiting for $what (logs: $STATE/logs)"
		sleep 0.2
	done
}
start_bg() { # name, command... (own process group; PID file pids/<name>; log appended: a restart keeps the earlier log)
	local name=$1; shift
	setsid "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$STATE/pids/$name"
}
kubectl() { "$KBIN/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }

env_file() {
	cat <<EOF
export KUBECONFIG=$STATE/kubeconfig
export PATH=$KBIN:\$PATH
export SEALPOD_CLUSTER_DIR=$STATE
export SEALPOD_REGISTRY=$REGISTRY
export SEALPOD_GUEST_REGISTRY=$GW:5000
export SEALPOD_KBS_URL=https://$GW:$KBS_PORT
export SEALPOD_KBS_DIR=$STATE/kbs
export CONTAINERD_ADDRESS=$STATE/containerd/containerd.sock
export CONTAINER_RUNTIME_ENDPOINT=unix://$STATE/containerd/containerd.sock
EOF
}

preflight() {
	[ "$(id -u)" = 0 ] || die "needs root (containerd, kubelet, mounts)"
	local b
	for b in containerd containerd-shim-runc-v2 runc ctr etcd qemu-system-x86_64 ip bc curl; do
		command -v $b >/dev/null || die "$b not found: make cluster-up installs Debian's containerd runc containernetworking-plugins etcd-server qemu-system-x86 busybox-static"
	done
	[ -x /usr/lib/cni/bridge ] || die "/usr/lib/cni/bridge missing (containernetworking-plugins)"
	[ -x /bin/busybox ] && file_static /bin/busybox || die "/bin/busybox must be the static one (busybox-static)"
	if [ -e /run/sealpod-cluster.lock ] && [ "$(cat /run/sealpod-cluster.lock)" != "$STATE" ]; then
		die "another cluster runs from $(cat /run/sealpod-cluster.lock) (global paths: only one at a time)"
	fi
	# $PV_LINK: absent, or a link left by a cluster (ours, or one whose state dir is gone)
	if [ -e "$PV_LINK" ] || [ -L "$PV_LINK" ]; then
		[ -L "$PV_LINK" ] || die "$PV_LINK exists and is not the cluster's link to its PV directories: move it away"
		local to; to=$(readlink "$PV_LINK")
		[ "$to" = "$STATE/volumes" ] || [ ! -e "$to" ] || die "$PV_LINK links to $to, another cluster's PV directories"
	fi
}
file_static() { file -L "$1" | grep -q 'statically linked'; }

build() {
	say "build: Kubernetes (hack/k8s/build.sh), CoreDNS (hack/k8s/build-coredns.sh), Sealpod binaries, crictl"
	KBIN=$("$ROOT/hack/k8s/build.sh")
	COREDNS=$("$ROOT/hack/k8s/build-coredns.sh")
	mkdir -p "$TOOLS"
	CGO_ENABLED=0 go build -trimpath -o "$TOOLS/" ./hack/cmd/clusterkit ./hack/cmd/pause ./hack/cmd/devregistry \
		./kbs/cmd/sealpod-kbs ./runtime-shim/cmd/containerd-shim-sealpod-v2 ./runtime-shim/cmd/sealpod-node-installer
	CRICTL=$("$ROOT/hack/build-crictl.sh")
	echo "$KBIN" >"$STATE/kbin"
	echo "$CRICTL" >"$STATE/crictl"
	echo "$COREDNS" >"$STATE/coredns-bin"
}

network() {
	ip link show $BRIDGE >/dev/null 2>&1 || ip link add $BRIDGE type bridge
	ip addr show dev $BRIDGE | grep -q "inet $GW/" || ip addr add $GW/24 dev $BRIDGE
	ip link set $BRIDGE up
	mkdir -p "$STATE/cni/net.d"
	cat >"$STATE/cni/net.d/10-sealpod-cluster.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "sealpod-cluster", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$GW"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$STATE/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
EOF
}

# Persistent volumes: kube-controller-manager's host-path provisioner creates each claim's PV
# directory under the fixed $PV_LINK, a link to $STATE/volumes (so the data stays in the state
# dir and down removes it); the default StorageClass is applied once the apiserver is up.
pv_dir() {
	mkdir -p "$STATE/volumes"
	chmod 0700 "$STATE/volumes"
	ln -sfn "$STATE/volumes" "$PV_LINK"
}

registry_and_kbs() {
	start_bg registry "$TOOLS/devregistry" serve --listen $REGISTRY --dir "$STATE/registry"
	# devregistry binds loopback only; pods and sealed guests reach it through the gateway
	start_bg registry-forward "$TOOLS/clusterkit" forward --listen $GW:5000 --to $REGISTRY
	local kbs=$TOOLS/sealpod-kbs
	# The simulated TEEs' roots (sim: the fake AMD ARK/ASK; sim-tdx: the fake Intel root the
	# broker appends) and the node's keys: the VCEK key (sim), the PCK key and chain (sim-tdx).
	"$kbs" sim-roots --out "$STATE/kbs-sim-roots.pem" --key-out "$STATE/sim-vcek.pem" \
		--tdx-key-out "$STATE/sim-tdx-pck.pem" --rsa-bits 2048 >/dev/null
	"$kbs" init --dir "$STATE/kbs" --host $GW --host 127.0.0.1 --url https://$GW:$KBS_PORT >/dev/null
	# The broker listens on the bridge gateway: reachable from this host and from pods (the
	# guest of a sealed pod is on the pod network with the shim's tap networking), not from
	# other machines.
	kbs_start
	waitfor "devregistry" 30 curl -sf http://$REGISTRY/v2/
	waitfor "devregistry forward" 30 curl -sf http://$GW:5000/v2/
}
kbs_start() {
	[ ! -f "$STATE/pids/kbs" ] || ! alive "$(cat "$STATE/pids/kbs")" || die "sealpod-kbs already runs"
	start_bg kbs "$TOOLS/sealpod-kbs" serve --dir "$STATE/kbs" --listen $GW:$KBS_PORT --insecure-sim-roots "$STATE/kbs-sim-roots.pem" --log-format text
	waitfor "sealpod-kbs" 30 curl -ksf https://$GW:$KBS_PORT/healthz
}

containerd_config() {
	mkdir -p "$STATE/etc/containerd" "$STATE/bin"
	"$TOOLS/clusterkit" containerd-config --dir "$STATE/containerd" --sandbox-image docker.io/local/pause:cluster \
		--cni-conf-dir "$STATE/cni/net.d" --http-registry $REGISTRY --http-registry $GW:5000 \
		--out "$STATE/etc/containerd/config.toml"
	# What the installer's --restart-cmd runs (inside its pod, hostPID): stop containerd; the
	# supervisor below starts it again with the edited config.
	cat >"$STATE/etc/containerd/restart-containerd.sh" <<'EOF'
#!/bin/sh
# restart the local cluster's containerd: its supervisor (hack/k8s/cluster.sh) restarts it
d=$(dirname "$0"); old=$(cat "$d/containerd.pid")
kill "$old" || exit 1
i=0; while [ "$(cat "$d/containerd.pid")" = "$old" ] || [ ! -e "$d/containerd.ready" ]; do
	i=$((i+1)); [ $i -lt 300 ] || { echo "containerd did not come back" >&2; exit 1; }; sleep 0.1
done
EOF
	chmod 0755 "$STATE/etc/containerd/restart-containerd.sh"
}

install_direct() { # the node installer run on the host, before containerd starts
	say "install the node runtime with sealpod-node-installer on the host (SEALPOD_CLUSTER_INSTALL=direct)"
	"$TOOLS/sealpod-node-installer" install --host-root / --containerd-config "$STATE/etc/containerd/config.toml" \
		--shim-dir "$STATE/bin" --shim "$TOOLS/containerd-shim-sealpod-v2" --tee $TEES --sim-key "$STATE/sim-vcek.pem" \
		--sim-tdx-key "$STATE/sim-tdx-pck.pem" --network tap --no-restart --node-name "" >"$STATE/logs/installer.log" 2>&1 ||
		{ cat "$STATE/logs/installer.log" >&2; die "node installer failed"; }
}

start_containerd() {
	# A supervisor restarts containerd when it exits (the installer's restart command kills
	# it), as systemd would; down stops the supervisor first. The shim is found on PATH.
	local cfg=$STATE/etc/containerd
	cat >"$STATE/containerd-supervisor.sh" <<EOF
#!/bin/bash
trap 'kill \$(cat $cfg/containerd.pid) 2>/dev/null; exit 0' TERM INT
while [ ! -e "$STATE/pids/containerd.stop" ]; do
	rm -f $cfg/containerd.ready
	PATH=$STATE/bin:\$PATH containerd --config $cfg/config.toml --log-level info >>$STATE/logs/containerd.log 2>&1 &
	echo \$! >$cfg/containerd.pid; cp $cfg/containerd.pid $STATE/pids/containerd
	for i in \$(seq 1 300); do [ -S $STATE/containerd/containerd.sock ] && break; sleep 0.1; done
	touch $cfg/containerd.ready
	wait \$! || true
	sleep 0.3
done
EOF
	chmod +x "$STATE/containerd-supervisor.sh"
	start_bg containerd-supervisor "$STATE/containerd-supervisor.sh"
	waitfor "containerd" 30 test -S "$STATE/containerd/containerd.sock"
	waitfor "containerd's CRI plugin" 30 "$CRICTL" -r "unix://$STATE/containerd/containerd.sock" info
}

import_pause() {
	local ref
	ref=$("$TOOLS/clusterkit" pack-image --insecure --ref $REGISTRY/sealpod/pause:cluster \
		--file "$TOOLS/pause:/pause" --entrypoint /pause)
	ctr -a "$STATE/containerd/containerd.sock" -n k8s.io images pull --plain-http "$ref" >/dev/null
	ctr -a "$STATE/containerd/containerd.sock" -n k8s.io images tag --force "$ref" docker.io/local/pause:cluster >/dev/null
}

control_plane() {
	local P=$STATE/pki
	start_bg etcd etcd --name sealpod-cluster --data-dir "$STATE/etcd" \
		--listen-client-urls http://$ETCD_CLIENT --advertise-client-urls http://$ETCD_CLIENT \
		--listen-peer-urls http://$ETCD_PEER --initial-advertise-peer-urls http://$ETCD_PEER \
		--initial-cluster sealpod-cluster=http://$ETCD_PEER
	"$TOOLS/clusterkit" pki --dir "$P" --node $NODE --server $APISERVER --ip 127.0.0.1 --ip $GW --ip 10.96.0.1
	cp "$P/admin.kubeconfig" "$STATE/kubeconfig"
	waitfor "etcd" 60 curl -sf http://$ETCD_CLIENT/health
	say "etcd healthy"
	start_bg kube-apiserver "$KBIN/kube-apiserver" --etcd-servers=http://$ETCD_CLIENT \
		--bind-address=$GW --advertise-address=$GW --secure-port=6443 --service-cluster-ip-range=$SVC_CIDR \
		--client-ca-file="$P/ca.crt" --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" \
		--kubelet-client-certificate="$P/apiserver-kubelet-client.crt" --kubelet-client-key="$P/apiserver-kubelet-client.key" \
		--kubelet-certificate-authority="$P/ca.crt" --kubelet-preferred-address-types=Hostname \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
		--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true --v=1
	waitfor "kube-apiserver" 120 curl -sf --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" $APISERVER/readyz
	say "kube-apiserver ready"
	start_bg kube-controller-manager "$KBIN/kube-controller-manager" --kubeconfig="$P/controller-manager.kubeconfig" \
		--authentication-kubeconfig="$P/controller-manager.kubeconfig" --authorization-kubeconfig="$P/controller-manager.kubeconfig" \
		--bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
		--service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
		--cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
		--service-cluster-ip-range=$SVC_CIDR --controllers='*,-nodeipam' --enable-hostpath-provisioner --v=1
	start_bg kube-scheduler "$KBIN/kube-scheduler" --kubeconfig="$P/scheduler.kubeconfig" \
		--authentication-kubeconfig="$P/scheduler.kubeconfig" --authorization-kubeconfig="$P/scheduler.kubeconfig" \
		--bind-address=127.0.0.1 --leader-elect=false --v=1
}

kubelet() {
	local P=$STATE/pki
	mkdir -p "$STATE/kubelet/root" "$STATE/kubelet/manifests" "$STATE/kubelet/pod-logs"
	cat >"$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$STATE/containerd/containerd.sock
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
cgroupsPerQOS: true
enforceNodeAllocatable: []
oomScoreAdj: 0
staticPodPath: $STATE/kubelet/manifests
podLogsDir: $STATE/kubelet/pod-logs
address: 127.0.0.1
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: $P/kubelet.crt
tlsPrivateKeyFile: $P/kubelet.key
authentication: {anonymous: {enabled: false}, webhook: {enabled: false}, x509: {clientCAFile: $P/ca.crt}}
authorization: {mode: AlwaysAllow}
resolvConf: /etc/resolv.conf
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$DNS_IP]
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
serializeImagePulls: false
EOF
	start_bg kubelet "$KBIN/kubelet" --config="$STATE/kubelet/config.yaml" --kubeconfig="$P/kubelet.kubeconfig" \
		--root-dir="$STATE/kubelet/root" --cert-dir="$STATE/kubelet/pki" --hostname-override=$NODE --node-ip=$GW --v=1
	waitfor "node $NODE Ready" 180 node_ready
	say "node $NODE Ready"
	waitfor "the default service account" 120 kubectl -n default get serviceaccount default
}
# kube-proxy (iptables mode) routes Service cluster IPs: pod → Service → pod (sealed guests
# included; bridge-nf-call-iptables makes the bridge's replies pass conntrack) and host →
# Service. Its chains live in the host's tables: down runs `kube-proxy --cleanup`.
kube_proxy() {
	local P=$STATE/pki
	[ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null)" = 1 ] ||
		die "kube-proxy: net.bridge.bridge-nf-call-iptables must be 1 (br_netfilter) for pod → Service → pod on one bridge"
	start_bg kube-proxy "$KBIN/kube-proxy" --kubeconfig="$P/kube-proxy.kubeconfig" --hostname-override=$NODE \
		--proxy-mode=iptables --cluster-cidr=$POD_CIDR --bind-address=127.0.0.1 \
		--healthz-bind-address=127.0.0.1:10256 --metrics-bind-address=127.0.0.1:10249 \
		--conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 --v=1
	waitfor "kube-proxy's iptables rules for the kubernetes Service" 60 sh -c "iptables -t nat -S KUBE-SERVICES | grep -q default/kubernetes"
	say "kube-proxy up (Service IPs in $SVC_CIDR route)"
}

# Cluster DNS as kubeadm's CoreDNS add-on, CoreDNS a host process like the control plane:
# clusterkit dns writes its Corefile (the kubernetes plugin reads the API with the coredns
# client certificate of clusterkit pki; other names go to the host's resolv.conf) and the
# manifest (system:coredns RBAC, the kube-dns Service at $DNS_IP without selector, an
# EndpointSlice pointing it at $GW:53), applied as soon as the apiserver is up so the fixed
# cluster IP is taken before anything else allocates one. kube-proxy routes $DNS_IP to $GW:53.
dns_start() {
	"$TOOLS/clusterkit" dns --dir "$STATE/coredns" --kubeconfig "$STATE/pki/coredns.kubeconfig" --service-ip $DNS_IP \
		--service-cidr $SVC_CIDR --listen $GW --domain $CLUSTER_DOMAIN --ready $COREDNS_READY
	kubectl apply -f "$STATE/coredns/kube-dns.yaml" >/dev/null
	start_bg coredns "$COREDNS" -conf "$STATE/coredns/Corefile"
	waitfor "CoreDNS ready (synced with the API)" 60 curl -sf http://$COREDNS_READY/ready
	say "CoreDNS ready on $GW:53"
}
dns_wait() { # after kube-proxy: the Service IP answers
	waitfor "kube-proxy's rules for kube-system/kube-dns" 60 sh -c "iptables -t nat -S KUBE-SERVICES | grep -q kube-system/kube-dns:dns"
	waitfor "kubernetes.default.svc.$CLUSTER_DOMAIN through $DNS_IP" 30 /bin/busybox nslookup kubernetes.default.svc.$CLUSTER_DOMAIN $DNS_IP
	say "cluster DNS: kube-dns $DNS_IP (CoreDNS)"
}

node_ready() { kubectl get node $NODE -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' | grep -qx True; }

install_daemonset() {
	say "install the node runtime: installer image → devregistry, runtime-shim/deploy manifests"
	local image
	image=$("$TOOLS/clusterkit" pack-image --insecure --ref $REGISTRY/sealpod/sealpod-node-installer:cluster \
		--entrypoint /opt/sealpod/bin/sealpod-node-installer \
		--file "$TOOLS/sealpod-node-installer:/opt/sealpod/bin/sealpod-node-installer" \
		--file "$TOOLS/containerd-shim-sealpod-v2:/opt/sealpod/bin/containerd-shim-sealpod-v2" \
		--file /bin/busybox:/opt/sealpod/bin/busybox)
	kubectl apply -f runtime-shim/deploy/namespace.yaml -f runtime-shim/deploy/rbac.yaml >/dev/null
	kubectl -n sealpod-system create secret generic sealpod-sim-key --from-file=vcek.pem="$STATE/sim-vcek.pem" \
		--from-file=tdx-pck.pem="$STATE/sim-tdx-pck.pem" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
	# The DaemonSet of runtime-shim/deploy with: this image; tees sim and sim-tdx; tap networking; the
	# cluster's containerd config and shim dir (state dir) as /host/etc/containerd and
	# /host/usr/local/bin; containerd restarted through its supervisor; the apiserver at the
	# gateway (no kube-proxy: the kubernetes Service IP is not routed).
	"$TOOLS/clusterkit" installer-manifest --image "$image" \
		--relocate /etc/containerd="$STATE/etc/containerd" --relocate /usr/local/bin="$STATE/bin" \
		--args "install,--host-root,/host,--tee,\"$TEES\",--sim-key,/var/run/sealpod/sim/vcek.pem,--sim-tdx-key,/var/run/sealpod/sim/tdx-pck.pem,--network,tap,--shim,/opt/sealpod/bin/containerd-shim-sealpod-v2,--restart-cmd,/opt/sealpod/bin/busybox sh /host/etc/containerd/restart-containerd.sh,--wait" \
		--env KUBERNETES_SERVICE_HOST=$GW --env KUBERNETES_SERVICE_PORT=6443 >"$STATE/installer-daemonset.yaml"
	kubectl apply -f "$STATE/installer-daemonset.yaml" >/dev/null
	waitfor "the node labels $TEE_SELECTOR (installer DaemonSet; kubectl -n sealpod-system logs ds/sealpod-node-installer)" 180 \
		sh -c "'$KBIN/kubectl' --kubeconfig '$STATE/kubeconfig' get nodes -l '$TEE_SELECTOR' -o name | grep -qx node/$NODE"
}

up() {
	trap 'echo "cluster: up failed: logs in $STATE/logs; hack/k8s/cluster.sh down cleans up" >&2' ERR
	preflight
	[ -e "$STATE/pids" ] && down >/dev/null
	mkdir -p "$STATE"/{logs,pids}
	echo "$STATE" >/run/sealpod-cluster.lock
	build
	say "built"
	network
	pv_dir
	registry_and_kbs
	say "devregistry on $REGISTRY (pods: $GW:5000), sealpod-kbs on https://$GW:$KBS_PORT"
	containerd_config
	[ "$INSTALL" = direct ] && install_direct
	start_containerd
	import_pause
	say "containerd up, pause image imported"
	control_plane
	dns_start
	kubelet
	kube_proxy
	dns_wait
	kubectl apply -f hack/k8s/storageclass.yaml >/dev/null
	if [ "$INSTALL" = direct ]; then
		kubectl label node $NODE ${TEE_SELECTOR//,/ } --overwrite >/dev/null
	else
		install_daemonset
	fi
	kubectl apply -f runtime-shim/deploy/runtimeclasses.yaml >/dev/null
	waitfor "containerd to list the sealpod handler" 60 sh -c "'$CRICTL' -r unix://$STATE/containerd/containerd.sock info | grep -q '\"sealpod\"'"
	env_file >"$STATE/env"
	say "cluster up: . $STATE/env (or: hack/k8s/cluster.sh env)"
}

# alive pid: running and not a zombie (our daemons are reparented; their reaper may be slow)
alive() { [ -r "/proc/$1/stat" ] && [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]; }
stop() { # name: TERM the process group, KILL after 10 s
	local f=$STATE/pids/$1 pid i
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	kill -TERM -- -"$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
	if alive "$pid"; then echo "cluster: $1 (pid $pid) ignored SIGTERM for 10 s: SIGKILL" >&2; fi
	kill -KILL -- -"$pid" 2>/dev/null || true
	rm -f "$f"
}

# kill_shims: shims of this cluster's containerd still running (pods CRI could not remove); the
# sealpod shim's QEMU dies with it (Pdeathsig).
kill_shims() {
	local p pids=()
	for p in /proc/[0-9]*; do
		tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "containerd-shim.* -address $STATE/containerd/containerd.sock" && pids+=("${p#/proc/}")
	done
	[ ${#pids[@]} -gt 0 ] || return 0
	echo "cluster: killing ${#pids[@]} leftover shim(s): ${pids[*]}" >&2
	kill -TERM "${pids[@]}" 2>/dev/null || true
	for p in $(seq 1 50); do
		local any=0 q; for q in "${pids[@]}"; do alive "$q" && any=1; done
		[ $any = 1 ] || return 0; sleep 0.1
	done
	kill -KILL "${pids[@]}" 2>/dev/null || true
}

down() {
	[ -d "$STATE" ] || { echo "cluster: nothing at $STATE"; return 0; }
	KBIN=$(cat "$STATE/kbin" 2>/dev/null || true)
	CRICTL=$(cat "$STATE/crictl" 2>/dev/null || true)
	stop kubelet
	stop kube-proxy
	stop coredns
	[ -x "$KBIN/kube-proxy" ] && "$KBIN/kube-proxy" --cleanup >>"$STATE/logs/kube-proxy.log" 2>&1 || true
	stop kube-scheduler
	stop kube-controller-manager
	local sock=$STATE/containerd/containerd.sock
	if [ -S "$sock" ] && [ -x "$CRICTL" ]; then
		# every pod, sealed ones included (the shim stops the VM when its last task goes)
		"$CRICTL" -r "unix://$sock" -i "unix://$sock" --timeout 120s rmp -af >/dev/null 2>&1 || true
	fi
	stop kube-apiserver
	stop etcd
	touch "$STATE/pids/containerd.stop"
	stop containerd-supervisor
	stop containerd
	kill_shims
	stop kbs
	stop registry-forward
	stop registry
	# the runtime the installer put in place: shim config and sim key in /etc/sealpod
	if [ -x "$STATE/tools/sealpod-node-installer" ] && [ -f "$STATE/etc/containerd/config.toml" ]; then
		"$STATE/tools/sealpod-node-installer" uninstall --host-root / --containerd-config "$STATE/etc/containerd/config.toml" \
			--shim-dir "$STATE/bin" --no-restart --node-name "" >>"$STATE/logs/installer.log" 2>&1 || true
	fi
	rmdir /etc/sealpod 2>/dev/null || true
	findmnt -rn -o TARGET | grep "^$STATE" | sort -r | xargs -r umount -l 2>/dev/null || true
	ip link del $BRIDGE 2>/dev/null || true
	# global paths (docs/cluster.md): empty cgroups, log symlinks, device-plugin socket, CNI cache
	local h d
	for h in /sys/fs/cgroup/*/; do for d in kubepods k8s.io; do
		[ -d "$h$d" ] && find "$h$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	done; done
	find /var/log/containers /var/log/pods -maxdepth 1 -lname "$STATE/*" -delete 2>/dev/null || true
	rm -f /var/lib/kubelet/device-plugins/kubelet.sock /var/lib/kubelet/device-plugins/DEPRECATION
	rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet /var/log/containers 2>/dev/null || true
	rm -f /var/lib/cni/results/sealpod-cluster-* 2>/dev/null || true
	# the PV directories are under $STATE/volumes; the provisioner's link to them goes
	[ "$(readlink "$PV_LINK" 2>/dev/null)" = "$STATE/volumes" ] && rm -f "$PV_LINK"
	rm -f /run/sealpod-cluster.lock
	rm -rf "$STATE"
	echo "cluster: stopped and removed $STATE"
}

status() {
	[ -d "$STATE/pids" ] || { echo "cluster: not running ($STATE)"; return 1; }
	local f rc=0
	for f in "$STATE"/pids/*; do
		case $f in *.stop) continue ;; esac
		if kill -0 "$(cat "$f")" 2>/dev/null; then echo "running  $(basename "$f") pid $(cat "$f")"
		else echo "STOPPED  $(basename "$f")"; rc=1; fi
	done
	KBIN=$(cat "$STATE/kbin")
	kubectl get nodes -o wide 2>/dev/null || rc=1
	return $rc
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
env)
	[ -f "$STATE/env" ] || die "not up ($STATE/env missing)"
	cat "$STATE/env"
	;;
kbs-stop)
	[ -f "$STATE/env" ] || die "not up ($STATE/env missing)"
	stop kbs
	;;
kbs-start)
	[ -f "$STATE/env" ] || die "not up ($STATE/env missing)"
	kbs_start
	;;
*) echo "usage: $0 up|down|status|env|kbs-stop|kbs-start" >&2; exit 2 ;;
esac
