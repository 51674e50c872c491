// Package qemuvm boots Sealpod guests for the guest test suite (tests/guest) and the volume
// benchmark (hack/cmd/volbench) with the shim's QEMU launcher, runtime-shim/qemu: the command line is built by the same qemu.Config.Command
// (golden files per TEE in runtime-shim/qemu/testdata) and run by the same qemu.Start (own
// process group, parent-death SIGKILL, QEMU's -sandbox). This package adds only what tests
// and benchmarks need around it: the serial console (ttyS0) kept line by line to wait on, a kill bound to a
// context, and cleanup with a console dump on failure.
//
//	b, _ := bundle.Load(guestDir)
//	dir, cleanup, _ := qemuvm.ShortTempDir()            // unix socket paths < 108 bytes
//	cfg := qemuvm.SimConfig(b, dir)                      // sim TEE, TCG, user networking
//	vm := qemuvm.StartT(t, ctx, cfg)                     // killed at cleanup or when ctx ends
//	line, err := vm.WaitFor(ctx, "agent ready")          // first console line containing the text
//	err = vm.Wait(ctx)                                   // QEMU exited: nil if exit status 0
//
// QEMU listens on cfg.AgentSocket (sealpod.agent) and cfg.SimSPSocket (sealpod.sim-sp), as
// under the shim; the test dials them and plays the shim's part (the agent API client, the
// simulated AMD-SP). Under user networking the guest is 10.0.2.15 with MAC
// qemu.UserNetMAC() and reaches the host's loopback services at 10.0.2.2.
package qemuvm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
)

// ErrExited is returned by WaitFor when QEMU exits before the line appears.
var ErrExited = errors.New("qemu exited")

// Available returns the path of the QEMU binary the sim TEE runs, or an error saying how to
// install it.
func Available() (string, error) {
	p, err := exec.LookPath(qemu.BinaryX86)
	if err != nil {
		return "", fmt.Errorf("%s not found: install Debian's qemu-system-x86 (apt-get install -y qemu-system-x86): %w", qemu.BinaryX86, err)
	}
	return p, nil
}

// SimConfig is the sim VM of the guest suite for bundle b: software emulation (TCG), the
// bundle's kernel, initrd, command line and size, QEMU listening on dir/agent.sock and
// dir/sim-sp.sock, and user-mode networking. Callers may change the Guest (another initrd,
// extra command-line words) before starting it.
func SimConfig(b *bundle.Bundle, dir string) qemu.Config {
	return qemu.Config{
		TEE: qemu.TEESim, Accel: qemu.AccelTCG, Guest: qemu.GuestFromBundle(b),
		AgentSocket: filepath.Join(dir, "agent.sock"), SimSPSocket: filepath.Join(dir, "sim-sp.sock"),
		NIC: &qemu.NIC{User: true, MAC: qemu.UserNetMAC()},
	}
}

// VM is a QEMU started by runtime-shim/qemu with its console kept for the test.
type VM struct {
	*qemu.VM
	con *console
}

// console keeps every line QEMU's launcher hands to StartOptions.Console.
type console struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	changed chan struct{} // closed and replaced on every new line
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = append(c.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		c.lines = append(c.lines, string(c.partial[:i]))
		c.partial = c.partial[i+1:]
		added = true
	}
	if added {
		close(c.changed)
		c.changed = make(chan struct{})
	}
	return len(p), nil
}

// Start starts cfg with runtime-shim/qemu. Cancelling ctx kills QEMU.
func Start(ctx context.Context, cfg qemu.Config) (*VM, error) {
	con := &console{changed: make(chan struct{})}
	v, err := qemu.Start(cfg, qemu.StartOptions{Console: con, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, fmt.Errorf("qemuvm: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { v.Kill() })
	go func() {
		<-v.Exited()
		stop()
	}()
	return &VM{VM: v, con: con}, nil
}

// Lines returns the console lines so far.
func (vm *VM) Lines() []string {
	vm.con.mu.Lock()
	defer vm.con.mu.Unlock()
	return append([]string(nil), vm.con.lines...)
}

// Console returns the console output so far, one line per line.
func (vm *VM) Console() string { return strings.Join(vm.Lines(), "\n") }

// WaitFor returns the first console line (from the start of the boot) containing substr. It
// fails when ctx ends or QEMU exits first; the error carries the console tail and QEMU's stderr.
func (vm *VM) WaitFor(ctx context.Context, substr string) (string, error) {
	return vm.WaitMatch(ctx, substr, func(l string) bool { return strings.Contains(l, substr) })
}

// WaitMatch is WaitFor with a predicate; what names it in errors.
func (vm *VM) WaitMatch(ctx context.Context, what string, match func(line string) bool) (string, error) {
	next := 0
	for {
		// Exited is closed only after the launcher has passed on the last console line: if
		// QEMU had exited before the lines are read, they are all there.
		exited := isClosed(vm.Exited())
		vm.con.mu.Lock()
		lines, changed := vm.con.lines[next:], vm.con.changed
		vm.con.mu.Unlock()
		for _, l := range lines {
			if match(l) {
				return l, nil
			}
		}
		next += len(lines)
		if exited {
			return "", fmt.Errorf("qemuvm: waiting for %q: %w (%v)%s", what, ErrExited, vm.ExitError(), vm.Tail())
		}
		select {
		case <-changed:
		case <-vm.Exited():
		case <-ctx.Done():
			return "", fmt.Errorf("qemuvm: waiting for %q: %w%s", what, ctx.Err(), vm.Tail())
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Tail formats the last console lines and QEMU's stderr for error messages (it starts with a
// newline).
func (vm *VM) Tail() string {
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
func StartT(t TB, ctx context.Context, cfg qemu.Config) *VM {
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
// sockets (sun_path: 107 bytes), and returns it with its cleanup.
func ShortTempDir() (string, func(), error) {
	d, err := os.MkdirTemp("", "sp")
	if err != nil {
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}
