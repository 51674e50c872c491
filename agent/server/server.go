// Package server implements the agent API (agent/api) inside the guest: it validates every
// host request as hostile input, runs Unseal (agent/unseal), enforces the sealed policy (exec
// allow-list, logs allow/deny), buffers stdio for the host, and maps container names to the
// containers backend.
package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/kbs/client"
)

// Config wires the server.
type Config struct {
	// Attester produces the guest's evidence (sim, snp or tdx).
	Attester unseal.Attester
	// Backend runs containers.
	Backend Backend
	// Network validates and applies the host's network configuration; nil: refuse any.
	Network func(ctx context.Context, n *api.NetworkConfig) error
	// TLSDir is the guest directory (a tmpfs) receiving cert.pem, key.pem and ca.pem.
	TLSDir string
	// PowerOff is called after Shutdown has been answered; nil: nothing.
	PowerOff func()
	// Capacity measures the guest, the node of a container without a cpu, memory or
	// ephemeral-storage limit (resourceFieldRef, hostvalues.go); nil: MeasureCapacity.
	Capacity func() (GuestCapacity, error)
	// Unseal tunes the attestation flow.
	Unseal unseal.Options
	// Version is reported by Ping.
	Version string
	// MaxExecs bounds the live execs of one container (running, or exited and not yet
	// released); default DefaultMaxExecs.
	MaxExecs int
	// ExecGrace is how long an exited exec stays when the host neither waits for it nor
	// reads its output to the end; default DefaultExecGrace.
	ExecGrace time.Duration
	// Encrypted volumes (volume.go): SysBlock (default DefaultSysBlock) and DevDir (default
	// DefaultDevDir) are where AttachVolume looks for the device with the host's serial, for
	// at most DeviceWait (default DefaultDeviceWait); Filesystem volumes are mounted under
	// VolumeDir (default DefaultVolumeDir); OpenVolume opens one (default OpenVolume, over
	// agent/volume) with the broker generations Generations returns (default
	// BrokerGenerations).
	SysBlock, DevDir, VolumeDir string
	DeviceWait                  time.Duration
	OpenVolume                  VolumeOpener
	Generations                 func(*unseal.VolumeAccess) (Generations, error)
	Logger                      *slog.Logger
}

// Server is the agent service.
type Server struct {
	cfg   Config
	log   *slog.Logger
	start time.Time

	mu        sync.Mutex
	unsealing bool
	network   *api.NetworkConfig // applied configuration
	res       *unseal.Result
	pod       Pod
	ctrs      map[string]*ctr
	initDone  map[string]bool // init containers that exited 0 (kept after removal)
	// appStarted: an app container has started; no init container runs again.
	appStarted bool
	shutdown   bool
	// podName is the host's (validated) "fieldRef:metadata.name": encrypted volumes' claim
	// identities depend on it.
	podName string
	volumes map[string]*attachment // by sealed volume name
}

type ctr struct {
	name    string
	c       Container
	main    *proc
	execs   map[string]*proc
	started bool
	busy    bool // create in progress
}

type proc struct {
	p        Process
	stdout   *stream
	stderr   *stream
	stdinMu  sync.Mutex
	stdin    interface{ Write([]byte) (int, error) }
	closeIn  func() error
	done     chan struct{}
	waitOnce sync.Once
	code     int
	exitedAt time.Time
	waitErr  error
	// onExit runs after done is closed (execs: starts the release grace timer).
	onExit func()
	// Exec table bookkeeping (guarded by Server.mu): see exec.go.
	id     string
	waited bool
	grace  *time.Timer
}

// New returns a server.
func New(cfg Config) (*Server, error) {
	if cfg.Attester == nil || cfg.Backend == nil || cfg.TLSDir == "" {
		return nil, errors.New("agent server: attester, backend and TLS dir are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxExecs <= 0 {
		cfg.MaxExecs = DefaultMaxExecs
	}
	if cfg.ExecGrace <= 0 {
		cfg.ExecGrace = DefaultExecGrace
	}
	cfg.SysBlock = cmp.Or(cfg.SysBlock, DefaultSysBlock)
	cfg.DevDir = cmp.Or(cfg.DevDir, DefaultDevDir)
	cfg.VolumeDir = cmp.Or(cfg.VolumeDir, DefaultVolumeDir)
	if cfg.DeviceWait <= 0 {
		cfg.DeviceWait = DefaultDeviceWait
	}
	if cfg.OpenVolume == nil {
		cfg.OpenVolume = OpenVolume
	}
	if cfg.Generations == nil {
		cfg.Generations = BrokerGenerations
	}
	if cfg.Capacity == nil {
		cfg.Capacity = MeasureCapacity
	}
	return &Server{cfg: cfg, log: cfg.Logger, start: time.Now(), ctrs: map[string]*ctr{}, initDone: map[string]bool{}, volumes: map[string]*attachment{}}, nil
}

// Serve serves the API on ln (ttrpc) until ctx is done.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ts, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	api.RegisterAgentService(ts, s)
	go func() {
		<-ctx.Done()
		ts.Close()
	}()
	err = ts.Serve(ctx, ln)
	if ctx.Err() != nil || errors.Is(err, ttrpc.ErrServerClosed) {
		return nil
	}
	return err
}

func invalid(format string, a ...any) error {
	return status.Errorf(codes.InvalidArgument, format, a...)
}

// Ping reports the state.
func (s *Server) Ping(context.Context, *api.PingRequest) (*api.PingResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &api.PingResponse{State: api.StateSealed, Version: s.cfg.Version, UptimeUs: time.Since(s.start).Microseconds()}
	if s.res != nil {
		r.State, r.Workload = api.StateUnsealed, s.res.Spec.Workload
	}
	return r, nil
}

// unsealError maps an Unseal failure to a status whose message carries the reason.
func unsealError(err error) error {
	var ae *client.APIError
	switch {
	case errors.Is(err, envelope.ErrMalformed), errors.Is(err, envelope.ErrUnsupportedVersion):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, unseal.ErrHostData), errors.Is(err, unseal.ErrTEE), errors.Is(err, envelope.ErrAuthentication),
		errors.Is(err, unseal.ErrSpec), errors.Is(err, unseal.ErrCertificate):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, unseal.ErrNoVolumeSecret):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.As(err, &ae) && ae.Status == 404: // the workload is not (or no longer) registered
		return status.Error(codes.NotFound, err.Error())
	case errors.As(err, &ae) && ae.Status/100 == 4 && !unseal.Transient(err):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case unseal.Transient(err):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// Unseal attests, opens the envelope and starts the pod.
func (s *Server) Unseal(ctx context.Context, req *api.UnsealRequest) (*api.UnsealResponse, error) {
	if n := len(req.GetEnvelope()); n == 0 || n > api.MaxEnvelope {
		return nil, invalid("unseal: envelope: %d bytes (want 1..%d)", n, api.MaxEnvelope)
	}
	if err := checkHostValues(req.GetHostValues()); err != nil {
		return nil, err
	}
	s.mu.Lock()
	switch {
	case s.shutdown:
		s.mu.Unlock()
		return nil, status.Error(codes.FailedPrecondition, "unseal: agent is shutting down")
	case s.res != nil:
		s.mu.Unlock()
		return nil, status.Error(codes.FailedPrecondition, "unseal: already unsealed")
	case s.unsealing:
		s.mu.Unlock()
		return nil, status.Error(codes.Unavailable, "unseal: another Unseal is in progress")
	}
	s.unsealing = true
	applied := s.network
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.unsealing = false
		s.mu.Unlock()
	}()

	start := time.Now()
	times := &api.PhaseTimes{}
	if req.GetNetwork() != nil {
		switch {
		case applied != nil && !proto.Equal(applied, req.GetNetwork()):
			return nil, invalid("unseal: network: differs from the configuration applied by an earlier Unseal")
		case applied == nil && s.cfg.Network == nil:
			return nil, invalid("unseal: network: this agent does not configure networks")
		case applied == nil:
			if err := s.cfg.Network(ctx, req.GetNetwork()); err != nil {
				return nil, invalid("unseal: network: %v", err)
			}
			s.mu.Lock()
			s.network = proto.Clone(req.GetNetwork()).(*api.NetworkConfig)
			s.mu.Unlock()
		}
	}
	times.NetworkUs = time.Since(start).Microseconds()

	res, err := unseal.Unseal(ctx, req.GetEnvelope(), s.cfg.Attester, s.cfg.Unseal)
	if err != nil {
		s.log.Warn("unseal refused", "err", err)
		return nil, unsealError(err)
	}
	tPod := time.Now()
	if err := s.startPod(ctx, res, req.GetHostValues()); err != nil {
		res.Volumes.Wipe()
		return nil, err
	}
	times.PodUs = time.Since(tPod).Microseconds()
	t := res.Times
	times.AuthUs = t.Auth.Microseconds()
	times.EvidenceUs, times.AttestUs, times.KeyUs = t.Evidence.Microseconds(), t.Attest.Microseconds(), t.Key.Microseconds()
	times.OpenUs, times.CertificateUs = t.Open.Microseconds(), t.Certificate.Microseconds()
	times.TotalUs = time.Since(start).Microseconds()
	out := &api.UnsealResponse{Workload: res.Spec.Workload, EnvelopeDigest: res.Digest.String(), Times: times}
	for _, c := range res.Spec.InitContainers {
		out.InitContainers = append(out.InitContainers, c.Name)
	}
	for _, c := range res.Spec.Containers {
		out.Containers = append(out.Containers, c.Name)
	}
	s.log.Info("unsealed", "workload", out.Workload, "containers", len(out.InitContainers)+len(out.Containers), "total_ms", times.TotalUs/1000)
	return out, nil
}

// startPod writes the workload identity, starts the pod of an opened envelope and makes the
// server unsealed. hostValues were checked by checkHostValues.
func (s *Server) startPod(ctx context.Context, res *unseal.Result, in map[string]string) error {
	hv, err := s.hostValues(res.Spec, in) // hostvalues.go
	if err != nil {
		return err
	}
	if err := unseal.WriteIdentity(s.cfg.TLSDir, res.Identity); err != nil {
		return status.Errorf(codes.Internal, "unseal: %v", err)
	}
	pod, err := s.cfg.Backend.StartPod(ctx, res.Spec, PodOptions{TLSDir: s.cfg.TLSDir, HostValues: hv})
	if err != nil {
		return status.Errorf(codes.Internal, "unseal: start pod: %v", err)
	}
	s.mu.Lock()
	s.res, s.pod, s.podName = res, pod, in[podNameKey]
	s.mu.Unlock()
	return nil
}

// sealed returns the opened spec and pod, or FailedPrecondition.
func (s *Server) sealed() (*spec.Spec, Pod, error) {
	if s.res == nil {
		return nil, nil, status.Error(codes.FailedPrecondition, "agent is sealed: call Unseal first")
	}
	if s.shutdown {
		return nil, nil, status.Error(codes.FailedPrecondition, "agent is shutting down")
	}
	return s.res.Spec, s.pod, nil
}

func checkName(name string) error {
	if !api.ValidContainerName(name) {
		return invalid("container name %.80q: not a DNS-1123 label", name)
	}
	return nil
}

// lookup returns the created container name (caller holds s.mu).
func (s *Server) lookup(name string) (*ctr, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	sp, _, err := s.sealed()
	if err != nil {
		return nil, err
	}
	if _, ok := sp.Container(name); !ok {
		return nil, status.Errorf(codes.NotFound, "container %q is not in the sealed spec", name)
	}
	c := s.ctrs[name]
	if c == nil || c.busy {
		return nil, status.Errorf(codes.NotFound, "container %q is not created", name)
	}
	return c, nil
}

// process returns the main process or an exec (caller holds s.mu).
func (s *Server) process(name, execID string) (*ctr, *proc, error) {
	c, err := s.lookup(name)
	if err != nil {
		return nil, nil, err
	}
	if execID == "" {
		return c, c.main, nil
	}
	if !api.ValidExecID(execID) {
		return nil, nil, invalid("exec id %.80q: malformed", execID)
	}
	p := c.execs[execID]
	if p == nil {
		return nil, nil, status.Errorf(codes.NotFound, "exec %q in container %s: unknown", execID, name)
	}
	return c, p, nil
}

// startedProcess is process (under s.mu) for a request that needs the process running: a
// main process not yet started is refused (op begins the error: "container", "resize").
func (s *Server) startedProcess(name, execID, op string) (*ctr, *proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, p, err := s.process(name, execID)
	if err == nil && p == c.main && !c.started {
		return nil, nil, status.Errorf(codes.FailedPrecondition, "%s %s: not started", op, c.name)
	}
	return c, p, err
}

func (s *Server) logsDenied() bool { return s.res.Spec.Policy.Logs != spec.LogsAllow }

// newProc wraps a started (exec) or created (main) process; id is the exec id ("" for the
// main process) and ended, if set, is called when either output stream has ended.
func newProc(p Process, denied bool, id string, ended func(*proc)) *proc {
	pr := &proc{p: p, done: make(chan struct{}), id: id}
	var end func()
	if ended != nil {
		end = func() { ended(pr) }
	}
	pr.stdout = newStream(p.Stdout(), denied, end)
	pr.stderr = newStream(p.Stderr(), denied, end)
	if in := p.Stdin(); in != nil {
		pr.stdin, pr.closeIn = in, in.Close
	}
	return pr
}

// watch waits for the process in the background once.
func (p *proc) watch() {
	p.waitOnce.Do(func() {
		go func() {
			code, err := p.p.Wait(context.Background())
			p.code, p.waitErr, p.exitedAt = code, err, time.Now()
			close(p.done)
			if p.onExit != nil {
				p.onExit()
			}
		}()
	})
}

// CreateContainer pulls and creates a sealed container.
func (s *Server) CreateContainer(ctx context.Context, req *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	name := req.GetName()
	if err := checkName(name); err != nil {
		return nil, err
	}
	hostEnv, err := parseHostEnv(req.GetHostEnv())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	sp, pod, err := s.sealed()
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	sc, ok := sp.Container(name)
	if !ok {
		s.mu.Unlock()
		return nil, status.Errorf(codes.NotFound, "container %q is not in the sealed spec", name)
	}
	if req.GetTty() && !sc.TTY || req.GetStdin() && !sc.Stdin {
		s.mu.Unlock()
		return nil, status.Errorf(codes.PermissionDenied, "container %s: host asked tty=%v stdin=%v, the sealed spec has tty=%v stdin=%v", name, req.GetTty(), req.GetStdin(), sc.TTY, sc.Stdin)
	}
	if s.ctrs[name] != nil {
		s.mu.Unlock()
		return nil, status.Errorf(codes.AlreadyExists, "container %s: already created", name)
	}
	if err := s.checkRerun(name); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if err := s.checkVolumesAttached(sp, sc); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	entry := &ctr{name: name, busy: true, execs: map[string]*proc{}}
	s.ctrs[name] = entry
	denied := s.logsDenied()
	s.mu.Unlock()

	t := time.Now()
	c, err := pod.Create(ctx, name, hostEnv)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		delete(s.ctrs, name)
		return nil, status.Errorf(codes.Internal, "create container %s: %v", name, err)
	}
	entry.c, entry.busy = c, false
	entry.main = newProc(c, denied, "", nil)
	return &api.CreateContainerResponse{Tty: c.TTY(), Stdin: c.OpenStdin(), CreateUs: time.Since(t).Microseconds()}, nil
}

// StartContainer starts a created container.
func (s *Server) StartContainer(_ context.Context, req *api.ContainerRequest) (*api.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.lookup(req.GetName())
	if err != nil {
		return nil, err
	}
	if c.started {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s: already started", c.name)
	}
	if err := s.checkOrder(c.name); err != nil {
		return nil, err
	}
	if err := c.c.Start(); err != nil {
		return nil, status.Errorf(codes.Internal, "start container %s: %v", c.name, err)
	}
	s.markStarted(c)
	c.main.watch()
	return &api.Empty{}, nil
}

// WaitProcess waits for a process to exit.
func (s *Server) WaitProcess(ctx context.Context, req *api.ProcessRequest) (*api.WaitProcessResponse, error) {
	c, p, err := s.startedProcess(req.GetName(), req.GetExecId(), "container")
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if p != c.main {
		s.mu.Lock()
		p.waited = true
		s.releaseExec(c, p)
		s.mu.Unlock()
	}
	if p.waitErr != nil {
		return nil, status.Errorf(codes.Internal, "wait %s: %v", c.name, p.waitErr)
	}
	return &api.WaitProcessResponse{ExitStatus: int32(p.code), ExitedAtUnixNano: p.exitedAt.UnixNano()}, nil
}

// SignalProcess signals a process.
func (s *Server) SignalProcess(_ context.Context, req *api.SignalProcessRequest) (*api.Empty, error) {
	sig := req.GetSignal()
	if sig < 1 || sig > 64 {
		return nil, invalid("signal %d: out of range 1..64", sig)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, p, err := s.process(req.GetName(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	if err := p.p.Signal(syscall.Signal(sig)); err != nil {
		return nil, status.Errorf(codes.Internal, "signal %s: %v", c.name, err)
	}
	return &api.Empty{}, nil
}

func (s *Server) read(ctx context.Context, req *api.ReadStreamRequest, stderr bool) (*api.ReadStreamResponse, error) {
	n := int(req.GetLen())
	if n == 0 || n > api.MaxReadLen {
		n = api.MaxReadLen
	}
	s.mu.Lock()
	c, p, err := s.process(req.GetName(), req.GetExecId())
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	st := p.stdout
	if stderr {
		st = p.stderr
	}
	data, eof, denied, err := st.read(ctx, n)
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}
	if eof && p != c.main {
		s.mu.Lock()
		s.releaseExec(c, p)
		s.mu.Unlock()
	}
	return &api.ReadStreamResponse{Data: data, Eof: eof, Denied: denied}, nil
}

// ReadStdout returns buffered stdout.
func (s *Server) ReadStdout(ctx context.Context, req *api.ReadStreamRequest) (*api.ReadStreamResponse, error) {
	return s.read(ctx, req, false)
}

// ReadStderr returns buffered stderr.
func (s *Server) ReadStderr(ctx context.Context, req *api.ReadStreamRequest) (*api.ReadStreamResponse, error) {
	return s.read(ctx, req, true)
}

// WriteStdin writes to a process's stdin.
func (s *Server) WriteStdin(_ context.Context, req *api.WriteStdinRequest) (*api.WriteStdinResponse, error) {
	if len(req.GetData()) > api.MaxStdinWrite {
		return nil, invalid("stdin: %d bytes (max %d)", len(req.GetData()), api.MaxStdinWrite)
	}
	s.mu.Lock()
	c, p, err := s.process(req.GetName(), req.GetExecId())
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if p.stdin == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s: no stdin", c.name)
	}
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	n, err := p.stdin.Write(req.GetData())
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "stdin of %s: %v", c.name, err)
	}
	return &api.WriteStdinResponse{Len: uint32(n)}, nil
}

// CloseStdin closes a process's stdin.
func (s *Server) CloseStdin(_ context.Context, req *api.ProcessRequest) (*api.Empty, error) {
	s.mu.Lock()
	c, p, err := s.process(req.GetName(), req.GetExecId())
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if p.closeIn == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s: no stdin", c.name)
	}
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if err := p.closeIn(); err != nil {
		return nil, status.Errorf(codes.Internal, "close stdin of %s: %v", c.name, err)
	}
	return &api.Empty{}, nil
}

// RemoveContainer deletes a container.
func (s *Server) RemoveContainer(ctx context.Context, req *api.ContainerRequest) (*api.Empty, error) {
	s.mu.Lock()
	c, err := s.lookup(req.GetName())
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	c.busy = true
	pod := s.pod
	s.mu.Unlock()
	err = pod.Delete(ctx, c.name)
	if err == nil && c.started {
		// Delete killed and reaped the process; let watch record how it ended, so an init
		// container that exited 0 just before its removal counts as completed.
		select {
		case <-c.main.done:
		case <-time.After(removeWaitLimit):
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		c.busy = false
		return nil, status.Errorf(codes.Internal, "remove container %s: %v", c.name, err)
	}
	if s.completed(c) {
		s.initDone[c.name] = true
	}
	s.dropExecs(c)
	delete(s.ctrs, c.name)
	return &api.Empty{}, nil
}

// StatsContainer reports resource usage.
func (s *Server) StatsContainer(ctx context.Context, req *api.ContainerRequest) (*api.StatsContainerResponse, error) {
	s.mu.Lock()
	c, err := s.lookup(req.GetName())
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	st, err := c.c.Stats(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "stats %s: %v", c.name, err)
	}
	return &api.StatsContainerResponse{CpuUsageNs: st.CPUUsageNS, MemoryUsageBytes: st.MemoryUsageBytes, MemoryLimitBytes: st.MemoryLimitBytes, Pids: st.Pids}, nil
}

// Shutdown stops the pod and powers off after answering.
func (s *Server) Shutdown(ctx context.Context, _ *api.ShutdownRequest) (*api.Empty, error) {
	s.mu.Lock()
	s.shutdown = true
	pod := s.pod
	s.mu.Unlock()
	if pod != nil {
		if err := pod.Close(ctx); err != nil {
			s.log.Warn("shutdown: closing the pod", "err", err)
		}
	}
	s.closeVolumes() // after the containers, whose mounts use them
	s.mu.Lock()
	if s.res != nil {
		s.res.Volumes.Wipe() // no volume opens after Shutdown
	}
	s.mu.Unlock()
	if s.cfg.PowerOff != nil {
		go func() {
			time.Sleep(100 * time.Millisecond) // let the answer leave
			s.cfg.PowerOff()
		}()
	}
	return &api.Empty{}, nil
}

var _ api.AgentService = (*Server)(nil)

// String names the server in logs.
func (s *Server) String() string { return fmt.Sprintf("sealpod agent (%s)", s.cfg.Attester.TEE()) }
