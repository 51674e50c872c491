// Package qemuvm starts a Sealpod guest under QEMU for tests: direct kernel boot
// (-kernel/-initrd/-append), software emulation by default (TCG: KVM does not work on the CI
// machines), the serial console (ttyS0) captured line by line, optional virtio-serial ports
// backed by unix sockets, optional user-mode networking, and a kill that leaves no process
// behind.
//
// API (shared by the boot smoke test and the end-to-end harness in tests/guest):
//
//	vm, err := qemuvm.Start(ctx, qemuvm.Config{
//	    Kernel: "out/guest/vmlinuz", Initrd: "out/guest/initrd.img", Append: cfg.Cmdline,
//	    MemoryMiB: 512, VCPUs: 1,
//	    Ports:   []qemuvm.Port{{Name: "sealpod.agent", Socket: dir + "/agent.sock"}},
//	    UserNet: true,       // guest reaches the host's loopback services at 10.0.2.2
//	    RNG:     true,       // virtio-rng-pci
//	})
//	defer vm.Kill()
//	line, err := vm.WaitFor(ctx, "agent ready")  // first console line containing the text
//	err = vm.Wait(ctx)                            // QEMU exited (guest powered off): nil if exit 0
//
// StartT(t, ctx, cfg) does the same and registers Kill and a console dump (on failure) with
// t.Cleanup. Every console line is also copied to Config.ConsoleLog when set.
//
// Ports: with Connect false (the default) QEMU listens on Socket (server=on,wait=off) and the
// test dials it, reconnecting freely; with Connect true QEMU dials a listener the test created
// before Start. Socket paths must be shorter than 108 bytes (sun_path): use a short
// os.MkdirTemp("", "sp") directory rather than t.TempDir(). Names and paths must not contain
// commas (QEMU option syntax).
//
// Process hygiene: QEMU runs in its own process group with the parent-death signal set to
// SIGKILL; Kill sends SIGKILL to the group and waits; cancelling the Start context kills too.
package qemuvm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultBinary is the QEMU system emulator looked up in PATH.
const DefaultBinary = "qemu-system-x86_64"

// ErrExited is returned by WaitFor when QEMU exits before the line appears.
var ErrExited = errors.New("qemu exited")

// Port is one virtio-serial port (virtserialport) backed by a unix socket chardev.
type Port struct {
	// Name is what the guest sees in /sys/class/virtio-ports/*/name (e.g. sealpod.agent).
	Name string
	// Socket is the unix socket path (< 108 bytes).
	Socket string
	// Connect makes QEMU connect to an existing listener instead of listening itself.
	Connect bool
}

// Config describes one VM.
type Config struct {
	// Binary is the QEMU executable; "" = DefaultBinary from PATH.
	Binary string
	// Kernel, Initrd and Append are the direct-boot kernel, initrd and command line.
	Kernel, Initrd, Append string
	// Firmware is an optional -bios image (default: QEMU's SeaBIOS).
	Firmware string
	// MemoryMiB (default 512) and VCPUs (default 1).
	MemoryMiB, VCPUs int
	// Machine (default "q35"), CPU (default "max") and Accel (default "tcg").
	Machine, CPU, Accel string
	// Ports are virtio-serial ports on one virtio-serial-pci controller.
	Ports []Port
	// UserNet adds a virtio-net-pci NIC on QEMU user-mode networking (guest 10.0.2.15,
	// host loopback reachable at 10.0.2.2). HostForwards adds hostfwd rules
	// ("tcp:127.0.0.1:8022-:22").
	UserNet      bool
	HostForwards []string
	// RNG adds virtio-rng-pci (entropy from the host's /dev/urandom).
	RNG bool
	// ExtraArgs are appended verbatim.
	ExtraArgs []string
	// ConsoleLog, if set, receives every console line (with "\n").
	ConsoleLog io.Writer
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.Binary == "" {
		d.Binary = DefaultBinary
	}
	if d.MemoryMiB == 0 {
		d.MemoryMiB = 512
	}
	if d.VCPUs == 0 {
		d.VCPUs = 1
	}
	if d.Machine == "" {
		d.Machine = "q35"
	}
	if d.CPU == "" {
		d.CPU = "max"
	}
	if d.Accel == "" {
		d.Accel = "tcg"
	}
	return d
}

func checkOpt(what, v string) error {
	if strings.ContainsAny(v, ",\x00\n") {
		return fmt.Errorf("qemuvm: %s %q: must not contain commas, NULs or newlines", what, v)
	}
	return nil
}

// Args returns the QEMU command line (without the binary) for the configuration.
func (c *Config) Args() ([]string, error) {
	d := c.withDefaults()
	if d.Kernel == "" {
		return nil, errors.New("qemuvm: Kernel: required")
	}
	for what, v := range map[string]string{"Kernel": d.Kernel, "Initrd": d.Initrd, "Firmware": d.Firmware,
		"Machine": d.Machine, "CPU": d.CPU, "Accel": d.Accel} {
		if err := checkOpt(what, v); err != nil {
			return nil, err
		}
	}
	args := []string{
		"-nodefaults", "-no-user-config", "-no-reboot",
		"-display", "none", "-monitor", "none",
		"-machine", d.Machine + ",accel=" + d.Accel,
		"-cpu", d.CPU,
		"-smp", strconv.Itoa(d.VCPUs),
		"-m", strconv.Itoa(d.MemoryMiB),
		"-chardev", "stdio,id=con0,signal=off",
		"-serial", "chardev:con0",
		"-kernel", d.Kernel,
	}
	if d.Initrd != "" {
		args = append(args, "-initrd", d.Initrd)
	}
	if d.Append != "" {
		args = append(args, "-append", d.Append)
	}
	if d.Firmware != "" {
		args = append(args, "-bios", d.Firmware)
	}
	if len(d.Ports) > 0 {
		args = append(args, "-device", "virtio-serial-pci,id=vser0")
		seen := map[string]bool{}
		for i, p := range d.Ports {
			if p.Name == "" || seen[p.Name] {
				return nil, fmt.Errorf("qemuvm: port %d: name %q empty or repeated", i, p.Name)
			}
			seen[p.Name] = true
			if err := checkOpt("port name", p.Name); err != nil {
				return nil, err
			}
			if err := checkOpt("port socket", p.Socket); err != nil {
				return nil, err
			}
			if p.Socket == "" || len(p.Socket) >= 108 {
				return nil, fmt.Errorf("qemuvm: port %s: socket path %q: empty or longer than 107 bytes", p.Name, p.Socket)
			}
			server := "server=on,wait=off"
			if p.Connect {
				server = "server=off"
			}
			id := "port" + strconv.Itoa(i)
			args = append(args,
				"-chardev", "socket,id="+id+",path="+p.Socket+","+server,
				"-device", "virtserialport,bus=vser0.0,chardev="+id+",name="+p.Name)
		}
	}
	if d.UserNet {
		netdev := "user,id=net0"
		for _, f := range d.HostForwards {
			if err := checkOpt("host forward", f); err != nil {
				return nil, err
			}
			netdev += ",hostfwd=" + f
		}
		// romfile= : no iPXE option ROM, nothing to run before the kernel.
		args = append(args, "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,romfile=")
	}
	if d.RNG {
		args = append(args, "-object", "rng-random,id=rng0,filename=/dev/urandom",
			"-device", "virtio-rng-pci,rng=rng0")
	}
	return append(args, d.ExtraArgs...), nil
}

// VM is a running QEMU.
type VM struct {
	cmd     *exec.Cmd
	started time.Time

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on every new line and on exit
	stderr  bytes.Buffer

	done    chan struct{}
	exitErr error
	killed  bool
}

// Available returns the path of the QEMU binary, or an error saying how to install it.
func Available() (string, error) {
	p, err := exec.LookPath(DefaultBinary)
	if err != nil {
		return "", fmt.Errorf("%s not found: install Debian's qemu-system-x86 (apt-get install -y qemu-system-x86): %w", DefaultBinary, err)
	}
	return p, nil
}

// Start launches QEMU. Cancelling ctx kills it.
func Start(ctx context.Context, cfg Config) (*VM, error) {
	args, err := cfg.Args()
	if err != nil {
		return nil, err
	}
	d := cfg.withDefaults()
	cmd := exec.CommandContext(ctx, d.Binary, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	vm := &VM{cmd: cmd, changed: make(chan struct{}), done: make(chan struct{})}
	cmd.Stderr = &lockedWriter{mu: &vm.mu, w: &vm.stderr, limit: 64 << 10}
	vm.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemuvm: start %s: %w", d.Binary, err)
	}
	go vm.readConsole(stdout, d.ConsoleLog)
	return vm, nil
}

type lockedWriter struct {
	mu    *sync.Mutex
	w     *bytes.Buffer
	limit int
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.limit - l.w.Len(); room > 0 {
		if len(p) > room {
			l.w.Write(p[:room])
		} else {
			l.w.Write(p)
		}
	}
	return len(p), nil
}

func (vm *VM) readConsole(r io.Reader, log io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if log != nil {
			fmt.Fprintln(log, line)
		}
		vm.mu.Lock()
		vm.lines = append(vm.lines, line)
		close(vm.changed)
		vm.changed = make(chan struct{})
		vm.mu.Unlock()
	}
	err := vm.cmd.Wait()
	vm.mu.Lock()
	vm.exitErr = err
	close(vm.done) // before waking waiters, so that they see the exit
	close(vm.changed)
	vm.changed = make(chan struct{})
	vm.mu.Unlock()
}

// Started is when QEMU was started.
func (vm *VM) Started() time.Time { return vm.started }

// PID is QEMU's process id.
func (vm *VM) PID() int { return vm.cmd.Process.Pid }

// Lines returns the console lines so far.
func (vm *VM) Lines() []string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return append([]string(nil), vm.lines...)
}

// Console returns the console output so far, one line per line.
func (vm *VM) Console() string {
	return strings.Join(vm.Lines(), "\n")
}

// Stderr returns what QEMU itself wrote to stderr (first 64 KiB).
func (vm *VM) Stderr() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.stderr.String()
}

// Exited is closed when QEMU has exited and its console is fully read.
func (vm *VM) Exited() <-chan struct{} { return vm.done }

// WaitFor returns the first console line (from the start of the boot) containing substr. It
// fails when ctx ends or QEMU exits first; the error carries the console tail and QEMU's stderr.
func (vm *VM) WaitFor(ctx context.Context, substr string) (string, error) {
	return vm.WaitMatch(ctx, substr, func(l string) bool { return strings.Contains(l, substr) })
}

// WaitMatch is WaitFor with a predicate; what names it in errors.
func (vm *VM) WaitMatch(ctx context.Context, what string, match func(line string) bool) (string, error) {
	next := 0
	for {
		vm.mu.Lock()
		lines, changed := vm.lines[next:], vm.changed
		exited := vm.isDone()
		vm.mu.Unlock()
		for _, l := range lines {
			if match(l) {
				return l, nil
			}
		}
		next += len(lines)
		if exited {
			return "", fmt.Errorf("qemuvm: waiting for %q: %w (%v)%s", what, ErrExited, vm.exitError(), vm.tail())
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return "", fmt.Errorf("qemuvm: waiting for %q: %w%s", what, ctx.Err(), vm.tail())
		}
	}
}

func (vm *VM) isDone() bool {
	select {
	case <-vm.done:
		return true
	default:
		return false
	}
}

func (vm *VM) exitError() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.exitErr
}

// tail formats the last console lines and QEMU's stderr for error messages.
func (vm *VM) tail() string {
	lines := vm.Lines()
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	s := "\n--- console (last lines) ---\n" + strings.Join(lines, "\n")
	if e := strings.TrimSpace(vm.Stderr()); e != "" {
		s += "\n--- qemu stderr ---\n" + e
	}
	return s
}

// Wait waits for QEMU to exit (e.g. the guest powered off with -no-reboot). It returns nil
// for exit status 0, an error otherwise, and ctx's error (leaving QEMU running) if ctx ends.
func (vm *VM) Wait(ctx context.Context) error {
	select {
	case <-vm.done:
	case <-ctx.Done():
		return fmt.Errorf("qemuvm: waiting for exit: %w", ctx.Err())
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.exitErr != nil {
		if vm.killed {
			return fmt.Errorf("qemuvm: killed: %w", vm.exitErr)
		}
		return fmt.Errorf("qemuvm: %w\n--- qemu stderr ---\n%s", vm.exitErr, vm.stderr.String())
	}
	return nil
}

// Kill stops QEMU (SIGKILL to its process group) and waits for it; safe to call repeatedly
// and after QEMU has exited.
func (vm *VM) Kill() error {
	if vm.isDone() {
		return nil
	}
	vm.mu.Lock()
	vm.killed = true
	vm.mu.Unlock()
	if err := syscall.Kill(-vm.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("qemuvm: kill %d: %w", vm.cmd.Process.Pid, err)
	}
	select {
	case <-vm.done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("qemuvm: pid %d did not exit after SIGKILL", vm.cmd.Process.Pid)
	}
}

// TB is the subset of testing.TB that StartT uses.
type TB interface {
	Helper()
	Cleanup(func())
	Failed() bool
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// StartT starts the VM for a test: on cleanup it kills QEMU and, if the test failed, logs the
// console and QEMU's stderr. QEMU is killed when ctx ends.
func StartT(t TB, ctx context.Context, cfg Config) *VM {
	t.Helper()
	vm, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := vm.Kill(); err != nil {
			t.Logf("%v", err)
		}
		if t.Failed() {
			t.Logf("qemu console:\n%s\nqemu stderr:\n%s", vm.Console(), vm.Stderr())
		}
	})
	return vm
}

// ShortTempDir makes a directory under os.TempDir() with a short path, suitable for unix
// sockets, and returns it with its cleanup.
func ShortTempDir() (string, func(), error) {
	d, err := os.MkdirTemp("", "sp")
	if err != nil {
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}
