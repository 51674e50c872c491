// Package shim is the containerd shim v2 of Sealpod (DESIGN §3.2): one shim process and one
// confidential VM per Kubernetes pod. The sandbox (pause) container only records the pod's
// network namespace and annotations; the first placeholder container, whose rootfs is the
// secure image, boots the guest from /sealpod/guest/*, serves the simulated AMD-SP on sim
// nodes, and calls the agent's Unseal with the envelope /sealpod/sealed/<workload>.json; every
// container is then forwarded by name to the agent (create/start/wait/signal/exec/stdio/remove).
// The host never sends a container definition.
package shim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"

	cgroupsv1 "github.com/containerd/cgroups/stats/v1"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	apitask "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/protobuf"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/containerd/runtime"
	shimv2 "github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/hostvalue"
	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/kbs/simtee"
	"github.com/sealpod/sealpod/runtime-shim/config"
	"github.com/sealpod/sealpod/runtime-shim/netns"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
)

// CRI annotations on the OCI spec of every container (containerd's pkg/cri/annotations).
const (
	AnnotationContainerType = "io.kubernetes.cri.container-type"
	AnnotationSandboxID     = "io.kubernetes.cri.sandbox-id"
	AnnotationContainerName = "io.kubernetes.cri.container-name"
	AnnotationSandboxName   = "io.kubernetes.cri.sandbox-name"
	AnnotationSandboxNS     = "io.kubernetes.cri.sandbox-namespace"
	AnnotationSandboxUID    = "io.kubernetes.cri.sandbox-uid"
	containerTypeSandbox    = "sandbox"
	annotationWorkload      = "sealpod.io/workload"
)

// exitVMGone is the exit status of every process whose VM died under it.
const exitVMGone = 255

// ErrNotKubernetes is returned for containers without CRI annotations: Sealpod runs pods only.
var ErrNotKubernetes = errors.New("sealpod runs Kubernetes pods only (no io.kubernetes.cri.container-type annotation)")

// proc is one process: a container's main process (execID "") or an exec.
type proc struct {
	execID                string
	stdin, stdout, stderr string
	terminal              bool
	argv                  []string
	status                apitask.Status
	exitStatus            uint32
	exitedAt              time.Time
	exited                chan struct{}
	copying               sync.WaitGroup
}

func newProc(execID, stdin, stdout, stderr string, terminal bool) *proc {
	return &proc{execID: execID, stdin: stdin, stdout: stdout, stderr: stderr, terminal: terminal,
		status: apitask.Status_CREATED, exited: make(chan struct{})}
}

// task is one container known to the shim.
type task struct {
	id, bundle string
	name       string // Kubernetes container name (= sealed container name); "" for the sandbox
	sandbox    bool
	main       *proc
	execs      map[string]*proc
}

// Service implements containerd's shim v2 task API for one pod.
type Service struct {
	ctx context.Context
	pub shimv2.Publisher
	sd  shutdown.Service
	log *slog.Logger

	cfgErr error
	// cfgPath is the node config named by the runtime options ("" = $SEALPOD_SHIM_CONFIG or
	// the default path).
	cfgPath string
	cfg     *config.Config

	mu          sync.Mutex
	sandboxID   string
	annotations map[string]string // sealpod.io/* and CRI pod metadata of the sandbox
	hostname    string
	netnsPath   string // the pod's network namespace (empty: host network)
	cgroupsPath string // the sandbox's linux.cgroupsPath: QEMU runs there
	tasks       map[string]*task
	vm          *podVM
}

// podVM is the pod's guest.
type podVM struct {
	spec     *vmSpec
	qemu     *qemu.VM
	client   *ttrpc.Client
	agent    api.AgentService
	cancel   context.CancelFunc
	netns    string // set when a tap was wired into this namespace
	gone     bool
	unsealed *api.UnsealResponse
}

// NewService is the TTRPC task plugin's constructor.
func NewService(ctx context.Context, pub shimv2.Publisher, sd shutdown.Service, log *slog.Logger) *Service {
	s := &Service{ctx: ctx, pub: pub, sd: sd, log: log, tasks: map[string]*task{}}
	s.cfg, s.cfgErr = config.Load(config.Path())
	if s.cfgErr == nil && s.cfg.TEE == "sim" {
		log.Warn("INSECURE: this node runs the simulated AMD-SP (tee sim): attestation proves nothing about the hardware; for development and CI only", "config", config.Path())
	}
	sd.RegisterCallback(func(context.Context) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.stopVMLocked("shim shutdown")
		return nil
	})
	return s
}

// RegisterTTRPC registers the task service.
func (s *Service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTaskService(server, s)
	return nil
}

// grpcErr converts err for containerd: an agent status keeps its code (PermissionDenied for a
// refused exec, ...) under the shim's message; other errors map through errdefs.
func grpcErr(err error) error {
	if err == nil {
		return nil
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) && se.GRPCStatus().Code() != codes.OK {
		return status.Error(se.GRPCStatus().Code(), err.Error())
	}
	return errdefs.ToGRPC(err)
}

func readSpec(bundleDir string) (*specs.Spec, error) {
	f, err := os.Open(filepath.Join(bundleDir, "config.json"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var sp specs.Spec
	if err := jsonDecode(f, &sp); err != nil {
		return nil, fmt.Errorf("bundle %s config.json: %w", bundleDir, err)
	}
	return &sp, nil
}

// taskProc returns a task and one of its processes ("" = the main one); errors are gRPC
// errors ready to return (caller holds s.mu).
func (s *Service) taskProc(id, execID string) (*task, *proc, error) {
	t, err := s.getTask(id)
	if err != nil {
		return nil, nil, grpcErr(err)
	}
	p, err := t.proc(execID)
	if err != nil {
		return nil, nil, grpcErr(err)
	}
	return t, p, nil
}

func (s *Service) getTask(id string) (*task, error) {
	t, ok := s.tasks[id]
	if !ok {
		return nil, fmt.Errorf("task %s: %w", id, errdefs.ErrNotFound)
	}
	return t, nil
}

func (t *task) proc(execID string) (*proc, error) {
	if execID == "" {
		return t.main, nil
	}
	p, ok := t.execs[execID]
	if !ok {
		return nil, fmt.Errorf("exec %s in task %s: %w", execID, t.id, errdefs.ErrNotFound)
	}
	return p, nil
}

func (s *Service) publish(topic string, ev any) {
	if err := s.pub.Publish(s.ctx, topic, ev); err != nil {
		s.log.Warn("publish event", "topic", topic, "err", err)
	}
}

func (s *Service) pid() uint32 {
	if s.vm != nil && s.vm.qemu != nil {
		return uint32(s.vm.qemu.PID())
	}
	return uint32(os.Getpid())
}

// ConfigPathFile, in a task's bundle, records the node config the runtime options named, so
// that Manager.Stop (a fresh process) cleans up the right state directory.
const ConfigPathFile = "sealpod-shim-config"

// configFromOptions loads the node config named by the CRI runtime options
// (`[…runtimes.sealpod.options] ConfigPath = "…"` in containerd's config, as the node installer
// writes with --shim-config); without it the shim keeps $SEALPOD_SHIM_CONFIG or the default
// path (caller holds s.mu).
func (s *Service) configFromOptions(r *taskAPI.CreateTaskRequest) error {
	if r.Options == nil {
		return nil
	}
	v, err := typeurl.UnmarshalAny(r.Options)
	if err != nil {
		return nil // options of another type: nothing for us
	}
	o, ok := v.(*runtimeoptions.Options)
	if !ok || o.ConfigPath == "" {
		return nil
	}
	cfg, err := config.Load(o.ConfigPath)
	if err != nil {
		return fmt.Errorf("%w: runtime options ConfigPath: %v", errdefs.ErrFailedPrecondition, err)
	}
	if s.cfgErr == nil && s.cfg != nil && s.cfgPath != "" && s.cfgPath != o.ConfigPath {
		return fmt.Errorf("%w: task %s names node config %s, the pod's tasks use %s", errdefs.ErrInvalidArgument, r.ID, o.ConfigPath, s.cfgPath)
	}
	if s.cfgPath != o.ConfigPath && cfg.TEE == "sim" {
		s.log.Warn("INSECURE: this node runs the simulated AMD-SP (tee sim): attestation proves nothing about the hardware; for development and CI only", "config", o.ConfigPath)
	}
	s.cfg, s.cfgErr, s.cfgPath = cfg, nil, o.ConfigPath
	if err := os.WriteFile(filepath.Join(r.Bundle, ConfigPathFile), []byte(o.ConfigPath), 0o600); err != nil {
		return fmt.Errorf("record node config in bundle %s: %w", r.Bundle, err)
	}
	return nil
}

// Create creates the sandbox record or a placeholder container (booting the VM for the first).
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.configFromOptions(r); err != nil {
		return nil, grpcErr(err)
	}
	if s.cfgErr != nil {
		return nil, grpcErr(fmt.Errorf("%w: %v", errdefs.ErrFailedPrecondition, s.cfgErr))
	}
	if _, ok := s.tasks[r.ID]; ok {
		return nil, grpcErr(fmt.Errorf("task %s: %w", r.ID, errdefs.ErrAlreadyExists))
	}
	sp, err := readSpec(r.Bundle)
	if err != nil {
		return nil, grpcErr(err)
	}
	ann := sp.Annotations
	t := &task{id: r.ID, bundle: r.Bundle, execs: map[string]*proc{},
		main: newProc("", r.Stdin, r.Stdout, r.Stderr, r.Terminal)}
	switch ann[AnnotationContainerType] {
	case containerTypeSandbox:
		if s.sandboxID != "" {
			return nil, grpcErr(fmt.Errorf("sandbox %s: this shim already serves sandbox %s: %w", r.ID, s.sandboxID, errdefs.ErrAlreadyExists))
		}
		t.sandbox = true
		s.sandboxID = r.ID
		s.hostname = sp.Hostname
		s.netnsPath, s.cgroupsPath = "", ""
		if sp.Linux != nil {
			s.cgroupsPath = sp.Linux.CgroupsPath
			for _, ns := range sp.Linux.Namespaces {
				if ns.Type == specs.NetworkNamespace {
					s.netnsPath = ns.Path
				}
			}
		}
		s.annotations = map[string]string{}
		for k, v := range ann {
			if strings.HasPrefix(k, "sealpod.io/") || k == AnnotationSandboxName || k == AnnotationSandboxNS || k == AnnotationSandboxUID ||
				slices.Contains(sizingAnnotations, k) {
				s.annotations[k] = v
			}
		}
		s.log.Info("sandbox created", "sandbox", r.ID, "workload", s.annotations[annotationWorkload])
	case "":
		return nil, grpcErr(fmt.Errorf("task %s: %w", r.ID, ErrNotKubernetes))
	default:
		if s.sandboxID == "" || ann[AnnotationSandboxID] != s.sandboxID {
			return nil, grpcErr(fmt.Errorf("container %s: sandbox %q is not served by this shim: %w", r.ID, ann[AnnotationSandboxID], errdefs.ErrFailedPrecondition))
		}
		t.name = ann[AnnotationContainerName]
		if !api.ValidContainerName(t.name) {
			return nil, grpcErr(fmt.Errorf("container %s: name %q: %w", r.ID, t.name, errdefs.ErrInvalidArgument))
		}
		if s.vm == nil || s.vm.gone {
			if err := s.bootLocked(ctx, r, resolvConf(sp)); err != nil {
				s.log.Error("pod VM failed", "container", t.name, "err", err)
				writeReason(ctx, r.Stderr, err)
				return nil, grpcErr(err)
			}
		}
		tc := time.Now()
		cr, err := s.vm.agent.CreateContainer(ctx, &api.CreateContainerRequest{Name: t.name, Stdin: r.Stdin != "", Tty: r.Terminal})
		if err != nil {
			err = fmt.Errorf("create sealed container %s in the guest: %w", t.name, err)
			writeReason(ctx, r.Stderr, err)
			return nil, grpcErr(err)
		}
		s.log.Info("sealpod phase", "phase", "pull", "container", t.name, "ms", ms(time.Since(tc)), "guest_create_ms", cr.CreateUs/1000)
	}
	s.tasks[r.ID] = t
	s.publish(runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{ContainerID: r.ID, Bundle: r.Bundle, Pid: s.pid(),
		IO: &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}})
	return &taskAPI.CreateTaskResponse{Pid: s.pid()}, nil
}

func ms(d time.Duration) int64 { return d.Milliseconds() }

// writeReason writes a failure reason to the container's stderr FIFO (best effort, so that
// crictl logs shows why the container did not start).
func writeReason(ctx context.Context, path string, reason error) {
	if path == "" {
		return
	}
	w, err := openFifoWrite(ctx, path)
	if err != nil {
		return
	}
	defer w.Close()
	fmt.Fprintf(w, "sealpod: %v\n", reason)
}

func validWorkload(w string) bool {
	return w != "" && len(w) <= 253 && !strings.ContainsAny(w, "/\\\x00") && w != "." && w != ".."
}

// bootLocked boots the pod VM and unseals the workload.
func (s *Service) bootLocked(ctx context.Context, r *taskAPI.CreateTaskRequest, resolv string) (retErr error) {
	workload := s.annotations[annotationWorkload]
	if !validWorkload(workload) {
		return fmt.Errorf("sandbox %s: annotation %s %q: missing or not a file name (seal the pod with sealctl): %w", s.sandboxID, annotationWorkload, workload, errdefs.ErrInvalidArgument)
	}
	if s.cfg.TEE != "sim" {
		return fmt.Errorf("tee %s: %w: this shim boots sim guests only until runtime-shim/qemu lands", s.cfg.TEE, errdefs.ErrNotImplemented)
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
		UID: s.cfg.QEMUUID, GID: s.cfg.QEMUGID}
	guestDir := filepath.Join(dir, "guest")
	env, err := loadSecureImage(r, workload, guestDir)
	if err != nil {
		return err
	}
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
	signer, err := simtee.LoadSigner(s.cfg.SimKey)
	if err != nil {
		return fmt.Errorf("sim key %s: %w", s.cfg.SimKey, err)
	}
	launch, err := simsp.LaunchFromBundle(spec.Guest, env)
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
		return err
	}
	vctx, cancel := context.WithCancel(context.Background())
	vm := &podVM{spec: spec, qemu: q, cancel: cancel, netns: netnsWired}
	s.vm = vm
	defer func() {
		if retErr != nil {
			s.stopVMLocked("boot failed")
		}
	}()
	bctx, bcancel := context.WithTimeout(ctx, time.Duration(s.cfg.BootTimeout))
	defer bcancel()
	spConn, err := dialUnix(bctx, spec.spSocket())
	if err != nil {
		return fmt.Errorf("simulated AMD-SP port: %w", err)
	}
	go func() {
		if err := simsp.Serve(vctx, spConn, signer, launch, s.log); err != nil && vctx.Err() == nil {
			s.log.Warn("simulated AMD-SP", "err", err)
		}
	}()
	conn, err := dialUnix(bctx, spec.agentSocket())
	if err != nil {
		return fmt.Errorf("agent port: %w", err)
	}
	vm.client = ttrpc.NewClient(conn)
	vm.agent = api.NewAgentClient(vm.client)
	// One Ping: QEMU holds the request until the guest opens the port, so the answer comes as
	// soon as the agent serves (a QEMU exit closes the connection and ends the wait).
	if _, err := vm.agent.Ping(bctx, &api.PingRequest{}); err != nil {
		return fmt.Errorf("guest did not answer Ping within %v: %w", time.Duration(s.cfg.BootTimeout), err)
	}
	boot := time.Since(q.Started())
	go s.watchVM(vm)

	tu := time.Now()
	// The downward-API values the node knows; the agent keeps those the sealed spec uses.
	u, err := vm.agent.Unseal(ctx, &api.UnsealRequest{Envelope: env, Network: network, HostValues: s.hostValues(network)})
	if err != nil {
		return fmt.Errorf("unseal workload %s: the guest refused: %w", workload, err)
	}
	vm.unsealed = u
	rss, _ := q.RSS()
	tm := u.Times
	s.log.Info("sealpod phase", "phase", "boot+unseal", "workload", workload, "boot_ms", ms(boot), "unseal_ms", ms(time.Since(tu)),
		"attest_ms", (tm.GetEvidenceUs()+tm.GetAttestUs())/1000, "key_ms", tm.GetKeyUs()/1000, "guest_unseal_ms", tm.GetTotalUs()/1000,
		"qemu_pid", q.PID(), "qemu_rss_kib", rss/1024)
	return nil
}

// hostValues are the downward-API fields (keyed as the sealed spec's EnvVar.FromHost) that
// the node can fill: pod identity from the CRI annotations, the node name, and the pod IP
// when the pod network is wired into the guest. They are host facts, not secrets.
func (s *Service) hostValues(network *api.NetworkConfig) map[string]string {
	hv := map[string]string{}
	for key, ann := range map[string]string{
		"fieldRef:metadata.name":      AnnotationSandboxName,
		"fieldRef:metadata.namespace": AnnotationSandboxNS,
		"fieldRef:metadata.uid":       AnnotationSandboxUID,
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
func (s *Service) network() *api.NetworkConfig {
	host := s.hostname
	if host == "" {
		host = s.annotations[AnnotationSandboxName]
	}
	return &api.NetworkConfig{
		Interfaces: []*api.Interface{{Mac: guestMAC, Name: "eth0", Addresses: []string{"10.0.2.15/24"}}},
		Routes:     []*api.Route{{Destination: "default", Gateway: "10.0.2.2"}},
		DnsServers: []string{"10.0.2.3"}, Hostname: host,
	}
}

// watchVM ends every process when QEMU exits.
func (s *Service) watchVM(vm *podVM) {
	<-vm.qemu.Exited()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !vm.gone {
		s.log.Error("pod VM exited", "err", vm.qemu.ExitError())
	}
	vm.gone = true
	for _, t := range s.tasks {
		if t.sandbox {
			continue
		}
		for _, p := range append([]*proc{t.main}, mapValues(t.execs)...) {
			if p.status == apitask.Status_RUNNING {
				s.setExitedLocked(t, p, exitVMGone, time.Now())
			}
		}
	}
}

func mapValues(m map[string]*proc) []*proc {
	out := make([]*proc, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func (s *Service) setExitedLocked(t *task, p *proc, status uint32, at time.Time) {
	if p.status == apitask.Status_STOPPED {
		return
	}
	p.status, p.exitStatus, p.exitedAt = apitask.Status_STOPPED, status, at
	close(p.exited)
	s.publish(runtime.TaskExitEventTopic, &eventstypes.TaskExit{ContainerID: t.id, ID: pidID(t, p), Pid: s.pid(),
		ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)})
}

func pidID(t *task, p *proc) string {
	if p.execID != "" {
		return p.execID
	}
	return t.id
}

// stopVMLocked shuts the guest down (agent Shutdown, then SIGTERM/SIGKILL) and removes its state.
func (s *Service) stopVMLocked(why string) {
	vm := s.vm
	if vm == nil {
		return
	}
	s.vm = nil
	if !vmExited(vm.qemu) && vm.agent != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _ = vm.agent.Shutdown(ctx, &api.ShutdownRequest{})
		cancel()
	}
	vm.gone = true
	if err := vm.qemu.Stop(5 * time.Second); err != nil {
		s.log.Error("stop pod VM", "err", err)
	}
	vm.spec.Cgroup.remove()
	if vm.client != nil {
		vm.client.Close()
	}
	vm.cancel()
	if vm.netns != "" {
		if err := netns.Teardown(netns.Options{NetNSPath: vm.netns, Logger: s.log}); err != nil {
			s.log.Warn("remove the pod's tap", "netns", vm.netns, "err", err)
		}
	}
	if err := os.RemoveAll(vm.spec.Dir); err != nil {
		s.log.Warn("remove VM state", "dir", vm.spec.Dir, "err", err)
	}
	s.log.Info("pod VM stopped", "reason", why)
}

// Start starts the sandbox (a record), a sealed container or an exec.
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, p, err := s.taskProc(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if p.status != apitask.Status_CREATED {
		return nil, grpcErr(fmt.Errorf("task %s exec %q: %w: status %s", r.ID, r.ExecID, errdefs.ErrFailedPrecondition, p.status))
	}
	if t.sandbox {
		p.status = apitask.Status_RUNNING
		s.publish(runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: t.id, Pid: s.pid()})
		return &taskAPI.StartResponse{Pid: s.pid()}, nil
	}
	if s.vm == nil || s.vm.gone {
		return nil, grpcErr(fmt.Errorf("container %s: %w: the pod VM is not running", t.name, errdefs.ErrFailedPrecondition))
	}
	a := s.vm.agent
	ts := time.Now()
	if r.ExecID == "" {
		_, err = a.StartContainer(ctx, &api.ContainerRequest{Name: t.name})
	} else {
		_, err = a.ExecProcess(ctx, &api.ExecProcessRequest{Name: t.name, ExecId: r.ExecID, Argv: p.argv, Tty: p.terminal, Stdin: p.stdin != ""})
	}
	if err != nil {
		return nil, grpcErr(fmt.Errorf("start %s exec %q in the guest: %w", t.name, r.ExecID, err))
	}
	s.log.Info("sealpod phase", "phase", "start", "container", t.name, "exec", r.ExecID, "ms", ms(time.Since(ts)))
	p.status = apitask.Status_RUNNING
	s.copyStreams(t, p, a)
	go s.waitProc(t, p, a)
	if r.ExecID == "" {
		s.publish(runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: t.id, Pid: s.pid()})
	} else {
		s.publish(runtime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{ContainerID: t.id, ExecID: r.ExecID, Pid: s.pid()})
	}
	return &taskAPI.StartResponse{Pid: s.pid()}, nil
}

func (s *Service) waitProc(t *task, p *proc, a api.AgentService) {
	w, err := a.WaitProcess(context.Background(), &api.ProcessRequest{Name: t.name, ExecId: p.execID})
	status, at := uint32(exitVMGone), time.Now()
	if err == nil {
		status = uint32(w.ExitStatus)
		if w.ExitedAtUnixNano > 0 {
			at = time.Unix(0, w.ExitedAtUnixNano)
		}
	} else {
		s.log.Warn("wait in the guest", "container", t.name, "exec", p.execID, "err", err)
	}
	// Let the output reach containerd's FIFOs before the exit is published.
	done := make(chan struct{})
	go func() { p.copying.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.log.Warn("stdio still copying after exit", "container", t.name)
	}
	s.mu.Lock()
	s.setExitedLocked(t, p, status, at)
	s.mu.Unlock()
}

// Wait blocks until the process exits.
func (s *Service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	s.mu.Lock()
	t, err := s.getTask(r.ID)
	var p *proc
	if err == nil {
		p, err = t.proc(r.ExecID)
	}
	s.mu.Unlock()
	if err != nil {
		return nil, grpcErr(err)
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &taskAPI.WaitResponse{ExitStatus: p.exitStatus, ExitedAt: protobuf.ToTimestamp(p.exitedAt)}, nil
}

// Kill signals a process in the guest (or ends the sandbox record).
func (s *Service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, p, err := s.taskProc(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if p.status == apitask.Status_STOPPED {
		return nil, grpcErr(fmt.Errorf("task %s exec %q: process already finished: %w", r.ID, r.ExecID, errdefs.ErrNotFound))
	}
	if t.sandbox {
		s.setExitedLocked(t, p, 128+r.Signal, time.Now())
		return &ptypes.Empty{}, nil
	}
	if p.status == apitask.Status_CREATED || s.vm == nil || s.vm.gone {
		s.setExitedLocked(t, p, 128+r.Signal, time.Now())
		return &ptypes.Empty{}, nil
	}
	if _, err := s.vm.agent.SignalProcess(ctx, &api.SignalProcessRequest{Name: t.name, ExecId: r.ExecID, Signal: r.Signal}); err != nil {
		return nil, grpcErr(fmt.Errorf("signal %d to %s exec %q in the guest: %w", r.Signal, t.name, r.ExecID, err))
	}
	return &ptypes.Empty{}, nil
}

// Delete removes a process, a container (in the guest too) or the sandbox; the VM stops with
// the last of them.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, p, err := s.taskProc(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if p.status == apitask.Status_RUNNING {
		return nil, grpcErr(fmt.Errorf("task %s exec %q: %w: still running", r.ID, r.ExecID, errdefs.ErrFailedPrecondition))
	}
	if p.status == apitask.Status_CREATED {
		p.status, p.exitStatus, p.exitedAt = apitask.Status_STOPPED, 0, time.Now()
		close(p.exited)
	}
	resp := &taskAPI.DeleteResponse{Pid: s.pid(), ExitStatus: p.exitStatus, ExitedAt: protobuf.ToTimestamp(p.exitedAt)}
	if r.ExecID != "" {
		delete(t.execs, r.ExecID)
		return resp, nil
	}
	if !t.sandbox && s.vm != nil && !s.vm.gone {
		if _, err := s.vm.agent.RemoveContainer(ctx, &api.ContainerRequest{Name: t.name}); err != nil {
			s.log.Warn("remove container in the guest", "container", t.name, "err", err)
		}
	}
	delete(s.tasks, r.ID)
	if t.sandbox {
		s.sandboxID = ""
	}
	s.publish(runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{ContainerID: t.id, Pid: resp.Pid, ExitStatus: resp.ExitStatus, ExitedAt: resp.ExitedAt})
	if len(s.tasks) == 0 {
		s.stopVMLocked("last task deleted")
	}
	return resp, nil
}

// Exec records an exec; the agent decides at Start whether the sealed policy allows it.
func (s *Service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.getTask(r.ID)
	if err != nil {
		return nil, grpcErr(err)
	}
	if t.sandbox {
		return nil, grpcErr(fmt.Errorf("exec in sandbox %s: %w", r.ID, errdefs.ErrNotImplemented))
	}
	if _, ok := t.execs[r.ExecID]; ok || !api.ValidExecID(r.ExecID) {
		return nil, grpcErr(fmt.Errorf("exec %q in %s: %w: repeated or invalid id", r.ExecID, t.name, errdefs.ErrInvalidArgument))
	}
	v, err := typeurl.UnmarshalAny(r.Spec)
	if err != nil {
		return nil, grpcErr(fmt.Errorf("exec %s spec: %w", r.ExecID, err))
	}
	ps, ok := v.(*specs.Process)
	if !ok {
		return nil, grpcErr(fmt.Errorf("exec %s spec: %T is not a process: %w", r.ExecID, v, errdefs.ErrInvalidArgument))
	}
	p := newProc(r.ExecID, r.Stdin, r.Stdout, r.Stderr, r.Terminal)
	p.argv = ps.Args
	t.execs[r.ExecID] = p
	s.publish(runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: t.id, ExecID: r.ExecID})
	return &ptypes.Empty{}, nil
}

// State reports a process.
func (s *Service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, p, err := s.taskProc(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	return &taskAPI.StateResponse{ID: r.ID, Bundle: t.bundle, Pid: s.pid(), Status: p.status, Stdin: p.stdin, Stdout: p.stdout,
		Stderr: p.stderr, Terminal: p.terminal, ExitStatus: p.exitStatus, ExitedAt: protobuf.ToTimestamp(p.exitedAt), ExecID: r.ExecID}, nil
}

// Pids lists the one host-visible process of a task: QEMU (or the shim before the VM exists).
func (s *Service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.getTask(r.ID); err != nil {
		return nil, grpcErr(err)
	}
	return &taskAPI.PidsResponse{Processes: []*apitask.ProcessInfo{{Pid: s.pid()}}}, nil
}

// CloseIO closes the stdin of a process in the guest.
func (s *Service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.getTask(r.ID)
	if err != nil {
		return nil, grpcErr(err)
	}
	if t.sandbox || s.vm == nil || s.vm.gone {
		return &ptypes.Empty{}, nil
	}
	if _, err := s.vm.agent.CloseStdin(ctx, &api.ProcessRequest{Name: t.name, ExecId: r.ExecID}); err != nil {
		return nil, grpcErr(fmt.Errorf("close stdin of %s: %w", t.name, err))
	}
	return &ptypes.Empty{}, nil
}

// Connect reports the shim's and the task's pids.
func (s *Service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: s.pid()}, nil
}

// Shutdown ends the shim once no task is left.
func (s *Service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	n := len(s.tasks)
	s.mu.Unlock()
	if n > 0 && !r.Now {
		return &ptypes.Empty{}, nil
	}
	s.sd.Shutdown()
	return &ptypes.Empty{}, nil
}

// Stats maps the agent's container statistics (measured inside the guest) to cgroup v1
// metrics, the type containerd 1.6/1.7's CRI plugin decodes.
func (s *Service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	s.mu.Lock()
	t, err := s.getTask(r.ID)
	vm := s.vm
	s.mu.Unlock()
	if err != nil {
		return nil, grpcErr(err)
	}
	m := &cgroupsv1.Metrics{}
	if !t.sandbox {
		if vm == nil || vm.gone {
			return nil, grpcErr(fmt.Errorf("stats of %s: %w: the pod VM is not running", t.name, errdefs.ErrFailedPrecondition))
		}
		st, err := vm.agent.StatsContainer(ctx, &api.ContainerRequest{Name: t.name})
		if err != nil {
			return nil, grpcErr(fmt.Errorf("stats of %s in the guest: %w", t.name, err))
		}
		m.Pids = &cgroupsv1.PidsStat{Current: st.Pids}
		m.CPU = &cgroupsv1.CPUStat{Usage: &cgroupsv1.CPUUsage{Total: st.CpuUsageNs}}
		m.Memory = &cgroupsv1.MemoryStat{Usage: &cgroupsv1.MemoryEntry{Usage: st.MemoryUsageBytes, Limit: st.MemoryLimitBytes}}
	}
	data, err := typeurl.MarshalAny(m)
	if err != nil {
		return nil, grpcErr(fmt.Errorf("stats of %s: %w", r.ID, err))
	}
	return &taskAPI.StatsResponse{Stats: protobuf.FromAny(data)}, nil
}

// Pause is not supported for confidential VMs.
func (s *Service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	return nil, grpcErr(fmt.Errorf("pause %s: %w", r.ID, errdefs.ErrNotImplemented))
}

// Resume is not supported.
func (s *Service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	return nil, grpcErr(fmt.Errorf("resume %s: %w", r.ID, errdefs.ErrNotImplemented))
}

// Checkpoint is refused: guest memory is confidential.
func (s *Service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, grpcErr(fmt.Errorf("checkpoint %s: %w", r.ID, errdefs.ErrNotImplemented))
}

// Update is refused: resources are fixed by the VM size.
func (s *Service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	return nil, grpcErr(fmt.Errorf("update %s: %w", r.ID, errdefs.ErrNotImplemented))
}

// ResizePty is not supported (no tty plumbing yet).
func (s *Service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	return nil, grpcErr(fmt.Errorf("resize pty of %s: %w", r.ID, errdefs.ErrNotImplemented))
}
