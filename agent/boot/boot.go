// Package boot does the agent's PID-1 duties in the guest: the early mounts, kernel module
// loading (agent/kmod), waiting for the entropy pool, reading the agent's options from the
// measured kernel command line, detecting the TEE, and powering off.
package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/agent/kmod"
)

type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

var earlyMounts = []mount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"configfs", "/sys/kernel/config", "configfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
}

// Mount makes the early file systems; an already mounted target is skipped, configfs is
// optional (configfs-tsm for SNP/TDX reports lives there when the kernel has it).
func Mount(log *slog.Logger) error {
	for _, m := range earlyMounts {
		if m.fstype == "proc" && procMounted() {
			continue // the first stage of RunFromSealedCopy mounted it
		}
		err := os.MkdirAll(m.target, 0o755)
		if err == nil {
			err = unix.Mount(m.source, m.target, m.fstype, m.flags, m.data)
		}
		switch {
		case err == nil, errors.Is(err, unix.EBUSY):
		case m.fstype == "configfs":
			log.Debug("configfs not available", "err", err)
		default:
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	if _, err := os.Lstat("/dev/ptmx"); err == nil {
		_ = os.Remove("/dev/ptmx")
	}
	if err := os.Symlink("pts/ptmx", "/dev/ptmx"); err != nil {
		return fmt.Errorf("link /dev/ptmx: %w", err)
	}
	for _, l := range [][2]string{{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"}, {"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"}} {
		_ = os.Symlink(l[0], l[1])
	}
	return nil
}

// procMounted reports whether /proc is a proc file system.
func procMounted() bool {
	var sfs unix.Statfs_t
	return unix.Statfs("/proc", &sfs) == nil && sfs.Type == unix.PROC_SUPER_MAGIC
}

// mountProc mounts /proc as Mount does, unless it is there.
func mountProc() error {
	if procMounted() {
		return nil
	}
	m := earlyMounts[0]
	if err := os.MkdirAll(m.target, 0o555); err != nil {
		return fmt.Errorf("mkdir %s: %w", m.target, err)
	}
	if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
	}
	return nil
}

// MountTmpfs mounts a private tmpfs at dir (the TLS directory, container state).
func MountTmpfs(dir, mode string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", dir, err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode="+mode); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

// LoadModules loads the initrd's modules in load-order. A kernel with its drivers built in
// has no /lib/modules/<release> in the initrd: then the result is empty (Absent), no error.
// It does not log: the console stays quiet until the agent channel is up.
func LoadModules() (*kmod.Result, error) {
	dir, err := kmod.DefaultDir()
	if err != nil {
		return &kmod.Result{}, err
	}
	res, err := kmod.LoadAll(dir)
	if err != nil {
		return res, fmt.Errorf("load modules from %s: %w", dir, err)
	}
	return res, nil
}

// WaitEntropy blocks until the kernel's CRNG is initialised and returns how long that took.
// It calls the blocking getrandom(2), through which the kernel also generates jitter entropy
// while it waits (Linux >= 5.4), instead of polling: no poll interval is added to the wait.
func WaitEntropy(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	var b [1]byte
	if _, err := unix.Getrandom(b[:], unix.GRND_NONBLOCK); err == nil {
		return 0, nil // the usual case: ready before /init ran
	} else if !errors.Is(err, unix.EAGAIN) {
		return 0, fmt.Errorf("getrandom: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		var b [1]byte
		for {
			_, err := unix.Getrandom(b[:], 0)
			if !errors.Is(err, unix.EINTR) {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			return time.Since(start), fmt.Errorf("getrandom: %w", err)
		}
		return time.Since(start), nil
	case <-ctx.Done():
		return time.Since(start), fmt.Errorf("waiting for entropy: %w", ctx.Err())
	}
}

// Options are the agent's settings from the kernel command line. The command line is part
// of the launch measurement, so these are the owner's choices, not the host's.
type Options struct {
	// InsecureRegistries ("host:port") may be pulled from over plain HTTP: dev/test guests
	// only (sealpod.insecure_registries=a,b). Digests are still verified.
	InsecureRegistries []string
	// Debug enables debug logs (sealpod.debug=1).
	Debug bool
}

// ParseCmdline reads the sealpod.* parameters of a kernel command line.
func ParseCmdline(cmdline string) (Options, error) {
	var o Options
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "sealpod.insecure_registries":
			for _, r := range strings.Split(v, ",") {
				if r == "" || strings.ContainsAny(r, "/@ ") {
					return o, fmt.Errorf("kernel command line: sealpod.insecure_registries: %q is not host:port", r)
				}
				o.InsecureRegistries = append(o.InsecureRegistries, r)
			}
		case "sealpod.debug":
			o.Debug = v == "1" || v == "true"
		}
	}
	return o, nil
}

// Uptime is the time since the kernel started (CLOCK_BOOTTIME, the clock of /proc/uptime);
// 0 if the clock cannot be read.
func Uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// PowerOff syncs and powers the guest off; it does not return on success.
func PowerOff(log *slog.Logger) {
	log.Info("powering off")
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		log.Error("power off", "err", err)
	}
}
