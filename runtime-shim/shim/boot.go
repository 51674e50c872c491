package shim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/hostvalue"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/runtime-shim/config"
	"github.com/sealpod/sealpod/runtime-shim/netns"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
)

func validWorkload(w string) bool {
	return w != "" && len(w) <= 253 && !strings.ContainsAny(w, "/\\\x00") && w != "." && w != ".."
}

// podBoot is what one boot of the pod VM reads of the shim's records, copied under the service
// lock so that the boot (seconds: QEMU, guest kernel, agent, attestation, unseal) runs without
// it. Its methods keep the receiver name s of the Service methods they were.
type podBoot struct {
	svc                                         *Service
	cfg                                         *config.Config
	log                                         *slog.Logger
	sandboxID, hostname, netnsPath, cgroupsPath string
	annotations                                 map[string]string

	vm *podVM // the booted VM, once boot returns nil
}

// bootLocked copies the pod's records for a boot (caller holds s.mu).
func (s *Service) bootLocked() *podBoot {
	return &podBoot{svc: s, cfg: s.cfg, log: s.log, sandboxID: s.sandboxID, hostname: s.hostname,
		netnsPath: s.netnsPath, cgroupsPath: s.cgroupsPath, annotations: s.annotations}
}

// boot boots the pod VM (s.vm) and unseals the workload, without the service lock; on failure
// it leaves no QEMU, tap, cgroup or state behind. Cancelling ctx abandons the boot.
func (s *podBoot) boot(ctx context.Context, r *taskAPI.CreateTaskRequest, resolv string) (retErr error) {
	workload := s.annotations[annotationWorkload]
	if !validWorkload(workload) {
		return fmt.Errorf("sandbox %s: annotation %s %q: missing or not a file name (seal the pod with sealctl): %w", s.sandboxID, annotationWorkload, workload, errdefs.ErrInvalidArgument)
	}
	vols, err := parsePodVolumes(s.annotations)
	if err != nil {
		return fmt.Errorf("sandbox %s: %w", s.sandboxID, err)
	}
	dir := filepath.Join(s.cfg.StateDir, s.sandboxID)
	killStale(dir)
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state dir %s: %w", dir, err)
	}
	name := s.sandboxID
	if len(name) > 12 {
		name = name[:12]
	}
	spec := &vmSpec{QEMU: s.cfg.QEMU, Accel: s.cfg.Accel, Name: "sealpod-" + name, Dir: dir, Network: s.cfg.Network,
		UID: s.cfg.QEMUUID, GID: s.cfg.QEMUGID, Volumes: vols, EmulatedBIOS: s.cfg.EmulatedBIOS}
	guestDir := filepath.Join(dir, "guest")
	env, err := loadSecureImage(r, workload, guestDir)
	if err != nil {
		return err
	}
	t, err := podTEE(s.sandboxID, s.cfg, env)
	if err != nil {
		return err
	}
	setLaunch(spec, t, s.cfg, env)
	if spec.Guest, err = bundle.Load(guestDir); err != nil {
		return fmt.Errorf("secure image guest bundle: %w", err)
	}
	if err := checkGuestFits(spec.Guest.Config, s.annotations, s.cfg); err != nil {
		return err
	}
	if spec.Cgroup, err = openPodCgroup(cgroupRoot, s.cgroupsPath); err != nil {
		return err
	}
	defer func() {
		if s.vm == nil || s.vm.spec != spec {
			spec.Cgroup.remove() // QEMU did not start
		}
	}()
	sim, err := simService(t, s.cfg, spec.Guest, env)
	if err != nil {
		return err
	}
	network := s.network()
	var netnsWired string
	if s.cfg.Network == config.NetworkTap {
		if s.netnsPath == "" {
			return fmt.Errorf("sandbox %s has no network namespace (host network): network tap needs one: %w", s.sandboxID, errdefs.ErrFailedPrecondition)
		}
		res, err := netns.Setup(netns.Options{NetNSPath: s.netnsPath, ResolvConf: resolv, Hostname: network.Hostname, Logger: s.log})
		if err != nil {
			return fmt.Errorf("pod network %s: %w", s.netnsPath, err)
		}
		defer res.Tap.Close() // QEMU holds its own descriptor
		netnsWired = s.netnsPath
		spec.NIC = &qemu.NIC{TapFile: res.Tap, MAC: res.MAC, VNetHdr: true}
		network = res.Network
		s.log.Info("sealpod phase", "phase", "network", "tap", res.TapName, "ms", ms(res.Duration))
	}
	q, err := startQEMU(spec, s.log)
	if err != nil {
		if netnsWired != "" {
			_ = netns.Teardown(netns.Options{NetNSPath: netnsWired, Logger: s.log})
		}
		if errors.Is(err, qemu.ErrHostLacks) { // the hardware boundary: a node problem, named
			return fmt.Errorf("sandbox %s: tee %s: %w: %w", s.sandboxID, spec.TEE, err, errdefs.ErrFailedPrecondition)
		}
		return err
	}
	vctx, cancel := context.WithCancel(context.Background())
	vm := &podVM{spec: spec, qemu: q, cancel: cancel, netns: netnsWired}
	s.vm = vm
	defer func() {
		if retErr != nil {
			s.svc.stopVM(vm, "boot failed")
			s.vm = nil
		}
	}()
	bctx, bcancel := context.WithTimeout(ctx, time.Duration(s.cfg.BootTimeout))
	defer bcancel()
	if sim != nil {
		spConn, err := dialUnix(bctx, spec.spSocket())
		if err != nil {
			return fmt.Errorf("%s port: %w", sim.name, err)
		}
		go func() {
			if err := sim.serve(vctx, spConn, s.log); err != nil && vctx.Err() == nil {
				s.log.Warn(sim.name, "err", err)
			}
		}()
	}
	conn, err := dialUnix(bctx, spec.agentSocket())
	if err != nil {
		return fmt.Errorf("agent port: %w", err)
	}
	vm.client = ttrpc.NewClient(conn)
	vm.agent = api.NewAgentClient(vm.client)
	vm.hostFiles, vm.pollCtx = newHostFileSync(vm.agent, s.log, hostFilesInterval), vctx
	// One Ping: QEMU holds the request until the guest opens the port, so the answer comes as
	// soon as the agent serves (a QEMU exit closes the connection and ends the wait).
	if _, err := vm.agent.Ping(bctx, &api.PingRequest{}); err != nil {
		return fmt.Errorf("guest did not answer Ping within %v: %w", time.Duration(s.cfg.BootTimeout), err)
	}
	vm.answered = true
	boot := time.Since(q.Started())
	go s.svc.watchVM(vm)
	go func() {
		// The guest has unpacked its initrd: QEMU's copy (mapped for fw_cfg) is dead weight
		// in its RSS (qemu.PageOutFiles). Off the critical path; best effort.
		n, err := q.ReleaseBootFiles()
		s.log.Debug("boot files paged out of QEMU", "bytes", n, "err", err)
	}()

	tu := time.Now()
	// The downward-API values the node knows; the agent keeps those the sealed spec uses.
	hv := s.hostValues(network)
	if vols != nil {
		if err := checkVolumeHostValues(s.sandboxID, hv); err != nil {
			return err
		}
		vm.volumes = newVolumeAttacher(vols, spec.qmpSocket(), !spec.TEE.Simulated(), vm.agent, s.log)
	}
	u, err := vm.agent.Unseal(ctx, &api.UnsealRequest{Envelope: env, Network: network, HostValues: hv})
	if err != nil {
		return fmt.Errorf("unseal workload %s: the guest refused: %w", workload, err)
	}
	vm.unsealed = u
	rss, _ := q.RSS()
	tm := u.Times
	s.log.Info("sealpod phase", "phase", "boot+unseal", "workload", workload, "tee", string(spec.TEE), "boot_ms", ms(boot), "unseal_ms", ms(time.Since(tu)),
		"attest_ms", (tm.GetEvidenceUs()+tm.GetAttestUs())/1000, "key_ms", tm.GetKeyUs()/1000, "guest_unseal_ms", tm.GetTotalUs()/1000,
		"guest_phases_ms", guestPhases(tm), "qemu_pid", q.PID(), "qemu_rss_kib", rss/1024)
	return nil
}

// guestPhases spells out where the guest's unseal time went (api.PhaseTimes, milliseconds):
// "network=1 auth=80 evidence=40 attest=60 key=0 open=5 certificate=30 pod=20".
func guestPhases(tm *api.PhaseTimes) string {
	return fmt.Sprintf("network=%d auth=%d evidence=%d attest=%d key=%d open=%d certificate=%d pod=%d",
		tm.GetNetworkUs()/1000, tm.GetAuthUs()/1000, tm.GetEvidenceUs()/1000, tm.GetAttestUs()/1000,
		tm.GetKeyUs()/1000, tm.GetOpenUs()/1000, tm.GetCertificateUs()/1000, tm.GetPodUs()/1000)
}

// The host values of the pod's identity: always offered at Unseal when the CRI annotations
// carry them (the agent derives sealed volumes' claim identities from them).
const (
	hostValuePodName      = "fieldRef:metadata.name"
	hostValuePodNamespace = "fieldRef:metadata.namespace"
)

// checkVolumeHostValues: a pod with sealed volumes needs its name and namespace in the host
// values, from which the guest derives each claim's identity (spec.Claim.Identity).
func checkVolumeHostValues(sandboxID string, hv map[string]string) error {
	for _, k := range []string{hostValuePodName, hostValuePodNamespace} {
		if hv[k] == "" {
			return fmt.Errorf("sandbox %s: the pod has sealed volumes (%s) but no valid %s to give the guest (CRI annotations %s, %s): %w",
				sandboxID, annotationVolumes, k, AnnotationSandboxName, AnnotationSandboxNS, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// hostValues are the downward-API fields (keyed as the sealed spec's EnvVar.FromHost) that
// the node can fill: pod identity from the CRI annotations, the node name, and the pod IP
// when the pod network is wired into the guest. They are host facts, not secrets.
func (s *podBoot) hostValues(network *api.NetworkConfig) map[string]string {
	hv := map[string]string{}
	for key, ann := range map[string]string{
		hostValuePodName:        AnnotationSandboxName,
		hostValuePodNamespace:   AnnotationSandboxNS,
		"fieldRef:metadata.uid": AnnotationSandboxUID,
	} {
		if v := s.annotations[ann]; v != "" {
			hv[key] = v
		}
	}
	if node, err := os.Hostname(); err == nil {
		hv["fieldRef:spec.nodeName"] = strings.ToLower(node) // as the kubelet names the node
	}
	if s.cfg.Network == config.NetworkTap && network != nil && len(network.Interfaces) > 0 && len(network.Interfaces[0].Addresses) > 0 {
		ip, _, _ := strings.Cut(network.Interfaces[0].Addresses[0], "/")
		hv["fieldRef:status.podIP"] = ip
	}
	// The agent refuses the whole Unseal for one value without its field's syntax; offer
	// only values that have it (a pod that uses a missing one fails to create, naming it).
	for k, v := range hv {
		if err := hostvalue.Check(k, v); err != nil {
			s.log.Warn("downward-API value not offered to the guest", "err", err)
			delete(hv, k)
		}
	}
	return hv
}

// resolvConf is the host path CRI bind-mounts as the container's /etc/resolv.conf ("" if none).
func resolvConf(sp *specs.Spec) string {
	for _, m := range sp.Mounts {
		if m.Destination == "/etc/resolv.conf" {
			return m.Source
		}
	}
	return ""
}

// network is the guest configuration under user-mode networking.
func (s *podBoot) network() *api.NetworkConfig {
	host := s.hostname
	if host == "" {
		host = s.annotations[AnnotationSandboxName]
	}
	return &api.NetworkConfig{
		Interfaces: []*api.Interface{{Mac: qemu.UserNetMAC().String(), Name: "eth0", Addresses: []string{"10.0.2.15/24"}}},
		Routes:     []*api.Route{{Destination: "default", Gateway: "10.0.2.2"}},
		DnsServers: []string{"10.0.2.3"}, Hostname: host,
	}
}
