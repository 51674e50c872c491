package debimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"
)

// Epoch is the modification time of every entry of a built image, and its creation time.
var Epoch = time.Unix(0, 0).UTC()

// ErrConflict means two packages ship different content at one path.
var ErrConflict = errors.New("packages conflict")

// mergedDirs are the top-level directories Debian's merged /usr turns into symlinks into usr/
// (bookworm's base system is merged-/usr; packages may still ship files under /lib, /bin…).
var mergedDirs = []string{"bin", "lib", "lib32", "lib64", "libx32", "sbin"}

// slimmed are trees left out of an image: documentation and translations (each package's
// copyright file stays).
var slimmed = []string{"usr/share/doc/", "usr/share/man/", "usr/share/info/", "usr/share/locale/", "usr/share/lintian/", "usr/share/bug/"}

type entry struct {
	hdr    tar.Header
	data   []byte
	origin string // the package (or "recipe") that put it here, for conflict errors
}

// Tree is a file tree assembled from package data tars and recipe additions, written as one
// deterministic tar layer.
type Tree struct {
	entries map[string]*entry // clean relative path ("usr/bin/redis-server") → entry
}

// NewTree returns an empty tree.
func NewTree() *Tree { return &Tree{entries: map[string]*entry{}} }

// Len is the number of entries.
func (t *Tree) Len() int { return len(t.entries) }

// cleanPath turns a tar name ("./usr/bin/x", "/lib/x", "usr/lib/") into a relative path
// under merged /usr, "" for the root; it refuses names leaving the tree.
func cleanPath(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("name %q has a NUL byte", name)
	}
	p := path.Clean("/" + name)
	if p == "/" {
		return "", nil
	}
	p = p[1:]
	for _, d := range mergedDirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return "usr/" + p, nil
		}
	}
	return p, nil
}

func slim(p string) bool {
	for _, s := range slimmed {
		if strings.HasPrefix(p+"/", s) {
			rest := strings.TrimPrefix(p+"/", s)
			// usr/share/doc/<pkg>/copyright stays, with its directories
			if s == "usr/share/doc/" && (rest == "" || !strings.Contains(strings.TrimSuffix(rest, "/"), "/") || strings.HasSuffix(p, "/copyright")) {
				return false
			}
			return true
		}
	}
	return false
}

// AddTar adds the entries of a package's data tar (as dpkg-deb --fsys-tarfile writes it).
// Hard links become copies of their target; device nodes and FIFOs are refused (no Debian
// application package ships one in its data).
func (t *Tree) AddTar(r io.Reader, origin string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: read data tar: %w", origin, err)
		}
		p, err := cleanPath(h.Name)
		if err != nil {
			return fmt.Errorf("%s: %w", origin, err)
		}
		if p == "" || slim(p) {
			continue
		}
		e := &entry{origin: origin, hdr: tar.Header{Mode: h.Mode & 0o7777, Uid: h.Uid, Gid: h.Gid}}
		switch h.Typeflag {
		case tar.TypeDir:
			e.hdr.Typeflag = tar.TypeDir
		case tar.TypeReg, '\x00': // '\x00': the pre-POSIX regular file flag (tar.TypeRegA)
			e.hdr.Typeflag = tar.TypeReg
			if e.data, err = io.ReadAll(tr); err != nil {
				return fmt.Errorf("%s: read %s: %w", origin, p, err)
			}
		case tar.TypeSymlink:
			if h.Linkname == "" || strings.IndexByte(h.Linkname, 0) >= 0 {
				return fmt.Errorf("%s: symlink %s: bad target %q", origin, p, h.Linkname)
			}
			// A link that merged /usr makes point at itself (/bin/x → /usr/bin/x) is dropped;
			// a relative link moved under usr/ is made absolute, as it was meant from its
			// original directory.
			abs := h.Linkname
			if !path.IsAbs(abs) {
				abs = path.Join("/", path.Dir(path.Clean("/"+h.Name)), abs)
			}
			if tp, err := cleanPath(abs); err == nil && tp == p {
				continue
			}
			e.hdr.Typeflag, e.hdr.Linkname = tar.TypeSymlink, h.Linkname
			if orig := path.Clean("/" + h.Name)[1:]; orig != p && !path.IsAbs(h.Linkname) {
				if tp, err := cleanPath(abs); err != nil || path.Join(path.Dir(p), h.Linkname) != tp {
					e.hdr.Linkname = path.Clean(abs)
				}
			}
		case tar.TypeLink:
			target, err := cleanPath(h.Linkname)
			if err != nil {
				return fmt.Errorf("%s: hard link %s: %w", origin, p, err)
			}
			te, ok := t.entries[target]
			if !ok || te.hdr.Typeflag != tar.TypeReg {
				return fmt.Errorf("%s: hard link %s to %s: no such regular file before it", origin, p, target)
			}
			e.hdr, e.data = te.hdr, te.data
		default:
			return fmt.Errorf("%s: %s has unsupported type %q", origin, p, h.Typeflag)
		}
		if err := t.put(p, e); err != nil {
			return err
		}
	}
}

// put adds e at p: directories merge (the first one's metadata stays), identical files and
// links are accepted, anything else is a conflict.
func (t *Tree) put(p string, e *entry) error {
	old, ok := t.entries[p]
	if !ok {
		t.entries[p] = e
		return nil
	}
	if old.hdr.Typeflag == tar.TypeDir && e.hdr.Typeflag == tar.TypeDir {
		return nil
	}
	if old.hdr.Typeflag == e.hdr.Typeflag && old.hdr.Linkname == e.hdr.Linkname && old.hdr.Mode == e.hdr.Mode && bytes.Equal(old.data, e.data) {
		return nil
	}
	return fmt.Errorf("%w: %s and %s both ship /%s, differently", ErrConflict, old.origin, e.origin, p)
}

// set adds or replaces the entry at p (recipe additions: they override what packages ship).
func (t *Tree) set(p string, e *entry) error {
	p, err := cleanPath(p)
	if err != nil || p == "" {
		return fmt.Errorf("recipe path %q: not a path in the image", p)
	}
	if old, ok := t.entries[p]; ok && old.hdr.Typeflag == tar.TypeDir && e.hdr.Typeflag == tar.TypeDir {
		old.hdr.Mode, old.hdr.Uid, old.hdr.Gid = e.hdr.Mode, e.hdr.Uid, e.hdr.Gid
		return nil
	}
	t.entries[p] = e
	return nil
}

// AddFile sets a regular file.
func (t *Tree) AddFile(p string, mode int64, uid, gid int, data []byte) error {
	return t.set(p, &entry{origin: "recipe", data: data, hdr: tar.Header{Typeflag: tar.TypeReg, Mode: mode & 0o7777, Uid: uid, Gid: gid}})
}

// AddDir sets a directory (its owner and mode replace a packaged one's).
func (t *Tree) AddDir(p string, mode int64, uid, gid int) error {
	return t.set(p, &entry{origin: "recipe", hdr: tar.Header{Typeflag: tar.TypeDir, Mode: mode & 0o7777, Uid: uid, Gid: gid}})
}

// WriteTar writes the tree as a tar stream: parents before children, entries sorted by
// path, fixed times, numeric owners only. With merged, the top-level symlinks of merged /usr
// (bin → usr/bin…) are added for the directories the tree has.
func (t *Tree) WriteTar(w io.Writer, merged bool) error {
	all := map[string]*entry{}
	for p, e := range t.entries {
		all[p] = e
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := all[d]; ok {
				break
			}
			if _, ok := t.entries[d]; !ok {
				all[d] = &entry{hdr: tar.Header{Typeflag: tar.TypeDir, Mode: 0o755}}
			}
		}
	}
	if merged {
		for _, d := range mergedDirs {
			if _, ok := all["usr/"+d]; ok {
				all[d] = &entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Linkname: "usr/" + d, Mode: 0o777}}
			}
		}
	}
	names := make([]string, 0, len(all))
	for p := range all {
		names = append(names, p)
	}
	// Sort by path components, so that a directory's entries directly follow it ("a/b" before
	// "a-b" would not matter for tar, but this order is the one `find | sort` gives).
	sort.Slice(names, func(i, j int) bool {
		return strings.ReplaceAll(names[i], "/", "\x00") < strings.ReplaceAll(names[j], "/", "\x00")
	})
	tw := tar.NewWriter(w)
	for _, p := range names {
		e := all[p]
		h := e.hdr
		h.Name = p
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		h.Size = int64(len(e.data))
		h.ModTime = Epoch
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return fmt.Errorf("write /%s: %w", p, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return fmt.Errorf("write /%s: %w", p, err)
		}
	}
	return tw.Close()
}
