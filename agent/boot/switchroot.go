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
// LeaveInitramfs does what switch_root does, cheaply: it mounts a tmpfs, moves the initramfs
// content into it, moves the tmpfs onto "/" (MS_MOVE) and chroots into it. The running agent
// binary (/init) is not copied: it is unlinked from rootfs and keeps running from its mapping
// (/proc/self/exe still opens it), so with the minimal kernel nothing is copied at all and
// there is no re-exec. rootfs is left empty. That matters beyond pivot_root: every mount
// namespace keeps a copy of the tree's root mount (rootfs) underneath everything, and a
// container with CAP_SYS_ADMIN can uncover it (umount2("/", MNT_DETACH) + setns into its own
// namespace): it then finds an empty, separate file system, never the agent's root
// (tests/guest TestContainerIsolation, agent/boot TestSwitchRoot).

// newRootDir is where the tmpfs is mounted before it is moved onto "/".
const newRootDir = "/.sealpod-root"

// RootSwitch is what LeaveInitramfs did.
type RootSwitch struct {
	// Switched: "/" was the initial ramfs and is now a tmpfs with a parent.
	Switched bool
	// Duration of the whole call, detection included.
	Duration time.Duration
	// Bytes and Files moved (the agent binary is removed, not copied).
	Bytes int64
	Files int
}

// LeaveInitramfs makes "/" a tmpfs that pivot_root(2) accepts when it is the initial ramfs
// (see above); otherwise it changes nothing. It must run before anything else is mounted:
// it mounts /proc to look and unmounts it again.
func LeaveInitramfs() (RootSwitch, error) {
	start := time.Now()
	parentless, exe, err := rootIsParentless()
	if err != nil {
		return RootSwitch{}, fmt.Errorf("leave initramfs: %w", err)
	}
	if !parentless {
		return RootSwitch{Duration: time.Since(start)}, nil
	}
	m, err := switchRoot(newRootDir, exe)
	if err != nil {
		return RootSwitch{}, fmt.Errorf("leave initramfs: %w", err)
	}
	return RootSwitch{Switched: true, Duration: time.Since(start), Bytes: m.Bytes, Files: m.Files}, nil
}

// switchRoot mounts a tmpfs on dir (an absolute path in the root, created), moves the root's
// content into it (exe, the running binary, is unlinked instead), moves the tmpfs onto "/"
// and chroots into it. The working directory ends at the new "/".
func switchRoot(dir string, exe fileID) (moved, error) {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return moved{}, fmt.Errorf("mkdir %s: %w", dir, err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
		return moved{}, fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	m, err := moveTree("/", dir, exe)
	if err != nil {
		return m, err
	}
	if err := unix.Chdir(dir); err != nil {
		return m, fmt.Errorf("chdir %s: %w", dir, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return m, fmt.Errorf("move %s onto /: %w", dir, err)
	}
	if err := unix.Chroot("."); err != nil {
		return m, fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return m, fmt.Errorf("chdir /: %w", err)
	}
	return m, nil
}

// rootIsParentless reports whether "/" is a mount without a parent (the initial ramfs), and
// the running executable's identity. A root that is not a ramfs/tmpfs is answered from
// statfs alone; otherwise it mounts /proc (if not yet), reads mountinfo and unmounts /proc
// again when it mounted it.
func rootIsParentless() (parentless bool, exe fileID, err error) {
	var sfs unix.Statfs_t
	if err := unix.Statfs("/", &sfs); err != nil {
		return false, fileID{}, fmt.Errorf("statfs /: %w", err)
	}
	if sfs.Type != unix.RAMFS_MAGIC && sfs.Type != unix.TMPFS_MAGIC {
		return false, fileID{}, nil // a disk or overlay root: never the initial ramfs
	}
	if _, err := os.Stat("/proc/self/mountinfo"); err != nil {
		if err := os.MkdirAll("/proc", 0o555); err != nil {
			return false, fileID{}, fmt.Errorf("mkdir /proc: %w", err)
		}
		if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return false, fileID{}, fmt.Errorf("mount proc: %w", err)
		}
		defer func() {
			if uerr := unix.Unmount("/proc", 0); uerr != nil && err == nil {
				parentless, exe, err = false, fileID{}, fmt.Errorf("unmount /proc: %w", uerr)
			}
		}()
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return false, fileID{}, fmt.Errorf("stat /proc/self/exe: %w", err)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, fileID{}, fmt.Errorf("read mountinfo: %w", err)
	}
	m, err := RootMountOf(f)
	f.Close()
	if err != nil || !m.Parentless() {
		return false, fileID{}, err
	}
	return true, fileID{Dev: uint64(st.Dev), Ino: st.Ino}, nil
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
