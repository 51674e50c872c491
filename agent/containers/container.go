package containers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// Container is a created container. Its methods are safe for concurrent use.
type Container struct {
	name    string
	dir     string
	lc      *libcontainer.Container
	proc    *libcontainer.Process
	stdio   *stdio
	log     *slog.Logger
	created time.Time

	mu      sync.Mutex
	started bool
	deleted bool

	done     chan struct{} // closed when the main process has exited
	exitCode int
	exitErr  error

	execMu sync.Mutex
	execs  []*Process

	// cgroupPaths are the container's cgroup directories (per controller; "" on v2).
	cgroupPaths map[string]string
}

// CgroupPaths returns the container's cgroup directories keyed by controller ("" for v2).
func (c *Container) CgroupPaths() map[string]string { return c.cgroupPaths }

// StateDir is the directory holding the container's root filesystem.
func (c *Container) StateDir() string { return c.dir }

// Name is the sealed container name.
func (c *Container) Name() string { return c.name }

// Stdout is the container's standard output (the terminal in TTY mode). The caller must read
// it until EOF (io.Discard when the sealed policy denies logs): a full pipe blocks the container.
func (c *Container) Stdout() io.Reader { return c.stdio.stdout() }

// Stderr is the container's standard error; nil in TTY mode (stderr goes to the terminal).
func (c *Container) Stderr() io.Reader { return c.stdio.stderr() }

// Stdin is the container's standard input, nil unless the sealed container has stdin: true.
// Close sends EOF.
func (c *Container) Stdin() io.WriteCloser { return c.stdio.stdin() }

// Resize sets the terminal size (TTY mode only).
func (c *Container) Resize(width, height uint16) error { return c.stdio.resize(width, height) }

// Pid is the main process's PID in the guest.
func (c *Container) Pid() int {
	pid, err := c.proc.Pid()
	if err != nil {
		return -1
	}
	return pid
}

// Start lets the created main process exec its command.
func (c *Container) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deleted {
		return fmt.Errorf("start container %s: %w", c.name, ErrUnknownContainer)
	}
	if c.started {
		return fmt.Errorf("start container %s: %w", c.name, ErrAlreadyStarted)
	}
	select {
	case <-c.done:
		return fmt.Errorf("start container %s: process exited before start (code %d)", c.name, c.exitCode)
	default:
	}
	if err := c.lc.Exec(); err != nil {
		return fmt.Errorf("start container %s: %w", c.name, err)
	}
	c.started = true
	return nil
}

func (c *Container) waitInit() {
	ps, err := c.proc.Wait()
	code, werr := exitCodeOf(ps, err)
	c.exitCode, c.exitErr = code, werr
	close(c.done)
	c.log.Info("container exited", "code", code)
}

// Done is closed when the main process has exited.
func (c *Container) Done() <-chan struct{} { return c.done }

// Wait blocks until the main process exits and returns its exit code (128+N when killed by
// signal N), or until ctx ends.
func (c *Container) Wait(ctx context.Context) (int, error) {
	select {
	case <-c.done:
		return c.exitCode, c.exitErr
	case <-ctx.Done():
		return -1, fmt.Errorf("wait container %s: %w", c.name, ctx.Err())
	}
}

// Signal sends sig to the container's main process. SIGKILL kills every process of the
// container (its whole cgroup).
func (c *Container) Signal(sig syscall.Signal) error {
	select {
	case <-c.done:
		if sig == unix.SIGKILL {
			return c.killAll()
		}
		return fmt.Errorf("signal container %s: %w", c.name, libcontainer.ErrNotRunning)
	default:
	}
	if err := c.lc.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to container %s: %w", sig, c.name, err)
	}
	return nil
}

// killAll SIGKILLs every process left in the container's cgroup (exec'd processes,
// daemonised children) after the main process has exited.
func (c *Container) killAll() error {
	pids, err := c.lc.Processes()
	if err != nil {
		return nil // no cgroup: nothing left
	}
	for _, p := range pids {
		_ = unix.Kill(p, unix.SIGKILL)
	}
	return nil
}

// Stats are a container's resource usage from its cgroup.
type Stats struct {
	CPUUsageNanos    uint64 `json:"cpuUsageNanos"`
	CPUUserNanos     uint64 `json:"cpuUserNanos"`
	CPUSystemNanos   uint64 `json:"cpuSystemNanos"`
	MemoryUsageBytes uint64 `json:"memoryUsageBytes"`
	MemoryLimitBytes uint64 `json:"memoryLimitBytes"`
	// WorkingSetBytes is usage minus inactive file pages (what kubelet reports).
	WorkingSetBytes uint64 `json:"workingSetBytes"`
	Pids            uint64 `json:"pids"`
}

// Stats reads the container's cgroup (v1 or v2).
func (c *Container) Stats() (*Stats, error) {
	st, err := c.lc.Stats()
	if err != nil {
		return nil, fmt.Errorf("stats of container %s: %w", c.name, err)
	}
	if st.CgroupStats == nil {
		return nil, fmt.Errorf("stats of container %s: no cgroup stats", c.name)
	}
	cs := st.CgroupStats
	out := &Stats{
		CPUUsageNanos:    cs.CpuStats.CpuUsage.TotalUsage,
		CPUUserNanos:     cs.CpuStats.CpuUsage.UsageInUsermode,
		CPUSystemNanos:   cs.CpuStats.CpuUsage.UsageInKernelmode,
		MemoryUsageBytes: cs.MemoryStats.Usage.Usage,
		MemoryLimitBytes: cs.MemoryStats.Usage.Limit,
		Pids:             cs.PidsStats.Current,
	}
	inactive := cs.MemoryStats.Stats["total_inactive_file"] // v1
	if v, ok := cs.MemoryStats.Stats["inactive_file"]; ok && inactive == 0 {
		inactive = v // v2
	}
	if out.MemoryUsageBytes > inactive {
		out.WorkingSetBytes = out.MemoryUsageBytes - inactive
	}
	return out, nil
}

// Process is a process exec'd into a running container.
type Process struct {
	container *Container
	proc      *libcontainer.Process
	stdio     *stdio
	done      chan struct{}
	exitCode  int
	exitErr   error
}

// ExecOptions say how to attach an exec'd process.
type ExecOptions struct {
	TTY   bool
	Stdin bool
	// Env is appended to the container's environment (KEY=VALUE). Usually empty.
	Env []string
}

// execOutputGrace bounds how long an exited exec's output pipes stay open unread.
const execOutputGrace = 30 * time.Second

// Exec runs argv in the running container (its namespaces, cgroup, user, capabilities and
// working directory). The agent must have checked the sealed exec policy first.
func (c *Container) Exec(ctx context.Context, argv []string, o ExecOptions) (*Process, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("exec in container %s: empty argv", c.name)
	}
	c.mu.Lock()
	started, deleted := c.started, c.deleted
	c.mu.Unlock()
	if deleted {
		return nil, fmt.Errorf("exec in container %s: %w", c.name, ErrUnknownContainer)
	}
	if !started {
		return nil, fmt.Errorf("exec in container %s: %w", c.name, ErrNotStarted)
	}
	select {
	case <-c.done:
		return nil, fmt.Errorf("exec in container %s: %w", c.name, libcontainer.ErrNotRunning)
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	base := c.proc
	p := &libcontainer.Process{
		Args:             argv,
		Env:              append(append([]string(nil), base.Env...), o.Env...),
		UID:              base.UID,
		GID:              base.GID,
		AdditionalGroups: base.AdditionalGroups,
		Cwd:              base.Cwd,
		NoNewPrivileges:  base.NoNewPrivileges,
		Init:             false,
	}
	st, err := newStdio(o.TTY, o.Stdin)
	if err != nil {
		return nil, fmt.Errorf("exec in container %s: %w", c.name, err)
	}
	st.attach(p)
	if err := c.lc.Run(p); err != nil {
		st.closeAll()
		return nil, fmt.Errorf("exec %q in container %s: %w", argv[0], c.name, err)
	}
	if err := st.afterStart(); err != nil {
		_ = p.Signal(unix.SIGKILL)
		_, _ = p.Wait()
		st.closeAll()
		return nil, fmt.Errorf("exec in container %s: %w", c.name, err)
	}
	ep := &Process{container: c, proc: p, stdio: st, done: make(chan struct{})}
	c.execMu.Lock()
	c.execs = append(c.execs, ep)
	c.execMu.Unlock()
	go func() {
		ps, err := p.Wait()
		ep.exitCode, ep.exitErr = exitCodeOf(ps, err)
		close(ep.done)
		// Exec probes run every few seconds for the life of the container: free each one's
		// pipes and bookkeeping once it is over.
		st.releaseAfterExit(ep.done, execOutputGrace)
		c.execMu.Lock()
		c.execs = slices.DeleteFunc(c.execs, func(x *Process) bool { return x == ep })
		c.execMu.Unlock()
	}()
	return ep, nil
}

// Stdout / Stderr / Stdin / Resize: as for Container.
func (p *Process) Stdout() io.Reader                 { return p.stdio.stdout() }
func (p *Process) Stderr() io.Reader                 { return p.stdio.stderr() }
func (p *Process) Stdin() io.WriteCloser             { return p.stdio.stdin() }
func (p *Process) Resize(width, height uint16) error { return p.stdio.resize(width, height) }
func (p *Process) Done() <-chan struct{}             { return p.done }
func (p *Process) Signal(sig syscall.Signal) error   { return p.proc.Signal(sig) }

// Wait returns the exec'd process's exit code (128+N when killed by signal N).
func (p *Process) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
		return p.exitCode, p.exitErr
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// Close releases the process's stdio (after Wait).
func (p *Process) Close() { p.stdio.closeAll() }

// destroy kills everything, waits, destroys cgroup and state, closes stdio, removes rootfs.
func (c *Container) destroy(ctx context.Context) error {
	c.mu.Lock()
	c.deleted = true
	c.mu.Unlock()
	select {
	case <-c.done:
	default:
		if err := c.lc.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
			c.log.Warn("kill container", "err", err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	select {
	case <-c.done:
	case <-wctx.Done():
		return fmt.Errorf("container %s: main process did not exit after SIGKILL: %w", c.name, wctx.Err())
	}
	_ = c.killAll()
	// Exec'd processes are in the container's cgroup: SIGKILLed above; reap them.
	c.execMu.Lock()
	execs := c.execs
	c.execs = nil
	c.execMu.Unlock()
	for _, p := range execs {
		select {
		case <-p.done:
		case <-wctx.Done():
			return fmt.Errorf("container %s: exec'd process did not exit: %w", c.name, wctx.Err())
		}
		p.stdio.closeAll()
	}
	if err := c.lc.Destroy(); err != nil {
		return fmt.Errorf("destroy container %s: %w", c.name, err)
	}
	c.stdio.closeAll()
	if err := removeTree(c.dir); err != nil {
		return err
	}
	c.log.Info("container deleted")
	return nil
}
