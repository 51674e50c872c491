package shim

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/runtime-shim/config"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
)

// guestMAC is the guest NIC's MAC address under user-mode networking.
const guestMAC = "52:54:00:12:34:56"

// vmSpec is what one pod VM boots and where its host-side files live.
type vmSpec struct {
	QEMU, Accel string
	Name        string // -name, visible in ps: sealpod-<sandbox id prefix>
	Dir         string // per-pod state directory: sockets, pidfile, console log
	Guest       *bundle.Bundle
	Network     string
	NIC         *qemu.NIC // network "tap": the tap from runtime-shim/netns
}

func (v *vmSpec) agentSocket() string { return filepath.Join(v.Dir, "agent.sock") }
func (v *vmSpec) spSocket() string    { return filepath.Join(v.Dir, "sp.sock") }
func (v *vmSpec) pidFile() string     { return filepath.Join(v.Dir, "qemu.pid") }
func (v *vmSpec) consoleLog() string  { return filepath.Join(v.Dir, "console.log") }

// userNetArgs is QEMU user-mode networking (network "user"): the guest is 10.0.2.15 and
// reaches the host's loopback at 10.0.2.2. runtime-shim/qemu has no option for it (production
// pods get a tap from runtime-shim/netns), so it goes in as extra arguments.
func userNetArgs() []string {
	return []string{"-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,mac=" + guestMAC + ",romfile="}
}

// qemuConfig is the runtime-shim/qemu configuration of the pod VM (sim TEE).
func (v *vmSpec) qemuConfig() (qemu.Config, error) {
	c := qemu.Config{
		Binary: v.QEMU, TEE: qemu.TEESim, Accel: qemu.Accel(v.Accel), Guest: qemu.GuestFromBundle(v.Guest),
		AgentSocket: v.agentSocket(), SimSPSocket: v.spSocket(), PIDFile: v.pidFile(), Name: v.Name,
	}
	switch v.Network {
	case config.NetworkUser:
		c.ExtraArgs = userNetArgs()
	case config.NetworkTap:
		if v.NIC == nil {
			return c, fmt.Errorf("qemu network tap: no tap device")
		}
		c.NIC = v.NIC
	default:
		return c, fmt.Errorf("qemu network %q: want user or tap", v.Network)
	}
	return c, c.Validate()
}

// startQEMU starts the VM; the guest console goes to console.log in the state directory.
func startQEMU(spec *vmSpec, log *slog.Logger) (*qemu.VM, error) {
	cfg, err := spec.qemuConfig()
	if err != nil {
		return nil, err
	}
	console, err := os.OpenFile(spec.consoleLog(), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("console log: %w", err)
	}
	vm, err := qemu.Start(cfg, qemu.StartOptions{Console: console, Logger: log})
	if err != nil {
		console.Close()
		return nil, err
	}
	go func() { <-vm.Exited(); console.Close() }()
	return vm, nil
}

func vmExited(vm *qemu.VM) bool {
	select {
	case <-vm.Exited():
		return true
	default:
		return false
	}
}

// killStale kills a QEMU left by a dead shim (pidfile in dir), checking it is QEMU.
func killStale(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "qemu.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), filepath.Join(dir, "agent.sock")) {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

func dialUnix(ctx context.Context, path string) (*unixConn, error) {
	for {
		c, err := dialOnce(path)
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial %s: %w (%v)", path, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
