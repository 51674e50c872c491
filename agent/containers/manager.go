// Package containers runs the sealed containers of a pod inside the guest with runc's
// libcontainer: it pulls every image itself from StartPod on (pinned by digest, verified),
// unpacks it into guest memory, and creates, starts, waits, signals, execs into and deletes
// the containers.
//
// The agent (agent/cmd/sealpod-agent) uses it like this:
//
//	func main() {
//		containers.MaybeInit() // first: the binary is re-executed as container init / pause
//		...
//		m, _ := containers.New(containers.Options{StateDir: "/run/sealpod/containers"})
//		_ = m.StartPod(sealedSpec, containers.PodOptions{TLSSource: "/run/sealpod/tls"})
//		c, _ := m.Create(ctx, "app")      // image pulled from StartPod on + create (process waits before exec)
//		go io.Copy(toHost, c.Stdout())    // drain stdout/stderr (io.Discard if logs: deny)
//		_ = c.Start()
//		code, _ := c.Wait(ctx)
//		_ = m.Delete(ctx, "app")
//		_ = m.Close(ctx)                  // kills everything, removes volumes and state
//
// Namespaces: every container shares the guest's network namespace (the VM is the pod), and
// the pod's PID, IPC and UTS namespaces, held by a small "pause" process (the agent binary
// re-executed with the argument "sealpod-pause"); each container has its own mount namespace
// and cgroup. This is Kubernetes' pod model with shareProcessNamespace: true: a SIGTERM sent
// to a container's main process is delivered even if it installs no handler.
//
// The host is never trusted: it sends only names, argv (checked against the sealed policy by
// the agent before Exec) and stdio flags; container definitions come from the sealed spec.
package containers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/containers/image"
	"github.com/sealpod/sealpod/agent/errkind"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Errors callers branch on (errkind kinds: their texts may reach the host).
var (
	// ErrUnknownContainer: no sealed container (or no created container) of that name.
	ErrUnknownContainer error = errkind.New("unknown container")
	// ErrExists: the container was already created.
	ErrExists error = errkind.New("container already exists")
	// ErrNoPod: StartPod was not called (or the pod was closed).
	ErrNoPod error = errkind.New("pod not started")
	// ErrNotStarted / ErrAlreadyStarted: lifecycle misuse.
	ErrNotStarted     error = errkind.New("container not started")
	ErrAlreadyStarted error = errkind.New("container already started")
	// ErrInvalid: the sealed spec asks for something this guest cannot do (names the field).
	ErrInvalid error = errkind.New("invalid container definition")
)

// Options configure a Manager.
type Options struct {
	// StateDir holds root filesystems, pod volumes and libcontainer state. It should be on a
	// guest-memory filesystem. Default: /run/sealpod/containers.
	StateDir string
	// InsecureRegistries ("host:port") may be pulled from over plain HTTP (dev/test only;
	// logged as a warning on every pull).
	InsecureRegistries []string
	// Transport is the base HTTP transport for pulls (TLS roots...). Default: http.DefaultTransport.
	Transport http.RoundTripper
	// MaxImageBytes / MaxImageEntries bound each unpacked image (defaults in package image).
	MaxImageBytes   int64
	MaxImageEntries int64
	// PullParallelism is how many images are pulled at once from StartPod on (default
	// DefaultPullParallelism).
	PullParallelism int
	// CgroupParent is the cgroup under which containers are placed, relative to the agent's
	// own cgroup. Default: "sealpod".
	CgroupParent string
	// ResolvConf is copied into the pod's /etc/resolv.conf when it exists.
	// Default: /etc/resolv.conf.
	ResolvConf string
	// NoPivotRoot: "auto" (default, ""), "true" or "false". pivot_root(2) fails when the
	// agent's root is the initial ramfs; auto then refuses to start pods (the agent leaves
	// the initramfs at boot, docs/agent.md). "true" forces MS_MOVE+chroot, which a root
	// process with CAP_SYS_CHROOT escapes: tests on a ramfs root only.
	NoPivotRoot string
	// Logger for structured logs. Default: slog.Default().
	Logger *slog.Logger
}

// PodOptions carry what the agent adds to the sealed spec at pod start.
type PodOptions struct {
	// TLSSource is a guest directory (cert.pem, key.pem, ca.pem) bind-mounted read-only into
	// every container at the sealed Identity.TLSDir. Empty: no TLS mount.
	TLSSource string
	// HostValues are the downward-API values the host supplied (untrusted, not secret),
	// keyed by EnvVar.FromHost ("fieldRef:metadata.name", ...).
	HostValues map[string]string
	// Hostname of the pod (UTS namespace). Default: the name part of the sealed spec's Pod.
	Hostname string
}

// Manager runs the containers of one pod.
type Manager struct {
	opts Options
	log  *slog.Logger

	mu  sync.Mutex
	pod *pod
	pf  *prefetch // the pod's image pulls from StartPod on
	// noPrefetch (benchmarks only): pull each image at Create, as before prefetching.
	noPrefetch bool
	containers map[string]*Container
	// cgroupParents are removed (if empty) by Close.
	cgroupParents map[string]bool
}

// New prepares the state directory.
func New(opts Options) (*Manager, error) {
	if opts.StateDir == "" {
		opts.StateDir = "/run/sealpod/containers"
	}
	if opts.CgroupParent == "" {
		opts.CgroupParent = "sealpod"
	}
	if opts.ResolvConf == "" {
		opts.ResolvConf = "/etc/resolv.conf"
	}
	if filepath.IsAbs(opts.CgroupParent) || strings.Contains(opts.CgroupParent, "..") {
		return nil, fmt.Errorf("containers options: cgroupParent %q must be relative without \"..\"", opts.CgroupParent)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if !filepath.IsAbs(opts.StateDir) {
		return nil, fmt.Errorf("containers options: stateDir %q is not absolute", opts.StateDir)
	}
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("containers: state dir %s: %w", opts.StateDir, err)
	}
	return &Manager{opts: opts, log: opts.Logger, containers: map[string]*Container{}, cgroupParents: map[string]bool{}}, nil
}

func (m *Manager) runcRoot() string { return filepath.Join(m.opts.StateDir, "runc") }

// StartPod starts pulling every image of the sealed spec (init containers' first, a few at a
// time, each unpacked while it downloads: see prefetch) and makes the pod's volumes (a tmpfs
// per emptyDir, a read-only tmpfs with the sealed files per sealed volume), its /etc/hosts,
// /etc/hostname and /etc/resolv.conf, and its pause process. It must be called once, before
// Create.
func (m *Manager) StartPod(s *spec.Spec, po PodOptions) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pod != nil {
		return fmt.Errorf("start pod %s: already started", s.Workload)
	}
	var pf *prefetch
	if !m.noPrefetch {
		var err error
		pf, err = startPrefetch(filepath.Join(m.opts.StateDir, "images"), s, m.pullOptions(s), m.limits, m.opts.PullParallelism, m.log)
		if err != nil {
			return fmt.Errorf("start pod %s: %w", s.Workload, err)
		}
	}
	p, err := startPod(m.opts, m.log, s, po)
	if err != nil {
		if pf != nil {
			_ = pf.close()
		}
		return fmt.Errorf("start pod %s: %w", s.Workload, err)
	}
	m.pod, m.pf = p, pf
	return nil
}

// pullOptions are the pull settings for the images of s: its sealed credentials and mirrors.
func (m *Manager) pullOptions(s *spec.Spec) image.PullOptions {
	return image.PullOptions{
		Credentials:        s.Registries,
		Mirrors:            s.Mirrors,
		InsecureRegistries: m.opts.InsecureRegistries,
		Transport:          m.opts.Transport,
		Logger:             m.log,
	}
}

// limits are fresh extraction limits for one image.
func (m *Manager) limits() *image.Limits {
	lim := &image.Limits{MaxBytes: m.opts.MaxImageBytes, MaxEntries: m.opts.MaxImageEntries}
	if lim.MaxBytes == 0 {
		lim.MaxBytes = image.DefaultMaxBytes
	}
	if lim.MaxEntries == 0 {
		lim.MaxEntries = image.DefaultMaxEntries
	}
	return lim
}

// Create takes the sealed container's image as pulled from StartPod on (waiting for that pull
// if it is still running, and returning its error if it failed), or pulls it now (a container
// created again), verified against its pinned digest and unpacked into a fresh root
// filesystem, and creates the container: its process exists, stopped before exec, until
// Start. Stdio follows the sealed TTY/Stdin flags.
func (m *Manager) Create(ctx context.Context, name string) (*Container, error) {
	return m.CreateWith(ctx, name, CreateOptions{})
}

// CreateOptions are what the host adds to one container of the sealed spec.
type CreateOptions struct {
	// HostEnv is the placeholder container's environment as the kubelet resolved it
	// (untrusted): host-provided Secret/ConfigMap keys are read from it by variable name.
	HostEnv map[string]string
}

// CreateWith is Create with the host's per-container input.
func (m *Manager) CreateWith(ctx context.Context, name string, o CreateOptions) (*Container, error) {
	if !api.ValidContainerName(name) {
		return nil, fmt.Errorf("create container %q: %w", name, ErrUnknownContainer)
	}
	m.mu.Lock()
	p, pf := m.pod, m.pf
	if p == nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("create container %s: %w", name, ErrNoPod)
	}
	sc, ok := p.spec.Container(name)
	if !ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("create container %s: %w", name, ErrUnknownContainer)
	}
	if _, exists := m.containers[name]; exists {
		m.mu.Unlock()
		return nil, fmt.Errorf("create container %s: %w", name, ErrExists)
	}
	// Reserve the name while pulling.
	m.containers[name] = nil
	m.mu.Unlock()

	c, err := m.create(ctx, p, pf, sc, o)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		delete(m.containers, name)
		return nil, fmt.Errorf("create container %s: %w", name, err)
	}
	if m.pod != p { // closed meanwhile
		_ = c.destroy(context.Background())
		delete(m.containers, name)
		return nil, fmt.Errorf("create container %s: %w", name, ErrNoPod)
	}
	m.containers[name] = c
	return c, nil
}

func (m *Manager) create(ctx context.Context, p *pod, pf *prefetch, sc *spec.Container, o CreateOptions) (c *Container, retErr error) {
	t0 := time.Now()
	dir := filepath.Join(m.opts.StateDir, "c", sc.Name)
	rootfs := filepath.Join(dir, "rootfs")
	// A leftover from a failed attempt is removed first.
	if err := removeTree(dir); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			_ = removeTree(dir)
		}
	}()
	img, pullD, unpackD, err := m.rootfs(ctx, p, pf, sc, dir, rootfs)
	if err != nil {
		return nil, err
	}
	tUnpack := time.Now()

	if !p.alive() {
		// Its /proc/<pid>/ns paths could name another process by now.
		return nil, errors.New("the pod's pause process has exited")
	}
	cfg, proc, err := m.buildConfig(p, sc, img, rootfs, o.HostEnv)
	if err != nil {
		return nil, err
	}
	lc, err := libcontainer.Create(m.runcRoot(), sc.Name, cfg)
	if err != nil {
		return nil, fmt.Errorf("libcontainer create: %w", err)
	}
	c = &Container{
		name:    sc.Name,
		dir:     dir,
		lc:      lc,
		log:     m.log.With("container", sc.Name),
		done:    make(chan struct{}),
		created: time.Now(),
	}
	defer func() {
		if retErr != nil {
			_ = lc.Destroy()
		}
	}()
	st, err := newStdio(sc.TTY, sc.Stdin)
	if err != nil {
		return nil, err
	}
	st.attach(proc)
	proc.Init = true
	if err := lc.Start(proc); err != nil {
		st.closeAll()
		return nil, fmt.Errorf("start init: %w", err)
	}
	if err := st.afterStart(); err != nil {
		_ = lc.Signal(unix.SIGKILL)
		_, _ = proc.Wait()
		st.closeAll()
		return nil, err
	}
	c.proc = proc
	c.stdio = st
	if state, err := lc.State(); err == nil {
		c.cgroupPaths = state.CgroupPaths
		m.mu.Lock()
		for _, cp := range state.CgroupPaths {
			m.cgroupParents[filepath.Dir(cp)] = true
		}
		m.mu.Unlock()
	}
	go c.waitInit()
	c.log.Info("container created", "pull_ms", pullD.Milliseconds(), "unpack_ms", unpackD.Milliseconds(),
		"waited", tUnpack.Sub(t0).Milliseconds(), "create_ms", time.Since(tUnpack).Milliseconds())
	return c, nil
}

// rootfs fills rootfs (in dir) with sc's image: the copy staged from StartPod on when there
// is one (waiting for it), else a pull now. It returns the image and how long its pull and
// unpack took.
func (m *Manager) rootfs(ctx context.Context, p *pod, pf *prefetch, sc *spec.Container, dir, rootfs string) (*image.Image, time.Duration, time.Duration, error) {
	var st *staged
	if pf != nil {
		var err error
		if st, err = pf.take(ctx, sc.Name, sc.Image); err != nil {
			return nil, 0, 0, err
		}
	}
	if st != nil {
		if st.err != nil {
			return nil, 0, 0, fmt.Errorf("image pulled from unseal on: %w", st.err)
		}
		defer func() { _ = removeTree(st.dir) }() // best effort: the staging copy is empty once taken
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, 0, 0, fmt.Errorf("container dir %s: %w", dir, err)
		}
		if err := os.Rename(st.rootfs(), rootfs); err != nil {
			return nil, 0, 0, fmt.Errorf("take the staged rootfs: %w", err)
		}
		return st.img, st.pull, st.unpack, nil
	}
	t0 := time.Now()
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return nil, 0, 0, fmt.Errorf("rootfs %s: %w", rootfs, err)
	}
	img, err := image.Pull(ctx, sc.Image, m.pullOptions(p.spec))
	if err != nil {
		return nil, 0, 0, err
	}
	t1 := time.Now()
	if err := image.Unpack(ctx, img, rootfs, m.limits()); err != nil {
		return nil, 0, 0, err
	}
	return img, t1.Sub(t0), time.Since(t1), nil
}

// Get returns a created container.
func (m *Manager) Get(name string) (*Container, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.containers[name]
	if c == nil {
		return nil, fmt.Errorf("container %q: %w", name, ErrUnknownContainer)
	}
	return c, nil
}

// Delete kills every process of the container (SIGKILL), waits for them, destroys its cgroup
// and libcontainer state, closes its stdio and removes its root filesystem.
func (m *Manager) Delete(ctx context.Context, name string) error {
	m.mu.Lock()
	c := m.containers[name]
	if c == nil {
		m.mu.Unlock()
		return fmt.Errorf("delete container %q: %w", name, ErrUnknownContainer)
	}
	delete(m.containers, name)
	m.mu.Unlock()
	if err := c.destroy(ctx); err != nil {
		return fmt.Errorf("delete container %s: %w", name, err)
	}
	return nil
}

// Close deletes every container, stops the pause process, unmounts the pod volumes and
// removes the state directory's pod content.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	cs := m.containers
	m.containers = map[string]*Container{}
	p, pf := m.pod, m.pf
	m.pod, m.pf = nil, nil
	m.mu.Unlock()
	var errs []error
	if pf != nil {
		if err := pf.close(); err != nil {
			errs = append(errs, err)
		}
	}
	for name, c := range cs {
		if c == nil {
			continue
		}
		if err := c.destroy(ctx); err != nil {
			errs = append(errs, fmt.Errorf("delete container %s: %w", name, err))
		}
	}
	if p != nil {
		if err := p.close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeTree(filepath.Join(m.opts.StateDir, "c")); err != nil {
		errs = append(errs, err)
	}
	if err := removeTree(m.runcRoot()); err != nil {
		errs = append(errs, err)
	}
	m.mu.Lock()
	parents := m.cgroupParents
	m.cgroupParents = map[string]bool{}
	m.mu.Unlock()
	for d := range parents {
		// rmdir only succeeds on an empty cgroup: another pod's containers are never touched.
		if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// exitCodeOf converts a wait result to the container convention: the exit status, or 128+N
// when killed by signal N.
func exitCodeOf(ps *os.ProcessState, err error) (int, error) {
	if ps == nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			ps = ee.ProcessState
		}
	}
	if ps == nil {
		if err == nil {
			err = errors.New("no process state")
		}
		return -1, err
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok {
		return ps.ExitCode(), nil
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

// removeTree removes dir after unmounting anything still mounted beneath it (lazily).
func removeTree(dir string) error {
	if err := unmountUnder(dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// unmountUnder unmounts every mount point at or below dir in this mount namespace, deepest first.
//
// The mount table is read from /proc/thread-self with the goroutine locked to its thread:
// libcontainer runs helper goroutines that setns(2) into container mount namespaces and
// never unlock their thread; when one lands on the main thread, /proc/self (the main
// thread's view) shows a container's mount table instead of the agent's.
func unmountUnder(dir string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	data, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	var mps []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mps = append(mps, mp)
		}
	}
	// Deepest first.
	for i := len(mps) - 1; i >= 0; i-- {
		if err := unix.Unmount(mps[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount %s: %w", mps[i], err)
		}
	}
	return nil
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for j := 1; j <= 3; j++ {
				c := s[i+j]
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + (c - '0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
