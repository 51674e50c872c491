package debimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// tarEntry is one entry of a synthetic package data tar.
type tarEntry struct {
	name, link string
	typ        byte
	mode       int64
	data       string
}

func dataTar(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.data)),
			Uname: "root", Gname: "root", ModTime: Epoch.AddDate(30, 0, 0)}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			_, _ = tw.Write([]byte(e.data))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// listTar reads a written layer: "type name[ -> link] mode uid:gid mtime" per entry, and the
// files' contents.
func listTar(t *testing.T, b []byte) ([]string, map[string]string) {
	t.Helper()
	var lines []string
	files := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return lines, files
		}
		if err != nil {
			t.Fatal(err)
		}
		l := string(h.Typeflag) + " " + h.Name
		if h.Linkname != "" {
			l += " -> " + h.Linkname
		}
		if h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(Epoch) {
			t.Errorf("%s: uname %q gname %q mtime %v: want numeric owners and the fixed epoch", h.Name, h.Uname, h.Gname, h.ModTime)
		}
		lines = append(lines, l)
		if h.Typeflag == tar.TypeReg {
			d, _ := io.ReadAll(tr)
			files[h.Name] = string(d)
		}
	}
}

func TestTreeMergedUsrAndOrder(t *testing.T) {
	tr := NewTree()
	pkg := dataTar(t,
		tarEntry{name: "./", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "./lib/x86_64-linux-gnu/libz.so.1.2", typ: tar.TypeReg, mode: 0o644, data: "ELF z"},
		tarEntry{name: "./lib/x86_64-linux-gnu/libz.so.1", typ: tar.TypeSymlink, link: "libz.so.1.2"},
		tarEntry{name: "./lib64/ld-linux-x86-64.so.2", typ: tar.TypeSymlink, link: "/lib/x86_64-linux-gnu/ld.so"},
		tarEntry{name: "./usr/bin/app", typ: tar.TypeReg, mode: 0o755, data: "ELF app"},
		tarEntry{name: "./usr/bin/app-hard", typ: tar.TypeLink, link: "./usr/bin/app"},
		tarEntry{name: "./bin/app", typ: tar.TypeSymlink, link: "../usr/bin/app"}, // merged /usr: points at itself
		tarEntry{name: "./sbin/tool", typ: tar.TypeSymlink, link: "../usr/bin/app"},
		tarEntry{name: "./usr/share/doc/app/changelog.gz", typ: tar.TypeReg, mode: 0o644, data: "log"},
		tarEntry{name: "./usr/share/doc/app/copyright", typ: tar.TypeReg, mode: 0o644, data: "GPL"},
		tarEntry{name: "./usr/share/man/man1/app.1.gz", typ: tar.TypeReg, mode: 0o644, data: "man"},
		tarEntry{name: "./usr/bin-extra", typ: tar.TypeReg, mode: 0o644, data: "x"},
	)
	if err := tr.AddTar(bytes.NewReader(pkg), "app"); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tr.WriteTar(&buf, true); err != nil {
		t.Fatal(err)
	}
	lines, files := listTar(t, buf.Bytes())
	want := []string{
		"2 bin -> usr/bin",
		"2 lib -> usr/lib",
		"2 lib64 -> usr/lib64",
		"2 sbin -> usr/sbin",
		"5 usr/",
		"5 usr/bin/",
		"0 usr/bin/app",
		"0 usr/bin/app-hard",
		"0 usr/bin-extra",
		"5 usr/lib/",
		"5 usr/lib/x86_64-linux-gnu/",
		"2 usr/lib/x86_64-linux-gnu/libz.so.1 -> libz.so.1.2",
		"0 usr/lib/x86_64-linux-gnu/libz.so.1.2",
		"5 usr/lib64/",
		"2 usr/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld.so",
		"5 usr/sbin/",
		"2 usr/sbin/tool -> /usr/bin/app",
		"5 usr/share/",
		"5 usr/share/doc/",
		"5 usr/share/doc/app/",
		"0 usr/share/doc/app/copyright",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("layer:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if files["usr/bin/app-hard"] != "ELF app" {
		t.Errorf("hard link copied as %q", files["usr/bin/app-hard"])
	}
}

func TestTreeRefuses(t *testing.T) {
	tests := []struct {
		name    string
		tars    [][]tarEntry
		want    string
		wantErr error
	}{
		{"conflict", [][]tarEntry{
			{{name: "./usr/bin/x", typ: tar.TypeReg, mode: 0o755, data: "one"}},
			{{name: "./bin/x", typ: tar.TypeReg, mode: 0o755, data: "two"}},
		}, "pkg0 and pkg1 both ship /usr/bin/x", ErrConflict},
		{"device node", [][]tarEntry{{{name: "./dev/null", typ: tar.TypeChar, mode: 0o666}}}, "dev/null has unsupported type", nil},
		{"dangling hard link", [][]tarEntry{{{name: "./usr/bin/b", typ: tar.TypeLink, link: "./usr/bin/a"}}}, "no such regular file before it", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTree()
			var err error
			for i, entries := range tt.tars {
				if err = tr.AddTar(bytes.NewReader(dataTar(t, entries...)), "pkg"+string(rune('0'+i))); err != nil {
					break
				}
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
	// The same file from two packages (identical) is fine, and directories merge.
	tr := NewTree()
	for _, o := range []string{"a", "b"} {
		if err := tr.AddTar(bytes.NewReader(dataTar(t, tarEntry{name: "./etc/", typ: tar.TypeDir, mode: 0o755},
			tarEntry{name: "./etc/same", typ: tar.TypeReg, mode: 0o644, data: "same"})), o); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCleanPathStaysInside(t *testing.T) {
	for in, want := range map[string]string{
		"./": "", "../../etc/passwd": "etc/passwd", "/lib/../../x": "x", "./lib": "usr/lib", "./library/x": "library/x", "sbin/x": "usr/sbin/x",
	} {
		if got, err := cleanPath(in); err != nil || got != want {
			t.Errorf("cleanPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := cleanPath("a\x00b"); err == nil {
		t.Error("NUL accepted")
	}
}
