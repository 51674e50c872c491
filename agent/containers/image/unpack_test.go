package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sealpod/sealpod/internal/testdeps"
)

// entry describes one tar entry of a test layer.
type entry struct {
	name     string
	typ      byte
	body     string
	linkname string
	mode     int64
}

func file(name, body string) entry {
	return entry{name: name, typ: tar.TypeReg, body: body, mode: 0o644}
}
func dir(name string) entry { return entry{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) entry {
	return entry{name: name, typ: tar.TypeSymlink, linkname: target, mode: 0o777}
}
func hardlink(name, target string) entry {
	return entry{name: name, typ: tar.TypeLink, linkname: target}
}

func mkTar(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.linkname, Mode: e.mode,
			Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if e.typ == tar.TypeChar || e.typ == tar.TypeBlock {
			h.Devmajor, h.Devminor = 1, 3
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sandbox is a root directory with an "outside" sibling holding a sentinel file.
type sandbox struct {
	root, outside string
}

func newSandbox(t testing.TB) sandbox {
	t.Helper()
	return newSandboxIn(t, t.TempDir())
}

func newSandboxIn(t testing.TB, base string) sandbox {
	t.Helper()
	s := sandbox{root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside")}
	for _, d := range []string{s.root, s.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.outside, "secret"), []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// checkOutside fails if anything outside the root changed.
func (s sandbox) checkOutside(t testing.TB) {
	t.Helper()
	var names []string
	_ = filepath.Walk(filepath.Dir(s.root), func(p string, fi os.FileInfo, err error) error {
		if err != nil || strings.HasPrefix(p, s.root+"/") {
			return nil
		}
		names = append(names, strings.TrimPrefix(p, filepath.Dir(s.root)))
		return nil
	})
	sort.Strings(names)
	want := []string{"", "/outside", "/outside/secret", "/root"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("outside the root changed: %v", names)
	}
	b, err := os.ReadFile(filepath.Join(s.outside, "secret"))
	if err != nil || string(b) != "untouched" {
		t.Fatalf("outside/secret changed: %q %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(s.outside, "secret")); err != nil || fi.Sys() == nil {
		t.Fatal(err)
	}
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testdeps.Missing(t, "extraction sets owners from the archive: needs root")
	}
}

func TestExtractMalicious(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name    string
		layers  func(s sandbox) [][]entry
		wantErr error
		// check runs on success (contained cases).
		check func(t *testing.T, s sandbox)
	}{
		{name: "dotdot name", layers: func(sandbox) [][]entry { return [][]entry{{file("../outside/pwned", "x")}} }, wantErr: ErrUnsafePath},
		{name: "inner dotdot", layers: func(sandbox) [][]entry { return [][]entry{{file("a/../../outside/pwned", "x")}} }, wantErr: ErrUnsafePath},
		{name: "absolute name", layers: func(s sandbox) [][]entry { return [][]entry{{file(s.outside+"/pwned", "x")}} }, wantErr: ErrUnsafePath},
		{name: "hardlink dotdot", layers: func(sandbox) [][]entry { return [][]entry{{hardlink("h", "../outside/secret")}} }, wantErr: ErrUnsafePath},
		{name: "hardlink absolute", layers: func(s sandbox) [][]entry { return [][]entry{{hardlink("h", s.outside+"/secret")}} }, wantErr: ErrUnsafePath},
		{name: "char device", layers: func(sandbox) [][]entry { return [][]entry{{{name: "dev/null", typ: tar.TypeChar, mode: 0o666}}} }, wantErr: ErrDeviceNode},
		{name: "block device", layers: func(sandbox) [][]entry { return [][]entry{{{name: "sda", typ: tar.TypeBlock, mode: 0o660}}} }, wantErr: ErrDeviceNode},
		{name: "hardlink to directory", layers: func(sandbox) [][]entry { return [][]entry{{dir("d/"), hardlink("h", "d")}} }, wantErr: ErrBadEntry},
		{
			name: "absolute symlink then write through it",
			layers: func(s sandbox) [][]entry {
				return [][]entry{{dir(s.outside[1:] + "/"), symlink("evil", s.outside), file("evil/pwned", "x")}}
			},
			check: func(t *testing.T, s sandbox) {
				// Resolved inside the root: <root>/<outside path>/pwned.
				if b, err := os.ReadFile(filepath.Join(s.root, s.outside, "pwned")); err != nil || string(b) != "x" {
					t.Errorf("contained file: %q %v", b, err)
				}
			},
		},
		{
			name: "relative symlink escaping then write through it",
			layers: func(s sandbox) [][]entry {
				return [][]entry{{dir("outside/"), symlink("evil", "../../../../../outside"), file("evil/pwned", "x")}}
			},
			check: func(t *testing.T, s sandbox) {
				if b, err := os.ReadFile(filepath.Join(s.root, "outside", "pwned")); err != nil || string(b) != "x" {
					t.Errorf("contained file: %q %v", b, err)
				}
			},
		},
		{
			name: "symlink escape across layers",
			layers: func(s sandbox) [][]entry {
				return [][]entry{{dir(s.outside[1:] + "/"), symlink("evil", s.outside)}, {file("evil/secret", "overwritten")}}
			},
			check: func(t *testing.T, s sandbox) {
				if _, err := os.Stat(filepath.Join(s.root, s.outside, "secret")); err != nil {
					t.Errorf("contained file: %v", err)
				}
			},
		},
		{
			name: "dangling escaping symlink as a parent is refused",
			layers: func(s sandbox) [][]entry {
				return [][]entry{{symlink("evil", s.outside), file("evil/pwned", "x")}}
			},
			wantErr: errNotDir,
		},
		{
			name: "hardlink through escaping symlink",
			layers: func(s sandbox) [][]entry {
				return [][]entry{{symlink("evil", s.outside), hardlink("h", "evil/secret")}}
			},
			wantErr: errNotExist,
		},
		{
			name: "hardlink to escaping symlink links the symlink itself",
			layers: func(s sandbox) [][]entry {
				return [][]entry{{symlink("evil", s.outside+"/secret"), hardlink("h", "evil")}}
			},
			check: func(t *testing.T, s sandbox) {
				target, err := os.Readlink(filepath.Join(s.root, "h"))
				if err != nil || target != s.outside+"/secret" {
					t.Errorf("h: %q %v (want a symlink, not a link to the outside file)", target, err)
				}
			},
		},
		{
			name: "symlink replaced by directory",
			layers: func(s sandbox) [][]entry {
				return [][]entry{{symlink("d", s.outside)}, {dir("d/"), file("d/f", "in")}}
			},
			check: func(t *testing.T, s sandbox) {
				fi, err := os.Lstat(filepath.Join(s.root, "d"))
				if err != nil || !fi.IsDir() {
					t.Errorf("d: %v %v", fi, err)
				}
			},
		},
		{
			name: "file written over an escaping symlink replaces the link",
			layers: func(s sandbox) [][]entry {
				return [][]entry{{symlink("f", s.outside+"/secret")}, {file("f", "new")}}
			},
			check: func(t *testing.T, s sandbox) {
				if b, err := os.ReadFile(filepath.Join(s.root, "f")); err != nil || string(b) != "new" {
					t.Errorf("f: %q %v", b, err)
				}
			},
		},
		{
			name: "whiteout through escaping symlink",
			layers: func(s sandbox) [][]entry {
				return [][]entry{{symlink("evil", s.outside)}, {file("evil/.wh.secret", "")}}
			},
		},
		{
			name: "opaque whiteout through escaping symlink",
			layers: func(s sandbox) [][]entry {
				return [][]entry{{symlink("evil", s.outside)}, {file("evil/.wh..wh..opq", "")}}
			},
		},
		{
			name: "whiteout of dotdot",
			layers: func(s sandbox) [][]entry {
				return [][]entry{{file("a/.wh...", "")}}
			},
			wantErr: ErrBadEntry,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			var err error
			for _, l := range tc.layers(s) {
				if err = ExtractLayer(bytes.NewReader(mkTar(t, l...)), s.root, nil); err != nil {
					break
				}
			}
			s.checkOutside(t)
			switch {
			case tc.wantErr == errNotDir:
				if !errors.Is(err, syscall.ENOTDIR) {
					t.Fatalf("err = %v, want ENOTDIR", err)
				}
			case tc.wantErr == errNotExist:
				if !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("err = %v, want not-exist (resolved inside the root)", err)
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
			default:
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				if tc.check != nil {
					tc.check(t, s)
				}
			}
		})
	}
}

var (
	errNotExist = errors.New("not exist")
	errNotDir   = errors.New("not a directory")
)

func TestExtractWhiteoutsAndModes(t *testing.T) {
	requireRoot(t)
	s := newSandbox(t)
	l1 := mkTar(t, dir("a/"), file("a/b", "b"), file("a/c", "c"), dir("o/"), file("o/old", "old"),
		entry{name: "bin/su", typ: tar.TypeReg, body: "x", mode: 0o4755}, file("keep", "k"), hardlink("keep2", "keep"))
	l2 := mkTar(t, file("a/.wh.b", ""), file("o/new", "new"), file("o/.wh..wh..opq", ""), file(".wh.keep2", ""))
	for i, l := range [][]byte{l1, l2} {
		if err := ExtractLayer(bytes.NewReader(l), s.root, nil); err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
	}
	exists := func(p string) bool { _, err := os.Lstat(filepath.Join(s.root, p)); return err == nil }
	for p, want := range map[string]bool{"a/b": false, "a/c": true, "o/old": false, "o/new": true, "keep": true, "keep2": false} {
		if exists(p) != want {
			t.Errorf("%s exists = %v, want %v", p, !want, want)
		}
	}
	fi, err := os.Stat(filepath.Join(s.root, "bin/su"))
	if err != nil || fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/su mode %v %v", fi.Mode(), err)
	}
}

func TestExtractLimits(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name   string
		layer  []entry
		limits Limits
	}{
		{name: "bytes", layer: []entry{file("big", strings.Repeat("x", 10000))}, limits: Limits{MaxBytes: 4096}},
		{name: "entries", layer: []entry{file("a", ""), file("b", ""), file("c", "")}, limits: Limits{MaxEntries: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			lim := tc.limits
			err := ExtractLayer(bytes.NewReader(mkTar(t, tc.layer...)), s.root, &lim)
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
		})
	}
}

func FuzzExtractLayer(f *testing.F) {
	f.Add(mkTar(f, dir("a/"), file("a/b", "hello"), symlink("s", "/etc"), file("s/x", "y"), hardlink("h", "a/b")))
	f.Add(mkTar(f, symlink("evil", "../../outside"), file("evil/pwned", "x"), file("a/.wh..wh..opq", "")))
	f.Add(mkTar(f, file("../x", "x")))
	f.Add(mkTar(f, file("a/.wh.b", ""), hardlink("l", "s/../x")))
	f.Add([]byte{})
	// Sandboxes live on a tmpfs when possible: thousands of tiny trees per second on a disk
	// are bound by its I/O.
	base := f.TempDir()
	if os.Geteuid() == 0 && syscall.Mount("tmpfs", base, "tmpfs", 0, "size=256m") == nil {
		f.Cleanup(func() { _ = syscall.Unmount(base, syscall.MNT_DETACH) })
	}
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := filepath.Join(base, strconv.FormatInt(n.Add(1), 10))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		s := newSandboxIn(t, dir)
		lim := Limits{MaxBytes: 1 << 20, MaxEntries: 256}
		_ = ExtractLayer(bytes.NewReader(data), s.root, &lim)
		s.checkOutside(t)
	})
}
