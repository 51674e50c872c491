// Package guestinit is the skeleton shared by the test-only /init programs that tests boot in
// QEMU (tests/guest testinit and volumeinit, runtime-shim/qemu netguest, hack/cmd/volbench
// volbench-init): console lines with a prefix, the early mounts, the virtio disk of a serial,
// and "done" or "FAIL <error>" followed by power-off, as PID 1 must never return. Production guests run the agent, which has its own (agent/boot).
package guestinit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Console prints lines with a fixed prefix ("sealpod-testinit: ").
type Console string

// Say prints one console line.
func (c Console) Say(format string, args ...any) {
	fmt.Fprintf(os.Stdout, string(c)+format+"\n", args...)
}

// Main runs run, says "done" or "FAIL <error>", syncs and powers the VM off (QEMU exits with
// -no-reboot); it never returns.
func (c Console) Main(run func() error) {
	if err := run(); err != nil {
		c.Say("FAIL %v", err)
	} else {
		c.Say("done")
	}
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		c.Say("FAIL power off: %v", err)
	}
	select {}
}

// MountEarly mounts /proc, /sys and /dev (devtmpfs) with flags.
func MountEarly(flags uintptr) error {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, flags, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	return nil
}

// DiskBySerial finds the virtio disk whose serial the host set (/sys/block/vd*/serial) and
// returns its node, /dev/vdX.
func DiskBySerial(serial string) (string, error) { return diskBySerial("/sys/block", serial) }

func diskBySerial(sysBlock, serial string) (string, error) {
	files, _ := filepath.Glob(filepath.Join(sysBlock, "vd*", "serial"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.TrimSpace(string(b)) == serial {
			return "/dev/" + filepath.Base(filepath.Dir(f)), nil
		}
	}
	return "", fmt.Errorf("no virtio disk with serial %s", serial)
}
