package boot

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// fileID identifies a file (device and inode).
type fileID struct {
	Dev, Ino uint64
}

// moved counts what moveTree moved.
type moved struct {
	Bytes int64 // regular-file bytes copied
	Files int   // entries moved or removed
}

// moveTree moves everything under src (one file system; dst itself and other mounts are
// skipped) into dst, keeping modes, owners, symlinks, device nodes and hard links; each
// entry is removed from src once copied, so the memory cost peaks at one file. The file
// with inode skip (the running agent) is removed without being copied: the process keeps
// its mapping, /proc/self/exe still opens it, and nothing of it stays reachable by path.
func moveTree(src, dst string, skip fileID) (moved, error) {
	var st moved
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
			if (fileID{Dev: uint64(s.Dev), Ino: s.Ino}) == skip {
				if err := os.Remove(p); err != nil {
					return fmt.Errorf("remove %s: %w", p, err)
				}
				st.Files++
				return nil
			}
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
