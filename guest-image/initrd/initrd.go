// Package initrd writes (and reads back) the guest's initramfs: a "newc" cpio archive, made
// deterministic so that the same inputs always give the same bytes and therefore the same
// launch measurement.
//
// Determinism rules: entries are sorted by path (bytewise), owners are uid/gid 0, every mtime
// is 0, inode numbers are assigned 1, 2, 3, … in sorted order, nlink is 1 for files and 2 for
// directories, and missing parent directories are added with mode 0755. The archive may be
// LZ4-compressed (the legacy frame format the kernel's unlz4 reads), gzip-compressed (header
// without name or time) or left uncompressed; see docs/guest.md for the measured trade-off.
package initrd

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/pierrec/lz4/v4"
)

// MaxSize is the largest initrd (as written, i.e. after compression) that the guest build
// accepts (docs/guest.md#the-initrd, docs/design.md#targets).
const MaxSize = 32 << 20

// Compression selects how the cpio archive is stored.
type Compression string

// Supported compressions. The kernel detects the format from the magic bytes.
const (
	// CompressNone stores the cpio as is: fastest to boot under software emulation (the
	// kernel's inflate runs emulated) and independent of any compressor's output.
	CompressNone Compression = "none"
	// CompressGzip uses compress/gzip at the default level.
	CompressGzip Compression = "gzip"
	// CompressLZ4 uses LZ4 (high compression, legacy frames of 8 MiB as `lz4 -l` writes and
	// the kernel's unlz4 expects): about half the size of the archive, and decompressed by
	// the kernel much faster than gzip under emulation.
	CompressLZ4 Compression = "lz4"
	// CompressAuto picks none when the uncompressed archive fits the size limit, else gzip.
	CompressAuto Compression = "auto"
)

// ParseCompression validates a compression name.
func ParseCompression(s string) (Compression, error) {
	switch c := Compression(s); c {
	case CompressNone, CompressGzip, CompressLZ4, CompressAuto:
		return c, nil
	}
	return "", fmt.Errorf("initrd compression %q: unknown (want %s, %s, %s or %s)", s, CompressAuto, CompressNone, CompressLZ4, CompressGzip)
}

// Unix file type bits as stored in the cpio mode field.
const (
	modeTypeMask = 0o170000
	modeDir      = 0o040000
	modeRegular  = 0o100000
	modeSymlink  = 0o120000
	modeCharDev  = 0o020000
)

// Errors callers may branch on.
var (
	ErrBadPath   = errors.New("invalid path")
	ErrDuplicate = errors.New("duplicate entry")
	ErrTooLarge  = errors.New("initrd too large")
)

// Entry is one member of the archive.
type Entry struct {
	// Path is relative to the archive root, slash-separated and clean ("init", "lib/modules").
	Path string
	// Mode holds the file type (fs.ModeDir, fs.ModeSymlink, fs.ModeDevice|fs.ModeCharDevice or
	// none for a regular file) and the permission bits (setuid/setgid/sticky allowed).
	Mode fs.FileMode
	// Data is the content of a regular file or the target of a symlink.
	Data []byte
	// Major and Minor are the device numbers of a character device.
	Major, Minor uint32
}

// IsDir reports whether the entry is a directory.
func (e *Entry) IsDir() bool { return e.Mode&fs.ModeDir != 0 }

func (e *Entry) unixMode() uint32 {
	m := uint32(e.Mode.Perm())
	if e.Mode&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if e.Mode&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if e.Mode&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	switch {
	case e.Mode&fs.ModeDir != 0:
		return m | modeDir
	case e.Mode&fs.ModeSymlink != 0:
		return m | modeSymlink
	case e.Mode&fs.ModeCharDevice != 0:
		return m | modeCharDev
	default:
		return m | modeRegular
	}
}

// Archive collects entries and writes them as a deterministic newc cpio.
// The zero value is ready to use.
type Archive struct {
	entries  map[string]*Entry
	implicit map[string]bool // parent directories created by add, not by AddDir
}

// CleanPath validates an archive path: relative, slash-separated, already clean, no "..",
// no NUL. A leading "/" is accepted and removed.
func CleanPath(p string) (string, error) {
	q := strings.TrimPrefix(p, "/")
	if q == "" || q == "." || strings.ContainsRune(q, 0) || path.Clean(q) != q ||
		q == ".." || strings.HasPrefix(q, "../") {
		return "", fmt.Errorf("initrd entry %q: %w", p, ErrBadPath)
	}
	return q, nil
}

func (a *Archive) add(e Entry) error {
	p, err := CleanPath(e.Path)
	if err != nil {
		return err
	}
	e.Path = p
	if a.entries == nil {
		a.entries = map[string]*Entry{}
		a.implicit = map[string]bool{}
	}
	if old, ok := a.entries[p]; ok {
		switch {
		case old.IsDir() && e.IsDir() && a.implicit[p]:
			// An explicit AddDir sets the mode of a parent created implicitly before, so the
			// result does not depend on the order of the calls.
			old.Mode = e.Mode
			delete(a.implicit, p)
			return nil
		case old.IsDir() && e.IsDir() && old.Mode == e.Mode:
			return nil // re-adding an identical directory is harmless
		}
		return fmt.Errorf("initrd entry %q: %w", p, ErrDuplicate)
	}
	// Parents must be directories; create missing ones.
	for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
		if old, ok := a.entries[dir]; ok {
			if !old.IsDir() {
				return fmt.Errorf("initrd entry %q: parent %q is not a directory: %w", p, dir, ErrBadPath)
			}
			continue
		}
		a.entries[dir] = &Entry{Path: dir, Mode: fs.ModeDir | 0o755}
		a.implicit[dir] = true
	}
	a.entries[p] = &e
	return nil
}

// AddFile adds a regular file with the given permission bits.
func (a *Archive) AddFile(p string, perm fs.FileMode, data []byte) error {
	if perm&^(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
		return fmt.Errorf("initrd entry %q: mode %v: not a plain permission: %w", p, perm, ErrBadPath)
	}
	return a.add(Entry{Path: p, Mode: perm, Data: data})
}

// AddDir adds a directory.
func (a *Archive) AddDir(p string, perm fs.FileMode) error {
	return a.add(Entry{Path: p, Mode: fs.ModeDir | perm.Perm()})
}

// AddSymlink adds a symbolic link pointing at target.
func (a *Archive) AddSymlink(p, target string) error {
	if target == "" || strings.ContainsRune(target, 0) {
		return fmt.Errorf("initrd symlink %q: target %q: %w", p, target, ErrBadPath)
	}
	return a.add(Entry{Path: p, Mode: fs.ModeSymlink | 0o777, Data: []byte(target)})
}

// AddCharDevice adds a character device node (e.g. dev/console = 5:1).
func (a *Archive) AddCharDevice(p string, perm fs.FileMode, major, minor uint32) error {
	return a.add(Entry{Path: p, Mode: fs.ModeDevice | fs.ModeCharDevice | perm.Perm(), Major: major, Minor: minor})
}

// Entries returns the entries in archive order (sorted by path).
func (a *Archive) Entries() []Entry {
	out := make([]Entry, 0, len(a.entries))
	for _, e := range a.entries {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// WriteCPIO writes the uncompressed newc archive (with its TRAILER!!!) to w.
func (a *Archive) WriteCPIO(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	for i, e := range a.Entries() {
		nlink := uint32(1)
		if e.IsDir() {
			nlink = 2
		}
		var data []byte
		if !e.IsDir() && e.Mode&fs.ModeCharDevice == 0 {
			data = e.Data
		}
		if err := writeRecord(bw, header{
			ino: uint32(i + 1), mode: e.unixMode(), nlink: nlink, size: len(data),
			rdevMajor: e.Major, rdevMinor: e.Minor, name: e.Path,
		}, data); err != nil {
			return fmt.Errorf("initrd entry %q: %w", e.Path, err)
		}
	}
	if err := writeRecord(bw, header{nlink: 1, name: trailer}, nil); err != nil {
		return err
	}
	return bw.Flush()
}

// Bytes returns the archive, compressed as asked.
func (a *Archive) Bytes(c Compression) ([]byte, error) {
	var buf bytes.Buffer
	switch c {
	case CompressNone:
		if err := a.WriteCPIO(&buf); err != nil {
			return nil, err
		}
	case CompressGzip:
		// A zero Header: no file name, no comment, mtime 0, OS "unknown" — no host data.
		// The default level: BestCompression is 2.4x slower for 0.3% less (measured on a
		// 30 MB archive of Go binaries).
		zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
		if err != nil {
			return nil, err
		}
		if err := a.WriteCPIO(zw); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
	case CompressLZ4:
		zw := lz4.NewWriter(&buf)
		if err := zw.Apply(lz4.LegacyOption(true), lz4.CompressionLevelOption(lz4.Level9), lz4.ConcurrencyOption(1)); err != nil {
			return nil, err
		}
		if err := a.WriteCPIO(zw); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("initrd compression %q: unknown", c)
	}
	return buf.Bytes(), nil
}

// Build returns the archive with compression c; CompressAuto resolves to CompressNone when
// the uncompressed archive is at most limit bytes and to CompressGzip otherwise. It returns
// the compression used. The size limit itself is the caller's to enforce.
func (a *Archive) Build(c Compression, limit int) ([]byte, Compression, error) {
	if c != CompressAuto {
		b, err := a.Bytes(c)
		return b, c, err
	}
	b, err := a.Bytes(CompressNone)
	if err != nil || len(b) <= limit {
		return b, CompressNone, err
	}
	b, err = a.Bytes(CompressGzip)
	return b, CompressGzip, err
}

const (
	magic     = "070701"
	trailer   = "TRAILER!!!"
	headerLen = 110
)

type header struct {
	ino, mode, nlink     uint32
	size                 int
	rdevMajor, rdevMinor uint32
	name                 string
}

func writeRecord(w *bufio.Writer, h header, data []byte) error {
	if uint64(h.size) > 0xffffffff {
		return fmt.Errorf("size %d: %w (newc entries are limited to 4 GiB)", h.size, ErrTooLarge)
	}
	namesize := len(h.name) + 1
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
	// rdevminor, namesize, check.
	fmt.Fprintf(w, "%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		magic, h.ino, h.mode, 0, 0, h.nlink, 0, h.size, 0, 0, h.rdevMajor, h.rdevMinor, namesize, 0)
	w.WriteString(h.name)
	w.WriteByte(0)
	writePad(w, headerLen+namesize)
	w.Write(data)
	writePad(w, len(data))
	return nil
}

func writePad(w *bufio.Writer, n int) {
	for ; n%4 != 0; n++ {
		w.WriteByte(0)
	}
}
