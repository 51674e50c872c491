package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/agent/errkind"
)

// Errors a caller (or a test) may branch on. Every error from the extractor wraps one of these
// when the archive itself is at fault.
var (
	// ErrUnsafePath: an entry name or hard-link target is absolute or contains "..".
	ErrUnsafePath error = errkind.New("unsafe path in layer")
	// ErrDeviceNode: the layer contains a character or block device.
	ErrDeviceNode error = errkind.New("device node in layer")
	// ErrTooLarge: the layer (or the image) exceeds the configured size or entry limits.
	ErrTooLarge error = errkind.New("layer exceeds limits")
	// ErrBadEntry: an entry is malformed (unknown type, hard link to a directory, bad name...).
	ErrBadEntry error = errkind.New("bad layer entry")
)

// Limits bound what extraction may write. They are shared by all layers of one image, so a
// Limits value is consumed as layers are applied; do not reuse one across images.
type Limits struct {
	// MaxBytes is the total size of regular-file content (plus 512 bytes accounted per entry).
	MaxBytes int64
	// MaxEntries is the total number of tar entries.
	MaxEntries int64

	usedBytes   int64
	usedEntries int64
}

// Default limits: generous for a guest with a few hundred MiB of memory.
const (
	DefaultMaxBytes   = 2 << 30
	DefaultMaxEntries = 1 << 20
	maxNameLen        = 4096
	entryOverhead     = 512
)

func (l *Limits) charge(bytes int64) error {
	l.usedEntries++
	l.usedBytes += entryOverhead
	if bytes > 0 {
		l.usedBytes += bytes
	}
	if l.MaxEntries > 0 && l.usedEntries > l.MaxEntries {
		return fmt.Errorf("%w: more than %d entries", ErrTooLarge, l.MaxEntries)
	}
	if l.MaxBytes > 0 && l.usedBytes > l.MaxBytes {
		return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, l.MaxBytes)
	}
	return nil
}

const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// cleanName turns an archive name into a clean relative path ("a/b"), or "" for the root.
// Absolute names and names with a ".." component are refused: no legitimate image has them.
func cleanName(name string) (string, error) {
	if len(name) > maxNameLen {
		return "", fmt.Errorf("%w: name of %d bytes", ErrBadEntry, len(name))
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: NUL in name %q", ErrBadEntry, name)
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: absolute name %q", ErrUnsafePath, name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w: %q has a \"..\" component", ErrUnsafePath, name)
		}
	}
	p := path.Clean("/" + name)
	if p == "/" {
		return "", nil
	}
	return p[1:], nil
}

// layerApplier applies tar layers to one root directory.
type layerApplier struct {
	rootPath string
	root     *os.File // O_PATH handle on the root
	limits   *Limits
	// written holds the names this layer created, so that an opaque whiteout met after
	// its own directory's new entries keeps them.
	written map[string]bool
	// opaque directories seen in this layer, applied at the end of the layer.
	opaque []string
}

func newApplier(dir string, limits *Limits) (*layerApplier, error) {
	root, err := os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root %s: %w", dir, err)
	}
	if limits == nil {
		limits = &Limits{MaxBytes: DefaultMaxBytes, MaxEntries: DefaultMaxEntries}
	}
	return &layerApplier{rootPath: dir, root: root, limits: limits}, nil
}

func (a *layerApplier) Close() error { return a.root.Close() }

// clear removes everything under the root (which stays), never following a symlink.
func (a *layerApplier) clear() error {
	fd, err := pathrs.Reopen(a.root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return err
	}
	defer fd.Close()
	return removeChildren(int(fd.Fd()), nil)
}

// ExtractLayer applies one uncompressed tar layer (OCI layer semantics, including whiteouts)
// to dir, which must exist. Every path is resolved inside dir (symlinks included), so no
// entry can create or change anything outside it. Device nodes, absolute names and names with
// "..", and hard links to directories are refused. limits may be nil (defaults).
func ExtractLayer(r io.Reader, dir string, limits *Limits) error {
	a, err := newApplier(dir, limits)
	if err != nil {
		return err
	}
	defer a.Close()
	return a.apply(r)
}

func (a *layerApplier) apply(r io.Reader) error {
	a.written = map[string]bool{}
	a.opaque = nil
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: read tar: %v", ErrBadEntry, err)
		}
		if err := a.entry(hdr, tr); err != nil {
			return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
	}
	for _, d := range a.opaque {
		if err := a.clearOpaque(d); err != nil {
			return fmt.Errorf("opaque whiteout in %q: %w", d, err)
		}
	}
	return nil
}

// parent returns an O_PATH handle on the (created if needed) parent directory of name,
// resolved inside the root.
func (a *layerApplier) parent(name string) (*os.File, error) {
	dir := path.Dir(name)
	if dir == "." {
		dir = "/"
	}
	h, err := pathrs.MkdirAllHandle(a.root, dir, 0o755)
	if err != nil {
		return nil, fmt.Errorf("parent directory %q: %w", dir, err)
	}
	return h, nil
}

func (a *layerApplier) entry(hdr *tar.Header, tr *tar.Reader) error {
	var size int64
	if hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA {
		size = hdr.Size
	}
	if err := a.limits.charge(size); err != nil {
		return err
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	base := path.Base(name)

	// Whiteouts.
	if strings.HasPrefix(base, whiteoutPrefix) {
		if name == "" {
			return fmt.Errorf("%w: whiteout at root", ErrBadEntry)
		}
		dir := path.Dir(name)
		if base == whiteoutOpaque {
			a.opaque = append(a.opaque, dir)
			return nil
		}
		target := strings.TrimPrefix(base, whiteoutPrefix)
		if target == "" || target == "." || target == ".." {
			return fmt.Errorf("%w: whiteout of %q", ErrBadEntry, target)
		}
		p, err := pathrs.OpenatInRoot(a.root, dirOrRoot(dir))
		if err != nil {
			// The parent does not exist in the lower layers: nothing to remove.
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				return nil
			}
			return fmt.Errorf("whiteout parent %q: %w", dir, err)
		}
		defer p.Close()
		if err := removeAllAt(int(p.Fd()), target); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("whiteout %q: %w", target, err)
		}
		return nil
	}

	if name == "" {
		// The root itself: only its metadata may change.
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: root entry of type %q", ErrBadEntry, hdr.Typeflag)
		}
		return nil
	}

	for n := name; n != "." && n != ""; n = path.Dir(n) {
		a.written[n] = true
	}
	p, err := a.parent(name)
	if err != nil {
		return err
	}
	defer p.Close()
	pfd := int(p.Fd())
	mode := uint32(hdr.Mode) & 0o7777

	switch hdr.Typeflag {
	case tar.TypeDir:
		var st unix.Stat_t
		err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := unix.Unlinkat(pfd, base, 0); err != nil {
				return fmt.Errorf("replace %q by a directory: %w", name, err)
			}
			err = unix.ENOENT
		}
		if errors.Is(err, unix.ENOENT) {
			if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
				return fmt.Errorf("mkdir %q: %w", name, err)
			}
		} else if err != nil {
			return fmt.Errorf("stat %q: %w", name, err)
		}
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open directory %q: %w", name, err)
		}
		defer unix.Close(fd)
		return setMeta(fd, hdr, mode)

	case tar.TypeReg, tar.TypeRegA:
		if err := replaceable(pfd, base); err != nil {
			return fmt.Errorf("replace %q: %w", name, err)
		}
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("create %q: %w", name, err)
		}
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		n, err := io.Copy(f, io.LimitReader(tr, hdr.Size))
		if err != nil {
			return fmt.Errorf("write %q: %w", name, err)
		}
		if n != hdr.Size {
			return fmt.Errorf("%w: %q truncated (%d of %d bytes)", ErrBadEntry, name, n, hdr.Size)
		}
		return setMeta(fd, hdr, mode)

	case tar.TypeSymlink:
		if len(hdr.Linkname) > maxNameLen || strings.IndexByte(hdr.Linkname, 0) >= 0 || hdr.Linkname == "" {
			return fmt.Errorf("%w: symlink target of %q", ErrBadEntry, name)
		}
		if err := replaceable(pfd, base); err != nil {
			return fmt.Errorf("replace %q: %w", name, err)
		}
		// The target is stored as is: it is only ever resolved inside this root (by the
		// extractor here, and by the kernel inside the container's mount namespace).
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return fmt.Errorf("symlink %q: %w", name, err)
		}
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown %q: %w", name, err)
		}
		return setTimesAt(pfd, base, hdr)

	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hard link target: %w", err)
		}
		if target == "" {
			return fmt.Errorf("%w: hard link %q to the root", ErrBadEntry, name)
		}
		tdir := path.Dir(target)
		if tdir == "." {
			tdir = "/"
		}
		tp, err := pathrs.OpenatInRoot(a.root, tdir)
		if err != nil {
			return fmt.Errorf("hard link target directory %q: %w", tdir, err)
		}
		defer tp.Close()
		var st unix.Stat_t
		if err := unix.Fstatat(int(tp.Fd()), path.Base(target), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("hard link target %q: %w", target, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return fmt.Errorf("%w: hard link %q to directory %q", ErrBadEntry, name, target)
		}
		if err := replaceable(pfd, base); err != nil {
			return fmt.Errorf("replace %q: %w", name, err)
		}
		// flags 0: a symlink target is linked itself, never followed.
		if err := unix.Linkat(int(tp.Fd()), path.Base(target), pfd, base, 0); err != nil {
			return fmt.Errorf("hard link %q -> %q: %w", name, target, err)
		}
		return nil

	case tar.TypeFifo:
		if err := replaceable(pfd, base); err != nil {
			return fmt.Errorf("replace %q: %w", name, err)
		}
		if err := unix.Mkfifoat(pfd, base, 0o600); err != nil {
			return fmt.Errorf("mkfifo %q: %w", name, err)
		}
		fd, err := unix.Openat(pfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open fifo %q: %w", name, err)
		}
		defer unix.Close(fd)
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown %q: %w", name, err)
		}
		if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
			return fmt.Errorf("chmod %q: %w", name, err)
		}
		return nil

	case tar.TypeChar, tar.TypeBlock:
		return fmt.Errorf("%w: %q", ErrDeviceNode, name)

	case tar.TypeXGlobalHeader:
		return nil

	default:
		return fmt.Errorf("%w: %q has unsupported type %q", ErrBadEntry, name, hdr.Typeflag)
	}
}

// replaceable removes whatever non-directory is at base so that a new entry can take its
// place (later layers replace files of earlier ones). A directory is removed only if empty.
func replaceable(pfd int, base string) error {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return removeAllAt(pfd, base)
	}
	return unix.Unlinkat(pfd, base, 0)
}

// setMeta sets owner, mode and times on an open file or directory.
func setMeta(fd int, hdr *tar.Header, mode uint32) error {
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	// chmod after chown: chown clears set-id bits.
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	mt := hdr.ModTime
	if mt.IsZero() {
		mt = time.Unix(0, 0)
	}
	ts := []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
	if err := unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH); err != nil {
		// AT_EMPTY_PATH for utimensat needs a recent kernel; times are not essential.
		return nil
	}
	return nil
}

func setTimesAt(pfd int, base string, hdr *tar.Header) error {
	mt := hdr.ModTime
	if mt.IsZero() {
		mt = time.Unix(0, 0)
	}
	ts := []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
	_ = unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
	return nil
}

// removeAllAt removes base (a file, symlink or a whole directory tree) under the directory
// pfd without following any symlink.
func removeAllAt(pfd int, base string) error {
	err := unix.Unlinkat(pfd, base, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return err
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := removeChildren(fd, nil); err != nil {
		unix.Close(fd)
		return err
	}
	unix.Close(fd)
	return unix.Unlinkat(pfd, base, unix.AT_REMOVEDIR)
}

// removeChildren empties the directory fd, keeping the names for which keep returns true.
func removeChildren(fd int, keep func(string) bool) error {
	// Read through a dup so that closing the *os.File leaves the caller's fd open; read all
	// names before removing any, since removing while reading may skip entries.
	nfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(nfd), "dir")
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if keep != nil && keep(n) {
			continue
		}
		if err := removeAllAt(fd, n); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove %q: %w", n, err)
		}
	}
	return nil
}

// clearOpaque empties dir of everything that this layer did not itself write.
func (a *layerApplier) clearOpaque(dir string) error {
	h, err := pathrs.OpenatInRoot(a.root, dirOrRoot(dir))
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	defer h.Close()
	fd, err := pathrs.Reopen(h, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return err
	}
	defer fd.Close()
	prefix := ""
	if dir != "." && dir != "" {
		prefix = dir + "/"
	}
	return removeChildren(int(fd.Fd()), func(n string) bool { return a.written[prefix+n] })
}

func dirOrRoot(d string) string {
	if d == "." || d == "" {
		return "/"
	}
	return d
}
