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
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/runtime-shim/config"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
)

// vmSpec is what one pod VM boots and where its host-side files live.
type vmSpec struct {
	QEMU, Accel string
	// TEE is the one the node offers that the pod was sealed for (chooseTEE).
	TEE tee.TEE
	// HostData is the envelope digest: SNP HOST_DATA, TDX MRCONFIGID (padded by qemu).
	HostData []byte
	// SNP and TDX are the node's launch parameters of those TEEs (node config).
	SNP qemu.SNPOptions
	TDX qemu.TDXOptions
	// Host is where the hardware-boundary check looks (zero: the real host; tests).
	Host    qemu.HostOptions
	Name    string // -name, visible in ps: sealpod-<sandbox id prefix>
	Dir     string // per-pod state directory: sockets, pidfile, console log
	Guest   *bundle.Bundle
	Network string
	NIC     *qemu.NIC // network "tap": the tap from runtime-shim/netns
	// UID and GID are QEMU's unprivileged user (node config qemuUID/qemuGID; never 0).
	UID, GID uint32
	// Cgroup is the pod's cgroup QEMU runs in (the sandbox's linux.cgroupsPath).
	Cgroup *podCgroup
	// Volumes are the pod's sealed volumes (annotation sealpod.io/volumes): one empty PCIe
	// root port each, and a QMP socket to hot-plug them (volumes.go).
	Volumes *podVolumes
	// EmulatedBIOS is the node config's emulatedBIOS (sim and sim-tdx only).
	EmulatedBIOS string

	console *consoleLog
}

func (v *vmSpec) agentSocket() string { return filepath.Join(v.Dir, "agent.sock") }
func (v *vmSpec) spSocket() string    { return filepath.Join(v.Dir, "sp.sock") }
func (v *vmSpec) pidFile() string     { return filepath.Join(v.Dir, "qemu.pid") }
func (v *vmSpec) consoleLog() string  { return filepath.Join(v.Dir, "console.log") }
func (v *vmSpec) qmpSocket() string   { return filepath.Join(v.Dir, "qmp.sock") }

// qemuConfig is the runtime-shim/qemu configuration of the pod VM for its TEE. QEMU writes
// nothing in the state directory: the shim writes the pid file and passes listening sockets.
// Kernel, initrd, firmware, command line and vCPUs are the guest bundle's as measured
// (qemu.GuestFromBundle reads them where measure.BundleInputs does).
func (v *vmSpec) qemuConfig() (qemu.Config, error) {
	c := qemu.Config{
		Binary: v.QEMU, TEE: v.TEE, Accel: qemu.Accel(v.Accel), Guest: qemu.GuestFromBundle(v.Guest),
		AgentSocket: v.agentSocket(), Name: v.Name,
	}
	switch v.TEE {
	case tee.Sim, tee.SimTDX, tee.SimPEF:
		// Emulated: the shim plays the TEE on the sealpod.sim-sp port.
		c.SimSPSocket = v.spSocket()
		if bios := v.EmulatedBIOS; v.TEE != tee.SimPEF && v.Guest.Firmware == nil && bios != "" && bios != config.EmulatedBIOSSeaBIOS {
			if _, err := os.Stat(bios); err != nil {
				return c, fmt.Errorf("node config emulatedBIOS: %w (install qemu-system-data, or set it to %q)", err, config.EmulatedBIOSSeaBIOS)
			}
			c.EmulatedBIOS = bios
		}
	case tee.SNP:
		if v.Guest.Firmware == nil {
			return c, fmt.Errorf("tee snp: the guest bundle has no %s (the AmdSev OVMF build with the kernel-hashes table; docs/hardware.md)", bundle.FirmwareFile)
		}
		c.HostData, c.SNP = v.HostData, v.SNP
	case tee.TDX:
		if v.Guest.Firmware == nil {
			return c, fmt.Errorf("tee tdx: the guest bundle has no %s (a TDVF build; docs/hardware.md)", bundle.FirmwareFile)
		}
		c.HostData, c.TDX = v.HostData, v.TDX
	default:
		return c, fmt.Errorf("tee %q: this shim launches sim, sim-tdx, sim-pef, snp and tdx guests", v.TEE)
	}
	switch v.Network {
	case config.NetworkUser:
		// QEMU user-mode networking: the guest is 10.0.2.15 (qemu.UserNetMAC) and reaches the
		// host's loopback at 10.0.2.2.
		c.NIC = &qemu.NIC{User: true, MAC: qemu.UserNetMAC()}
	case config.NetworkTap:
		if v.NIC == nil {
			return c, fmt.Errorf("qemu network tap: no tap device")
		}
		c.NIC = v.NIC
	default:
		return c, fmt.Errorf("qemu network %q: want user or tap", v.Network)
	}
	if n := v.Volumes.count(); n > 0 {
		c.QMPSocket, c.HotplugSlots = v.qmpSocket(), n
	}
	return c, c.Validate()
}

// startQEMU starts the VM as spec's unprivileged user, in spec's cgroup, under QEMU's seccomp
// sandbox; a host without what the TEE needs (KVM, QEMU's TEE object) fails here with a
// *qemu.HostLacksError naming it. The shim (root) binds the agent and sim-sp sockets and passes them listening, so
// QEMU needs no write access anywhere; it gets read access (group) to the guest files only.
// The guest console goes to a bounded console.log in the state directory.
func startQEMU(spec *vmSpec, log *slog.Logger) (*qemu.VM, error) {
	if spec.UID == 0 || spec.GID == 0 {
		return nil, fmt.Errorf("qemu user %d:%d: QEMU does not run as root", spec.UID, spec.GID)
	}
	cfg, err := spec.qemuConfig()
	if err != nil {
		return nil, err
	}
	if err := shareGuestFiles(spec); err != nil {
		return nil, err
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close() // QEMU holds its own copies
		}
	}()
	type listener struct {
		path string
		dst  **os.File
	}
	socks := []listener{{spec.agentSocket(), &cfg.AgentListener}}
	if cfg.SimSPSocket != "" { // emulated TEEs: the shim serves the sim-sp port
		socks = append(socks, listener{spec.spSocket(), &cfg.SimSPListener})
	}
	if cfg.QMPSocket != "" { // sealed volumes: the shim hot-plugs them over QMP
		socks = append(socks, listener{cfg.QMPSocket, &cfg.QMPListener})
	}
	for _, l := range socks {
		f, err := listenUnix(l.path)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
		*l.dst = f
	}
	console, err := openConsoleLog(spec.consoleLog(), consoleKeep)
	if err != nil {
		return nil, err
	}
	opts := qemu.StartOptions{Console: console, Logger: log, Credential: &syscall.Credential{Uid: spec.UID, Gid: spec.GID}, Host: spec.Host}
	if cg := spec.Cgroup; cg != nil {
		if cg.v2 != nil {
			opts.Cgroup = cg.v2
		} else {
			opts.JoinCgroup = cg.joinThread
		}
	}
	vm, err := qemu.Start(cfg, opts)
	if err != nil {
		console.Close()
		return nil, err
	}
	spec.console = console
	if err := os.WriteFile(spec.pidFile(), []byte(strconv.Itoa(vm.PID())+"\n"), 0o600); err != nil {
		log.Warn("qemu pid file", "path", spec.pidFile(), "err", err)
	}
	go func() {
		<-vm.Exited()
		console.Close()
		if n := console.Dropped(); n > 0 {
			log.Warn("guest console output dropped (bounded console log)", "bytes", n, "kept_max", consoleKeep)
		}
	}()
	return vm, nil
}

// listenUnix binds and listens on a unix socket at path and returns it as a file to pass to
// QEMU (the socket file stays; the state directory is removed with the pod).
func listenUnix(path string) (*os.File, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		f.Close()
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := syscall.Listen(fd, 4); err != nil {
		f.Close()
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return f, nil
}

// shareGuestFiles gives QEMU's group read access to the guest files and search access to the
// directories above them inside the state directory; the state directory stays owned by root
// and unwritable for QEMU.
func shareGuestFiles(spec *vmSpec) error {
	gid := int(spec.GID)
	guestDir := spec.Guest.Dir
	rel, err := filepath.Rel(spec.Dir, guestDir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return nil // guest files outside the state directory (tests): left as they are
	}
	// The state directory (the pods' parent) must be searchable to reach a pod's guest files;
	// it stays unlistable for others (0711) unless the operator made it more open.
	if parent := filepath.Dir(spec.Dir); parent != "/" {
		st, err := os.Stat(parent)
		if err != nil {
			return fmt.Errorf("qemu access to %s: %w", parent, err)
		}
		if st.Mode().Perm()&0o011 != 0o011 {
			if err := os.Chmod(parent, st.Mode().Perm()|0o011); err != nil {
				return fmt.Errorf("qemu access to %s: %w", parent, err)
			}
		}
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{spec.Dir, 0o710}, {guestDir, 0o750}} {
		if err := os.Chown(d.path, 0, gid); err != nil {
			return fmt.Errorf("qemu access to %s: %w", d.path, err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return fmt.Errorf("qemu access to %s: %w", d.path, err)
		}
	}
	ents, err := os.ReadDir(guestDir)
	if err != nil {
		return fmt.Errorf("qemu access to %s: %w", guestDir, err)
	}
	for _, e := range ents {
		p := filepath.Join(guestDir, e.Name())
		if !e.Type().IsRegular() {
			continue
		}
		if err := os.Chown(p, 0, gid); err != nil {
			return fmt.Errorf("qemu access to %s: %w", p, err)
		}
		if err := os.Chmod(p, 0o440); err != nil {
			return fmt.Errorf("qemu access to %s: %w", p, err)
		}
	}
	return nil
}

func vmExited(vm *qemu.VM) bool {
	select {
	case <-vm.Exited():
		return true
	default:
		return false
	}
}

// killStale kills a QEMU left by a dead shim (pidfile in dir), checking it is that pod's QEMU
// (its -kernel is the pod's guest kernel).
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
	if err != nil || !strings.Contains(string(cmdline), "\x00"+filepath.Join(dir, "guest", bundle.KernelFile)+"\x00") {
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
