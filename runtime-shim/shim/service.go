// Package shim is the containerd shim v2 of Sealpod (docs/design.md#run, docs/runtime.md): one shim process and one
// confidential VM per Kubernetes pod. The sandbox (pause) container only records the pod's
// network namespace and annotations; the first placeholder container, whose rootfs is the
// secure image, boots the guest from /sealpod/guest/* in the TEE the node offers that the pod
// was sealed for (serving the simulated AMD-SP or TDX quote service under sim and sim-tdx),
// and calls the agent's Unseal with the envelope /sealpod/sealed/<workload>.json; every
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

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	apitask "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/runtime"
	shimv2 "github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/runtime-shim/config"
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
	starting              bool       // a Start is in the guest (without s.mu)
	stdinCopy             *stdinCopy // forwarding of the stdin FIFO once started (tty.go)
	size                  *termSize  // terminal size asked for before the start (tty.go)
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

	// mu guards the records below; it is never held over slow work (VM boot and stop, guest
	// calls), so containerd's State/Kill/... answer while a VM boots.
	mu          sync.Mutex
	sandboxID   string
	annotations map[string]string // sealpod.io/* and CRI pod metadata of the sandbox
	hostname    string
	netnsPath   string // the pod's network namespace (empty: host network)
	cgroupsPath string // the sandbox's linux.cgroupsPath: QEMU runs there
	tasks       map[string]*task
	creating    map[string]bool // ids of placeholders whose Create runs (reserved, not yet tasks)
	vm          *podVM
	booting     *vmBoot       // the boot in progress, if any
	stopping    chan struct{} // closed when the last detached VM is stopped (nil: none stopping)
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
	stopped  chan struct{} // closed when stopVM is done (set by detachVMLocked)
	answered bool          // the agent answered Ping: stopVM asks it to shut down first
	// codeReleased is set once QEMU's code has been paged out (after the first container
	// started: qemu.VM.ReleaseCode).
	codeReleased bool
	// volumes hot-plugs and attaches the pod's sealed volumes (nil: the pod has none).
	volumes *volumeAttacher
	// hostFiles forwards the pod's host-provided volumes (hostfiles.go) until pollCtx ends
	// (with the VM).
	hostFiles *hostFileSync
	pollCtx   context.Context
}

// NewService is the TTRPC task plugin's constructor.
func NewService(ctx context.Context, pub shimv2.Publisher, sd shutdown.Service, log *slog.Logger) *Service {
	s := &Service{ctx: ctx, pub: pub, sd: sd, log: log, tasks: map[string]*task{}, creating: map[string]bool{}}
	s.cfg, s.cfgErr = config.Load(config.Path())
	if s.cfgErr == nil {
		warnSimulated(log, s.cfg, config.Path())
	}
	sd.RegisterCallback(func(context.Context) error {
		s.mu.Lock()
		vm, b := s.detachVMLocked("shim shutdown"), s.booting
		s.mu.Unlock()
		s.stopVM(vm, "shim shutdown")
		if b != nil {
			<-b.done // the abandoned boot stops its own QEMU
		}
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

// simulatedWarnings are the loud warnings of the simulated TEEs a node may offer.
var simulatedWarnings = map[tee.TEE]string{
	tee.Sim:    "INSECURE: this node offers the simulated AMD-SP (tee sim): attestation proves nothing about the hardware; for development and CI only",
	tee.SimPEF: "INSECURE: this node offers the simulated IBM PEF ultravisor (tee sim-pef, a software host key): the node opens the guests' ESM blobs and can read their keys and memory; for development and CI only",
	tee.SimTDX: "INSECURE: this node offers the simulated TDX module and quoting enclave (tee sim-tdx, a node-local fake Intel PCK chain): attestation proves nothing about the hardware; for development and CI only",
}

// warnSimulated logs one INSECURE warning per simulated TEE the node config offers.
func warnSimulated(log *slog.Logger, cfg *config.Config, path string) {
	for _, t := range cfg.Offers() {
		if t.Simulated() {
			msg := simulatedWarnings[t]
			if msg == "" {
				msg = fmt.Sprintf("INSECURE: this node offers the simulated TEE %s: attestation proves nothing about the hardware; for development and CI only", t)
			}
			log.Warn(msg, "config", path)
		}
	}
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
	if s.cfgPath != o.ConfigPath {
		warnSimulated(s.log, cfg, o.ConfigPath)
	}
	s.cfg, s.cfgErr, s.cfgPath = cfg, nil, o.ConfigPath
	if err := os.WriteFile(filepath.Join(r.Bundle, ConfigPathFile), []byte(o.ConfigPath), 0o600); err != nil {
		return fmt.Errorf("record node config in bundle %s: %w", r.Bundle, err)
	}
	return nil
}

// Create creates the sandbox record or a placeholder container (booting the VM for the first).
// Like containerd's runc shim, it holds the service lock only to check and record state: the
// VM boot and unseal (podVM) and the guest's CreateContainer run without it, with the
// container's id reserved in s.creating meanwhile.
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	s.mu.Lock()
	t, sp, err := s.newTaskLocked(r)
	if err != nil {
		s.mu.Unlock()
		return nil, grpcErr(err)
	}
	if t.sandbox {
		defer s.mu.Unlock()
		return s.recordTaskLocked(t, r), nil
	}
	s.creating[r.ID] = true
	s.mu.Unlock()
	resp, err := s.createContainer(ctx, r, sp, t)
	if err != nil {
		writeReason(ctx, r.Stderr, err)
		return nil, grpcErr(err)
	}
	return resp, nil
}

// newTaskLocked checks a Create and returns its task; a sandbox is recorded as the pod's
// (caller holds s.mu).
func (s *Service) newTaskLocked(r *taskAPI.CreateTaskRequest) (*task, *specs.Spec, error) {
	if err := s.configFromOptions(r); err != nil {
		return nil, nil, err
	}
	if s.cfgErr != nil {
		return nil, nil, fmt.Errorf("%w: %v", errdefs.ErrFailedPrecondition, s.cfgErr)
	}
	if _, ok := s.tasks[r.ID]; ok || s.creating[r.ID] {
		return nil, nil, fmt.Errorf("task %s: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	sp, err := readSpec(r.Bundle)
	if err != nil {
		return nil, nil, err
	}
	ann := sp.Annotations
	t := &task{id: r.ID, bundle: r.Bundle, execs: map[string]*proc{},
		main: newProc("", r.Stdin, r.Stdout, r.Stderr, r.Terminal)}
	switch ann[AnnotationContainerType] {
	case containerTypeSandbox:
		if s.sandboxID != "" {
			return nil, nil, fmt.Errorf("sandbox %s: this shim already serves sandbox %s: %w", r.ID, s.sandboxID, errdefs.ErrAlreadyExists)
		}
		if _, err := parsePodVolumes(ann); err != nil {
			return nil, nil, fmt.Errorf("sandbox %s: %w", r.ID, err)
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
		return nil, nil, fmt.Errorf("task %s: %w", r.ID, ErrNotKubernetes)
	default:
		if s.sandboxID == "" || ann[AnnotationSandboxID] != s.sandboxID {
			return nil, nil, fmt.Errorf("container %s: sandbox %q is not served by this shim: %w", r.ID, ann[AnnotationSandboxID], errdefs.ErrFailedPrecondition)
		}
		t.name = ann[AnnotationContainerName]
		if !api.ValidContainerName(t.name) {
			return nil, nil, fmt.Errorf("container %s: name %q: %w", r.ID, t.name, errdefs.ErrInvalidArgument)
		}
	}
	return t, sp, nil
}

// recordTaskLocked records a created task and tells containerd (caller holds s.mu).
func (s *Service) recordTaskLocked(t *task, r *taskAPI.CreateTaskRequest) *taskAPI.CreateTaskResponse {
	s.tasks[r.ID] = t
	s.publish(runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{ContainerID: r.ID, Bundle: r.Bundle, Pid: s.pid(),
		IO: &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}})
	return &taskAPI.CreateTaskResponse{Pid: s.pid()}
}

// createContainer creates the placeholder t (reserved in s.creating) in the pod VM, booting
// it first if needed, and records it; it runs without s.mu.
func (s *Service) createContainer(ctx context.Context, r *taskAPI.CreateTaskRequest, sp *specs.Spec, t *task) (*taskAPI.CreateTaskResponse, error) {
	unreserve := func() {
		s.mu.Lock()
		delete(s.creating, r.ID)
		s.mu.Unlock()
	}
	vm, err := s.podVM(ctx, r, resolvConf(sp))
	if err != nil {
		unreserve()
		s.log.Error("pod VM failed", "container", t.name, "err", err)
		return nil, err
	}
	// Sealed volumes reach the guest as hot-plugged disks the agent opens (AttachVolume), before
	// the container that uses them; the request below names the container only.
	if err := vm.volumes.attach(ctx, sp, t.name); err != nil {
		unreserve()
		return nil, err
	}
	// Host-provided volumes reach the guest as files (UpdateHostFiles) before the container
	// that mounts them; host-provided env values in its request (host_env).
	if err := vm.hostFiles.add(ctx, vm.pollCtx, sp); err != nil {
		unreserve()
		return nil, fmt.Errorf("container %s: %w", t.name, err)
	}
	tc := time.Now()
	cr, err := s.createInGuest(ctx, vm.agent, &api.CreateContainerRequest{Name: t.name, Stdin: r.Stdin != "", Tty: r.Terminal, HostEnv: hostEnv(sp, s.log)})
	if err != nil {
		unreserve()
		return nil, fmt.Errorf("create sealed container %s in the guest: %w", t.name, err)
	}
	s.log.Info("sealpod phase", "phase", "pull", "container", t.name, "ms", ms(time.Since(tc)), "guest_create_ms", cr.CreateUs/1000)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.creating, r.ID)
	if s.vm != vm || vm.gone {
		return nil, fmt.Errorf("container %s: %w: the pod VM stopped while the container was created", t.name, errdefs.ErrUnavailable)
	}
	return s.recordTaskLocked(t, r), nil
}

// podVM returns the running pod VM, booting it if there is none. One Create boots (without
// s.mu); the others wait for that boot to end, then use its VM or, if it failed, boot in turn.
// Deleting the pod meanwhile abandons the boot (detachVMLocked).
func (s *Service) podVM(ctx context.Context, r *taskAPI.CreateTaskRequest, resolv string) (*podVM, error) {
	s.mu.Lock()
	for {
		if s.vm != nil && !s.vm.gone {
			vm := s.vm
			s.mu.Unlock()
			return vm, nil
		}
		if s.sandboxID == "" {
			s.mu.Unlock()
			return nil, fmt.Errorf("pod VM boot: %w: the pod's sandbox was deleted", errdefs.ErrFailedPrecondition)
		}
		if s.vm != nil && s.booting == nil {
			// QEMU exited under the pod: remove what is left of it before booting anew.
			dead := s.detachVMLocked("pod VM exited")
			s.mu.Unlock()
			s.stopVM(dead, "pod VM exited")
			s.mu.Lock()
			continue
		}
		wait := s.stopping
		if s.booting != nil {
			wait = s.booting.done
		}
		if wait == nil {
			break
		}
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for the pod VM boot: %w", ctx.Err())
		}
		s.mu.Lock()
	}
	bctx, cancel := context.WithCancel(ctx)
	b := &vmBoot{done: make(chan struct{}), cancel: cancel}
	s.booting = b
	pb := s.bootLocked()
	s.mu.Unlock()

	err := pb.boot(bctx, r, resolv)
	cancel()
	s.mu.Lock()
	s.booting = nil
	aborted := b.aborted
	if err == nil && aborted == "" {
		s.vm = pb.vm
	}
	s.mu.Unlock()
	if err == nil && aborted != "" {
		s.stopVM(pb.vm, "boot abandoned: "+aborted)
	}
	close(b.done)
	if aborted != "" {
		return nil, fmt.Errorf("pod VM boot abandoned (%s): %w", aborted, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, err
	}
	return pb.vm, nil
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
