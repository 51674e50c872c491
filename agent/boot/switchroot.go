package boot

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel unpacks the initrd into the initial ramfs ("rootfs"), which can never be
// unmounted, so pivot_root(2) refuses it as the old root and container runtimes fall back to
// MS_MOVE+chroot — which a root process with CAP_SYS_CHROOT leaves with the classic chroot
// escape, landing in the agent's root (its keys, the workload certificate, other containers).
// LeaveInitramfs does what switch_root does for a real root: it moves the initramfs content
// into a tmpfs, moves that tmpfs onto "/", chroots into it and re-executes the agent from
// there. Containers then get pivot_root and lose every path to the agent's root.

const (
	newRootDir = "/.sealpod-root"
	// rootSwitchEnv carries the cost of the switch across the re-exec, for the boot log only.
	rootSwitchEnv = "SEALPOD_ROOT_SWITCH"
)

// ErrInitramfsRoot: "/" is still the initial ramfs (pivot_root impossible).
var ErrInitramfsRoot = errors.New(`"/" is the initial ramfs`)

// RootSwitch is what LeaveInitramfs did before re-executing the agent.
type RootSwitch struct {
	Duration time.Duration
	Bytes    int64 // regular-file bytes moved to the tmpfs
	Files    int   // entries moved
}

// LeaveInitramfs makes a tmpfs the root when "/" is the initramfs and re-executes the agent
// (exe, the agent's absolute path, with the same arguments and environment): it does not
// return then, except with an error. When "/" is not the initramfs it returns nil at once.
// It must run before anything is mounted: it mounts /proc to look and unmounts it again.
func LeaveInitramfs(exe string) error {
	if !filepath.IsAbs(exe) {
		return fmt.Errorf("leave initramfs: agent path %q is not absolute", exe)
	}
	onRootfs, err := rootIsInitramfs()
	if err != nil || !onRootfs {
		return err
	}
	start := time.Now()
	if err := os.MkdirAll(newRootDir, 0o755); err != nil {
		return fmt.Errorf("leave initramfs: mkdir %s: %w", newRootDir, err)
	}
	if err := unix.Mount("tmpfs", newRootDir, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("leave initramfs: mount tmpfs on %s: %w", newRootDir, err)
	}
	st, err := moveTree("/", newRootDir)
	if err != nil {
		return fmt.Errorf("leave initramfs: %w", err)
	}
	if err := unix.Chdir(newRootDir); err != nil {
		return fmt.Errorf("leave initramfs: chdir %s: %w", newRootDir, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("leave initramfs: move %s onto /: %w", newRootDir, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("leave initramfs: chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("leave initramfs: chdir /: %w", err)
	}
	st.Duration = time.Since(start)
	env := append(os.Environ(), fmt.Sprintf("%s=%d,%d,%d", rootSwitchEnv, st.Duration.Microseconds(), st.Bytes, st.Files))
	err = unix.Exec(exe, os.Args, env)
	return fmt.Errorf("leave initramfs: re-execute %s: %w", exe, err)
}

// SwitchedRoot reports the root switch of the previous incarnation of this PID 1 (false when
// there was none) and removes its variable from the environment.
func SwitchedRoot() (RootSwitch, bool) {
	v, ok := os.LookupEnv(rootSwitchEnv)
	if !ok {
		return RootSwitch{}, false
	}
	_ = os.Unsetenv(rootSwitchEnv)
	var n [3]int64
	parts := strings.Split(v, ",")
	if len(parts) != len(n) {
		return RootSwitch{}, false
	}
	for i, p := range parts {
		x, err := strconv.ParseInt(p, 10, 64)
		if err != nil || x < 0 {
			return RootSwitch{}, false
		}
		n[i] = x
	}
	return RootSwitch{Duration: time.Duration(n[0]) * time.Microsecond, Bytes: n[1], Files: int(n[2])}, true
}

// rootIsInitramfs mounts /proc (if not yet), reads the file system type of "/" and unmounts
// /proc again when it mounted it.
func rootIsInitramfs() (bool, error) {
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
	fstype, err := RootFSType(f)
	f.Close()
	if mounted {
		if uerr := unix.Unmount("/proc", 0); uerr != nil && err == nil {
			err = fmt.Errorf("unmount /proc: %w", uerr)
		}
	}
	if err != nil {
		return false, err
	}
	return fstype == "rootfs", nil
}

// RootFSType returns the file system type of the last mount on "/" in a mountinfo table
// ("rootfs" for the initial ramfs).
func RootFSType(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	root := ""
	for sc.Scan() {
		// id parent major:minor root mountpoint opts ... - fstype source superopts
		line := sc.Text()
		if f := strings.Fields(line); len(f) < 5 || f[4] != "/" {
			continue
		}
		if _, rest, ok := strings.Cut(line, " - "); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				root = f[0]
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	if root == "" {
		return "", errors.New("mountinfo: no mount on /")
	}
	return root, nil
}

// moveTree moves everything under src (one file system; dst itself and other mounts are
// skipped) into dst, keeping modes, owners, symlinks, device nodes and hard links; each
// entry is removed from src once copied, so the memory cost peaks at one file.
func moveTree(src, dst string) (RootSwitch, error) {
	var st RootSwitch
	var srcStat unix.Stat_t
	if err := unix.Lstat(src, &srcStat); err != nil {
		return st, fmt.Errorf("stat %s: %w", src, err)
	}
	type dir struct {
		src, dst string
		uid, gid int
		mode     uint32
	}
	links := map[uint64]string{} // inode → path in dst, for hard links
	var dirs []dir               // parents first
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		var s unix.Stat_t
		if err := unix.Lstat(p, &s); err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		if p == dst || s.Dev != srcStat.Dev {
			if d.IsDir() {
				return filepath.SkipDir // dst, or a mount point: not part of the initramfs
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		mode := uint32(s.Mode)
		switch s.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if err := os.Mkdir(target, 0o700); err != nil {
				return fmt.Errorf("mkdir %s: %w", target, err)
			}
			// Mode and owner after the content (a read-only directory would refuse it).
			dirs = append(dirs, dir{p, target, int(s.Uid), int(s.Gid), mode & 0o7777})
			st.Files++
			return nil
		case unix.S_IFREG:
			// The count drops as the source links are removed: look the inode up first.
			if first, ok := links[s.Ino]; ok {
				if err := os.Link(first, target); err != nil {
					return fmt.Errorf("link %s: %w", target, err)
				}
			} else {
				n, err := copyFile(p, target, mode&0o7777)
				if err != nil {
					return err
				}
				st.Bytes += n
				if s.Nlink > 1 {
					links[s.Ino] = target
				}
			}
		case unix.S_IFLNK:
			l, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("readlink %s: %w", p, err)
			}
			if err := os.Symlink(l, target); err != nil {
				return fmt.Errorf("symlink %s: %w", target, err)
			}
		case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
			if err := unix.Mknod(target, mode, int(s.Rdev)); err != nil {
				return fmt.Errorf("mknod %s: %w", target, err)
			}
		default:
			return fmt.Errorf("%s: unknown file type %#o", p, s.Mode&unix.S_IFMT)
		}
		if err := unix.Lchown(target, int(s.Uid), int(s.Gid)); err != nil {
			return fmt.Errorf("chown %s: %w", target, err)
		}
		if s.Mode&unix.S_IFMT != unix.S_IFLNK {
			if err := unix.Chmod(target, mode&0o7777); err != nil { // after chown, which clears set-id bits
				return fmt.Errorf("chmod %s: %w", target, err)
			}
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("remove %s: %w", p, err)
		}
		st.Files++
		return nil
	})
	if err != nil {
		return st, err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if err := unix.Lchown(d.dst, d.uid, d.gid); err != nil {
			return st, fmt.Errorf("chown %s: %w", d.dst, err)
		}
		if err := unix.Chmod(d.dst, d.mode); err != nil {
			return st, fmt.Errorf("chmod %s: %w", d.dst, err)
		}
		_ = os.Remove(d.src) // best effort: frees the initramfs dentries
	}
	return st, nil
}

func copyFile(src, dst string, perm uint32) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fs.FileMode(perm&0o777)|0o200)
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", dst, err)
	}
	n, err := io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("copy %s: %w", src, err)
	}
	return n, nil
}
