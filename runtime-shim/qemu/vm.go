package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotRunning is returned by RSS (and signals) once QEMU has exited.
var ErrNotRunning = errors.New("qemu is not running")

// StartOptions are the host-side settings of a VM start.
type StartOptions struct {
	// Console receives every line of the guest's serial console (ttyS0), "\n"-terminated.
	// nil discards them. The console is host-visible: the agent redacts sealed values.
	Console io.Writer
	// Logger gets the VM's lifecycle events (nil = slog.Default()).
	Logger *slog.Logger
	// KeepOnParentDeath disables the parent-death signal. By default QEMU gets SIGKILL when
	// the thread that started it dies, so a crashed shim leaves no VM behind.
	KeepOnParentDeath bool
	// Credential, if set, is the uid and gid QEMU runs as (set before exec; with no
	// supplementary groups unless Credential.Groups lists some). The caller opens, as root,
	// whatever QEMU needs (tap, listening sockets) and passes descriptors.
	Credential *syscall.Credential
	// Cgroup, if set, is an open cgroup v2 directory QEMU is born in (clone3
	// CLONE_INTO_CGROUP): QEMU and all its threads are charged to it from the first page.
	Cgroup *os.File
	// JoinCgroup, if set, is called with the thread id of the locked OS thread that forks QEMU,
	// just before the fork (cgroup v1: the caller writes the tid to the controllers' tasks
	// files, so QEMU inherits them). That thread ends once QEMU has exited.
	JoinCgroup func(tid int) error
	// Host says where the hardware-boundary check (CheckHost) looks; zero = the real host.
	Host HostOptions
}

// VM is a running QEMU.
type VM struct {
	cmd     *exec.Cmd
	path    string
	started time.Time
	log     *slog.Logger

	mu      sync.Mutex
	stderr  bytes.Buffer
	stopped bool // Stop or Kill was called

	done    chan struct{}
	exitErr error

	bootFiles []string // the -initrd and -kernel files (Start only): ReleaseBootFiles
}

// Start builds cfg's command and starts QEMU in its own process group. The VM outlives the
// caller's request: nothing but Stop, Kill or the guest powering off ends it (there is no
// context: a shim's RPC context ends long before the pod does).
//
// Before QEMU runs, CheckHost checks the hardware boundary: a host without /dev/kvm (accel
// kvm) or whose QEMU lacks the TEE's object fails with a *HostLacksError naming it.
func Start(cfg Config, opts StartOptions) (*VM, error) {
	c, err := cfg.Command()
	if err != nil {
		return nil, err
	}
	if err := CheckHost(cfg, opts.Host); err != nil {
		return nil, fmt.Errorf("qemu start %s: %w", c.Path, err)
	}
	vm, err := StartCommand(c, opts)
	if err != nil {
		return nil, err
	}
	for _, p := range []string{cfg.Guest.Initrd, cfg.Guest.Kernel} {
		if p != "" {
			vm.bootFiles = append(vm.bootFiles, p)
		}
	}
	return vm, nil
}

// StartCommand starts a command built by Config.Command.
func StartCommand(c *Command, opts StartOptions) (*VM, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	cmd := exec.Command(c.Path, c.Args...)
	cmd.ExtraFiles = c.ExtraFiles
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !opts.KeepOnParentDeath {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if cr := opts.Credential; cr != nil {
		if cr.Uid == 0 || cr.Gid == 0 {
			return nil, fmt.Errorf("qemu %s: credential %d:%d: refusing to drop to root", c.Path, cr.Uid, cr.Gid)
		}
		cred := *cr
		if cred.Groups == nil {
			cred.Groups = []uint32{} // setgroups(0): drop the caller's supplementary groups
		}
		cred.NoSetGroups = false
		cmd.SysProcAttr.Credential = &cred
	}
	if opts.Cgroup != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(opts.Cgroup.Fd())
	}
	cmd.Stdin = nil // /dev/null
	vm := &VM{cmd: cmd, path: c.Path, log: log, done: make(chan struct{})}
	cmd.Stderr = &capWriter{mu: &vm.mu, w: &vm.stderr, limit: 64 << 10}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("qemu %s: stdout pipe: %w", c.Path, err)
	}
	vm.started = time.Now()
	if err := vm.start(!opts.KeepOnParentDeath, opts.JoinCgroup); err != nil {
		stdout.Close()
		return nil, fmt.Errorf("qemu start %s: %w", c.Path, err)
	}
	log.Info("qemu started", "pid", cmd.Process.Pid, "binary", c.Path)
	go vm.run(stdout, opts.Console)
	return vm, nil
}

// start forks QEMU. With the parent-death signal, the kernel delivers it when the *thread*
// that forked exits, and the Go runtime ends threads whose goroutine exits while locked to
// them (golang/go#27505): so the fork happens on a locked thread kept alive until QEMU exits.
// With join, that thread first joins QEMU's cgroups (v1) and is ended, not reused, afterwards.
func (vm *VM) start(pdeathsig bool, join func(tid int) error) error {
	if !pdeathsig && join == nil {
		return vm.cmd.Start()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		var err error
		if join != nil {
			if err = join(syscall.Gettid()); err != nil {
				err = fmt.Errorf("join cgroup: %w", err)
			}
		}
		if err == nil {
			err = vm.cmd.Start()
		}
		errc <- err
		if err == nil {
			<-vm.done
		}
		if join == nil {
			runtime.UnlockOSThread()
		} // else: the goroutine returns locked, so the runtime ends the thread (in the pod's cgroup)
	}()
	return <-errc
}

type capWriter struct {
	mu    *sync.Mutex
	w     *bytes.Buffer
	limit int
}

func (l *capWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.limit - l.w.Len(); room > 0 {
		l.w.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (vm *VM) run(stdout io.Reader, console io.Writer) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if console != nil {
			line := strings.TrimRight(sc.Text(), "\r")
			io.WriteString(console, line+"\n")
		}
	}
	// A console line over 1 MiB stops the scanner: keep draining so QEMU never blocks.
	io.Copy(io.Discard, stdout)
	err := vm.cmd.Wait()
	vm.mu.Lock()
	vm.exitErr = err
	stopped := vm.stopped
	vm.mu.Unlock()
	close(vm.done)
	vm.log.Info("qemu exited", "pid", vm.cmd.Process.Pid, "status", exitStatus(err), "requested", stopped,
		"uptime_ms", time.Since(vm.started).Milliseconds())
}

func exitStatus(err error) string {
	if err == nil {
		return "0"
	}
	return err.Error()
}

// PID is QEMU's process id (also its process group id).
func (vm *VM) PID() int { return vm.cmd.Process.Pid }

// Started is when QEMU was started.
func (vm *VM) Started() time.Time { return vm.started }

// Exited is closed once QEMU has exited and its output is fully read.
func (vm *VM) Exited() <-chan struct{} { return vm.done }

// Stderr returns what QEMU wrote to stderr (first 64 KiB): its own errors, never the console.
func (vm *VM) Stderr() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.stderr.String()
}

// ExitError is QEMU's exit error: nil while running and after exit status 0.
func (vm *VM) ExitError() error {
	select {
	case <-vm.done:
	default:
		return nil
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.exitErr
}

func (vm *VM) exited() bool {
	select {
	case <-vm.done:
		return true
	default:
		return false
	}
}

// Wait waits for QEMU to exit. It returns nil for exit status 0 (the guest powered off with
// -no-reboot), an error with QEMU's stderr otherwise, and ctx's error (QEMU left running) if
// ctx ends first.
func (vm *VM) Wait(ctx context.Context) error {
	select {
	case <-vm.done:
	case <-ctx.Done():
		return fmt.Errorf("qemu pid %d: waiting for exit: %w", vm.PID(), ctx.Err())
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.exitErr == nil {
		return nil
	}
	if vm.stopped {
		return fmt.Errorf("qemu pid %d: stopped: %w", vm.PID(), vm.exitErr)
	}
	return fmt.Errorf("qemu pid %d: %w\n--- qemu stderr ---\n%s", vm.PID(), vm.exitErr, vm.stderr.String())
}

// signalGroup sends sig to QEMU's process group; ESRCH (already gone) is not an error.
func (vm *VM) signalGroup(sig syscall.Signal) error {
	if err := syscall.Kill(-vm.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("qemu pid %d: %s: %w", vm.cmd.Process.Pid, sig, err)
	}
	return nil
}

// Stop ends QEMU: SIGTERM to its process group (QEMU exits cleanly on it), then SIGKILL if it
// has not exited after grace. It returns once QEMU has exited; safe to call repeatedly and
// after QEMU exited by itself.
func (vm *VM) Stop(grace time.Duration) error {
	if vm.exited() {
		return nil
	}
	vm.mu.Lock()
	vm.stopped = true
	vm.mu.Unlock()
	if err := vm.signalGroup(syscall.SIGTERM); err != nil {
		return err
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-vm.done:
		return nil
	case <-t.C:
	}
	vm.log.Warn("qemu ignored SIGTERM, killing", "pid", vm.PID(), "grace", grace)
	return vm.Kill()
}

// Kill sends SIGKILL to QEMU's process group and waits for it to exit.
func (vm *VM) Kill() error {
	if vm.exited() {
		return nil
	}
	vm.mu.Lock()
	vm.stopped = true
	vm.mu.Unlock()
	if err := vm.signalGroup(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-vm.done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("qemu pid %d: still running 30 s after SIGKILL", vm.PID())
	}
}

// RSS returns QEMU's resident set size in bytes (VmRSS of /proc/<pid>/status).
func (vm *VM) RSS() (uint64, error) {
	if vm.exited() {
		return 0, fmt.Errorf("qemu pid %d: %w", vm.PID(), ErrNotRunning)
	}
	return ReadRSS(vm.PID())
}

// ReadRSS returns the VmRSS of process pid in bytes.
func ReadRSS(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("rss of pid %d: %w", pid, ErrNotRunning)
		}
		return 0, fmt.Errorf("rss of pid %d: %w", pid, err)
	}
	return ParseVmRSS(b)
}

// ParseVmRSS extracts VmRSS (in bytes) from the contents of /proc/<pid>/status.
func ParseVmRSS(status []byte) (uint64, error) {
	for _, line := range strings.Split(string(status), "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("proc status VmRSS: %q: want \"<n> kB\"", strings.TrimSpace(rest))
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil || n > 1<<44 {
			return 0, fmt.Errorf("proc status VmRSS: %q is not a size in kB", f[0])
		}
		return n * 1024, nil
	}
	return 0, errors.New("proc status: no VmRSS line (a kernel thread or a zombie)")
}
