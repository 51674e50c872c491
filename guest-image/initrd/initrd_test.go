package initrd

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/internal/testdeps"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestExactBytes checks the newc encoding against an archive spelled out by hand from the
// format description (cpio(5), "New ASCII Format"), independently of the writer's code.
func TestExactBytes(t *testing.T) {
	var a Archive
	if err := a.AddFile("init", 0o755, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	got, err := a.Bytes(CompressNone)
	if err != nil {
		t.Fatal(err)
	}
	hdr := func(ino, mode, nlink, size, namesize string) string {
		// magic ino mode uid gid nlink mtime filesize devmaj devmin rdevmaj rdevmin namesize check
		return "070701" + ino + mode + "00000000" + "00000000" + nlink + "00000000" + size +
			"00000000" + "00000000" + "00000000" + "00000000" + namesize + "00000000"
	}
	want := hdr("00000001", "000081ed", "00000001", "00000002", "00000005") + "init\x00" + "\x00" + // 110+5 = 115 → pad to 116
		"hi\x00\x00" +
		hdr("00000000", "00000000", "00000001", "00000000", "0000000b") + "TRAILER!!!\x00" // 110+11 = 121 → pad to 124
	want += "\x00\x00\x00"
	if string(got) != want {
		t.Fatalf("archive bytes differ:\n got %q\nwant %q", got, want)
	}
}

// fixture builds the same archive with entries added in the given order.
func fixture(t testing.TB, reverse bool) *Archive {
	t.Helper()
	type op func(a *Archive) error
	ops := []op{
		func(a *Archive) error {
			return a.AddFile("init", 0o755, bytes.Repeat([]byte("\x7fELF static init "), 1000))
		},
		func(a *Archive) error { return a.AddCharDevice("dev/console", 0o600, 5, 1) },
		func(a *Archive) error { return a.AddDir("proc", 0o555) },
		func(a *Archive) error { return a.AddDir("tmp", 0o777|fs.ModeSticky) },
		func(a *Archive) error { return a.AddSymlink("sbin/init", "/init") },
		func(a *Archive) error {
			return a.AddFile("lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio.ko", 0o644, []byte("module virtio"))
		},
		func(a *Archive) error {
			return a.AddFile("lib/modules/6.1.0-56-amd64/load-order", 0o644, []byte("kernel/drivers/virtio/virtio.ko\n"))
		},
		func(a *Archive) error { return a.AddFile("etc/empty", 0o600, nil) },
	}
	var a Archive
	for i := range ops {
		j := i
		if reverse {
			j = len(ops) - 1 - i
		}
		if err := ops[j](&a); err != nil {
			t.Fatal(err)
		}
	}
	return &a
}

// TestDeterministic: the same inputs, added in any order, in two separate builds, give the
// same bytes for both compressions, and the bytes match the golden digests (a change in the
// encoding, including a change of the Go toolchain's deflate output, shows up here).
func TestDeterministic(t *testing.T) {
	for _, c := range []Compression{CompressNone, CompressGzip, CompressLZ4} {
		t.Run(string(c), func(t *testing.T) {
			a, err := fixture(t, false).Bytes(c)
			if err != nil {
				t.Fatal(err)
			}
			b, err := fixture(t, true).Bytes(c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Fatal("two builds of the same inputs differ")
			}
			sum := sha256.Sum256(a)
			golden := filepath.Join("testdata", "fixture."+string(c)+".sha256")
			if *update {
				if err := os.WriteFile(golden, []byte(hex.EncodeToString(sum[:])+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(sum[:]); got != strings.TrimSpace(string(want)) {
				t.Fatalf("sha256 %s, golden %s (run with -update if the change is intended)", got, want)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	a := fixture(t, false)
	for _, c := range []Compression{CompressNone, CompressGzip, CompressLZ4} {
		data, err := a.Bytes(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Read(data)
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		want := a.Entries()
		if len(got) != len(want) {
			t.Fatalf("%s: %d entries, want %d", c, len(got), len(want))
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.Path != w.Path || g.Mode != w.Mode || !bytes.Equal(g.Data, w.Data) || g.Major != w.Major || g.Minor != w.Minor {
				t.Errorf("%s: entry %d = %+v, want %+v", c, i, g, w)
			}
		}
	}
	// Parents were created, sorted before their children.
	var paths []string
	for _, e := range a.Entries() {
		paths = append(paths, e.Path)
	}
	wantPaths := "dev dev/console etc etc/empty init lib lib/modules lib/modules/6.1.0-56-amd64 lib/modules/6.1.0-56-amd64/kernel " +
		"lib/modules/6.1.0-56-amd64/kernel/drivers lib/modules/6.1.0-56-amd64/kernel/drivers/virtio " +
		"lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio.ko lib/modules/6.1.0-56-amd64/load-order proc sbin sbin/init tmp"
	if got := strings.Join(paths, " "); got != wantPaths {
		t.Errorf("paths:\n got %s\nwant %s", got, wantPaths)
	}
}

func TestGzipHeaderCarriesNoHostData(t *testing.T) {
	data, err := fixture(t, false).Bytes(CompressGzip)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || zr.Comment != "" || !zr.ModTime.IsZero() || zr.Extra != nil {
		t.Fatalf("gzip header carries data: %+v", zr.Header)
	}
	if _, err := io.Copy(io.Discard, zr); err != nil {
		t.Fatal(err)
	}
}

func TestAddRejects(t *testing.T) {
	tests := []struct {
		name string
		add  func(a *Archive) error
		want error
	}{
		{"dotdot", func(a *Archive) error { return a.AddFile("../etc/passwd", 0o644, nil) }, ErrBadPath},
		{"unclean", func(a *Archive) error { return a.AddFile("a//b", 0o644, nil) }, ErrBadPath},
		{"dot", func(a *Archive) error { return a.AddDir(".", 0o755) }, ErrBadPath},
		{"empty", func(a *Archive) error { return a.AddFile("", 0o644, nil) }, ErrBadPath},
		{"nul", func(a *Archive) error { return a.AddFile("a\x00b", 0o644, nil) }, ErrBadPath},
		{"type bits in perm", func(a *Archive) error { return a.AddFile("x", fs.ModeDir|0o755, nil) }, ErrBadPath},
		{"empty symlink", func(a *Archive) error { return a.AddSymlink("x", "") }, ErrBadPath},
		{"duplicate", func(a *Archive) error {
			if err := a.AddFile("init", 0o755, nil); err != nil {
				return err
			}
			return a.AddFile("init", 0o755, []byte("x"))
		}, ErrDuplicate},
		{"file as parent", func(a *Archive) error {
			if err := a.AddFile("init", 0o755, nil); err != nil {
				return err
			}
			return a.AddFile("init/x", 0o644, nil)
		}, ErrBadPath},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var a Archive
			if err := tc.add(&a); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// A leading slash is accepted and removed; a shared parent directory can be re-added.
	var a Archive
	if err := a.AddFile("/init", 0o755, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.AddDir("lib", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := a.AddDir("lib", 0o755); err != nil {
		t.Fatalf("re-adding the same directory: %v", err)
	}
	if e := a.Entries(); e[0].Path != "init" {
		t.Fatalf("leading slash kept: %q", e[0].Path)
	}
}

// TestImplicitParentThenExplicitDir: the mode of a directory does not depend on whether its
// children were added first.
func TestImplicitParentThenExplicitDir(t *testing.T) {
	var a, b Archive
	if err := a.AddFile("tmp/x", 0o644, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.AddDir("tmp", 0o777|fs.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := b.AddDir("tmp", 0o777|fs.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := b.AddFile("tmp/x", 0o644, nil); err != nil {
		t.Fatal(err)
	}
	x, err := a.Bytes(CompressNone)
	if err != nil {
		t.Fatal(err)
	}
	y, err := b.Bytes(CompressNone)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Fatal("order of AddFile/AddDir changes the archive")
	}
	// A second explicit AddDir with another mode is a conflict.
	if err := a.AddDir("tmp", 0o755); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("conflicting AddDir: %v", err)
	}
}

func TestReadRejects(t *testing.T) {
	good, err := fixture(t, false).Bytes(CompressNone)
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := map[string][]byte{
		"empty":       nil,
		"bad magic":   mut(func(b []byte) []byte { b[5] = '2'; return b }),
		"bad hex":     mut(func(b []byte) []byte { b[10] = 'z'; return b }),
		"truncated":   good[:len(good)/2],
		"no trailer":  good[:len(good)-124],
		"bad gzip":    {0x1f, 0x8b, 0, 0},
		"dotdot name": []byte("070701" + "00000001" + "000081a4" + strings.Repeat("0", 8*9) + "00000005" + "00000000" + "../x\x00" + "\x00"),
	}
	for name, data := range tests {
		if _, err := Read(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseCompression(t *testing.T) {
	for in, ok := range map[string]bool{"none": true, "gzip": true, "auto": true, "xz": false, "": false} {
		if _, err := ParseCompression(in); (err == nil) != ok {
			t.Errorf("ParseCompression(%q) err = %v", in, err)
		}
	}
}

func TestBuildAuto(t *testing.T) {
	a := fixture(t, false)
	plain, err := a.Bytes(CompressNone)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		limit int
		want  Compression
	}{{len(plain), CompressNone}, {len(plain) - 1, CompressGzip}} {
		got, c, err := a.Build(CompressAuto, tc.limit)
		if err != nil || c != tc.want {
			t.Fatalf("limit %d: compression %s, %v; want %s", tc.limit, c, err, tc.want)
		}
		if c == CompressNone && !bytes.Equal(got, plain) {
			t.Fatal("auto/none differs from none")
		}
		if c == CompressGzip && (got[0] != 0x1f || got[1] != 0x8b) {
			t.Fatal("auto/gzip is not gzip")
		}
	}
}

func FuzzRead(f *testing.F) {
	for _, c := range []Compression{CompressNone, CompressGzip, CompressLZ4} {
		data, err := fixture(f, false).Bytes(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("070701"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := Read(data)
		if err != nil {
			return
		}
		// Whatever parses must re-encode and parse to the same entries.
		var a Archive
		for _, e := range entries {
			var err error
			switch {
			case e.IsDir():
				err = a.AddDir(e.Path, e.Mode)
			case e.Mode&fs.ModeSymlink != 0:
				err = a.AddSymlink(e.Path, string(e.Data))
			case e.Mode&fs.ModeCharDevice != 0:
				err = a.AddCharDevice(e.Path, e.Mode, e.Major, e.Minor)
			default:
				err = a.AddFile(e.Path, e.Mode, e.Data)
			}
			if err != nil {
				return // duplicates, unsorted or symlinks as parents: valid cpio, not ours
			}
		}
		out, err := a.Bytes(CompressNone)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Read(out); err != nil {
			t.Fatalf("re-encoded archive does not parse: %v", err)
		}
	})
}

func benchmarkWrite(b *testing.B, c Compression) {
	var a Archive
	// 8 MiB of a Go binary's worth of entropy: repeat this test binary's own bytes.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 0, 8<<20)
	for len(payload) < 8<<20 {
		payload = append(payload, self[:min(len(self), 8<<20-len(payload))]...)
	}
	if err := a.AddFile("init", 0o755, payload); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, err := a.Bytes(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteNone(b *testing.B) { benchmarkWrite(b, CompressNone) }
func BenchmarkWriteGzip(b *testing.B) { benchmarkWrite(b, CompressGzip) }

// TestLZ4ReferenceTool decompresses CompressLZ4 output with the reference lz4 command (Debian's
// lz4 package, the same legacy-frame decoder family as the kernel's unlz4) and compares it
// with the uncompressed archive.
func TestLZ4ReferenceTool(t *testing.T) {
	lz4Bin, err := exec.LookPath("lz4")
	if err != nil {
		testdeps.Missing(t, "lz4 (Debian package lz4; make deps installs it): %v", err)
	}
	a := fixture(t, false)
	plain, err := a.Bytes(CompressNone)
	if err != nil {
		t.Fatal(err)
	}
	packed, err := a.Bytes(CompressLZ4)
	if err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint32(packed) != lz4LegacyMagic {
		t.Fatalf("lz4 initrd starts with %x, want the legacy frame magic %x", packed[:4], lz4LegacyMagic)
	}
	cmd := exec.Command(lz4Bin, "-d", "-c")
	cmd.Stdin = bytes.NewReader(packed)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lz4 -d: %v", err)
	}
	if !bytes.Equal(out, plain) {
		t.Fatalf("lz4 -d gave %d bytes that differ from the %d-byte archive", len(out), len(plain))
	}
}
