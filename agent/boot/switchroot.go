package boot

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel unpacks the initrd into the initial ramfs ("rootfs"): the root of the mount tree,
// a mount without a parent. pivot_root(2) refuses such a root (EINVAL), and container runtimes
// then fall back to MS_MOVE+chroot — which a root process with CAP_SYS_CHROOT leaves with the
// classic chroot escape, landing in the agent's root (its keys, the workload certificate,
// other containers).
//
// LeaveInitramfs gives "/" a parent without copying anything: it bind-mounts "/" (MS_REC) on
// a directory, moves that bind mount onto "/" (MS_MOVE) and chroots into it. The agent's root
// is then a mount of the same initramfs stacked on rootfs; the process keeps running (no
// re-exec). In a container's mount namespace, runc's pivot_root moves that mount under the
// container's root and detaches it. A chroot escape from the container then climbs ("..")
// past the container's root to rootfs's root directory, where path lookup goes back down
// through the mounts stacked there: to the container's own root. Nothing of the agent's mounts
// (/run with the TLS keys, the container state) exists in that namespace any more. This is what
// switch_root achieves by copying, at the cost of a few system calls (tests/guest
// TestContainerIsolation checks the escape on the real rootfs).

// newRootDir is where "/" is bind-mounted for the move (in the initramfs; removed after).
const newRootDir = "/.sealpod-root"

// RootSwitch is what LeaveInitramfs did.
type RootSwitch struct {
	// Switched: "/" was the initial ramfs and is now a bind mount of it with a parent.
	Switched bool
	// Duration of the whole call, detection included.
	Duration time.Duration
}

// LeaveInitramfs makes "/" a mount that pivot_root(2) accepts when it is the initial ramfs
// (see above); otherwise it changes nothing. It must run before anything else is mounted:
// it mounts /proc to look and unmounts it again.
func LeaveInitramfs() (RootSwitch, error) {
	start := time.Now()
	parentless, err := rootIsParentless()
	if err != nil {
		return RootSwitch{}, fmt.Errorf("leave initramfs: %w", err)
	}
	if !parentless {
		return RootSwitch{Duration: time.Since(start)}, nil
	}
	if err := switchRoot(newRootDir); err != nil {
		return RootSwitch{}, fmt.Errorf("leave initramfs: %w", err)
	}
	return RootSwitch{Switched: true, Duration: time.Since(start)}, nil
}

// switchRoot makes the process's root a bind mount of itself, mounted on the old root (so it
// has a parent), through dir (an absolute path in the root; created if needed and removed
// again). The working directory ends at the new "/".
func switchRoot(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("mkdir %s: %w", dir, err)
	}
	if err := unix.Mount("/", dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind / on %s: %w", dir, err)
	}
	if err := unix.Chdir(dir); err != nil {
		return fmt.Errorf("chdir %s: %w", dir, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s onto /: %w", dir, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	// The directory is part of the same file system, so it is in the new root too; it is no
	// longer a mount point.
	if err := unix.Rmdir(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// rootIsParentless reports whether "/" is a mount without a parent (the initial ramfs). A
// root that is not a ramfs/tmpfs is answered from statfs alone; otherwise it mounts /proc
// (if not yet), reads mountinfo and unmounts /proc again when it mounted it.
func rootIsParentless() (bool, error) {
	var sfs unix.Statfs_t
	if err := unix.Statfs("/", &sfs); err != nil {
		return false, fmt.Errorf("statfs /: %w", err)
	}
	if sfs.Type != unix.RAMFS_MAGIC && sfs.Type != unix.TMPFS_MAGIC {
		return false, nil // a disk or overlay root: never the initial ramfs
	}
	mounted := false
	if _, err := os.Stat("/proc/self/mountinfo"); err != nil {
		if err := os.MkdirAll("/proc", 0o555); err != nil {
			return false, fmt.Errorf("mkdir /proc: %w", err)
		}
		if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return false, fmt.Errorf("mount proc: %w", err)
		}
		mounted = true
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("read mountinfo: %w", err)
	}
	m, err := RootMountOf(f)
	f.Close()
	if mounted {
		if uerr := unix.Unmount("/proc", 0); uerr != nil && err == nil {
			err = fmt.Errorf("unmount /proc: %w", uerr)
		}
	}
	if err != nil {
		return false, err
	}
	return m.Parentless(), nil
}

// RootMount is the mountinfo line of the mount on "/".
type RootMount struct {
	ID, Parent string
	FSType     string // "rootfs" for the initial ramfs and every bind mount of it
}

// Parentless reports whether the mount is the root of the mount tree (its parent is itself,
// as mountinfo shows it): pivot_root(2) is impossible from there.
func (m RootMount) Parentless() bool { return m.ID == m.Parent }

// RootMountOf returns the last mount on "/" in a mountinfo table (the one the process sees).
func RootMountOf(r io.Reader) (RootMount, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var root RootMount
	found := false
	for sc.Scan() {
		// id parent major:minor root mountpoint opts ... - fstype source superopts
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) < 5 || f[4] != "/" {
			continue
		}
		_, rest, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		tail := strings.Fields(rest)
		if len(tail) == 0 {
			continue
		}
		root, found = RootMount{ID: f[0], Parent: f[1], FSType: tail[0]}, true
	}
	if err := sc.Err(); err != nil {
		return RootMount{}, fmt.Errorf("read mountinfo: %w", err)
	}
	if !found {
		return RootMount{}, errors.New("mountinfo: no mount on /")
	}
	return root, nil
}
