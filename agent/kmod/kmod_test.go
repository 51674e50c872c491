package kmod

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseLoadOrder(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "kernel/a.ko\n# comment\n\n  kernel/b/c-d.ko  \nkernel/x.ko.xz\n", want: "kernel/a.ko kernel/b/c-d.ko kernel/x.ko.xz"},
		{in: "", want: ""},
		{in: "/lib/modules/a.ko\n", wantErr: true},
		{in: "../a.ko\n", wantErr: true},
		{in: "kernel/../../a.ko\n", wantErr: true},
		{in: "kernel//a.ko\n", wantErr: true},
		{in: "kernel/a.so\n", wantErr: true},
		{in: "kernel/a.ko\nkernel/a.ko\n", wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParseLoadOrder([]byte(tc.in))
		if tc.wantErr {
			if !errors.Is(err, ErrBadLoadOrder) {
				t.Errorf("%q: err = %v, want ErrBadLoadOrder", tc.in, err)
			}
			continue
		}
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// modDir writes a fake lib/modules/<release> with the given files and load-order.
func modDir(t *testing.T, files []string, order string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range files {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("module "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, LoadOrderFile), []byte(order), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// recorder is a fake finit_module that reads the file it is given through its descriptor,
// as the kernel does, and answers per file content.
type recorder struct {
	calls  []string
	flags  []int
	answer map[string]error
}

func (r *recorder) finit(fd int, params string, flags int) error {
	buf := make([]byte, 256)
	n, err := unix.Pread(fd, buf, 0)
	if err != nil {
		return err
	}
	name := strings.TrimPrefix(string(buf[:n]), "module ")
	r.calls = append(r.calls, name)
	r.flags = append(r.flags, flags)
	if params != "" {
		return errors.New("unexpected params")
	}
	return r.answer[name]
}

func TestLoadAll(t *testing.T) {
	files := []string{"kernel/virtio_ring.ko", "kernel/virtio.ko", "kernel/virtio_pci.ko", "kernel/zz.ko.xz"}
	dir := modDir(t, files, strings.Join(files, "\n")+"\n")
	rec := &recorder{answer: map[string]error{"kernel/virtio.ko": unix.EEXIST, "kernel/virtio_pci.ko": unix.ENODEV}}
	res, err := (&Loader{Finit: rec.finit}).LoadAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rec.calls, " ") != strings.Join(files, " ") {
		t.Errorf("order %v, want %v", rec.calls, files)
	}
	if res.Count() != 3 || len(res.Present) != 1 || res.Present[0] != "kernel/virtio.ko" ||
		len(res.NoDevice) != 1 || res.NoDevice[0] != "kernel/virtio_pci.ko" || len(res.Loaded) != 2 {
		t.Errorf("result %+v", res)
	}
	if rec.flags[0] != 0 || rec.flags[3] != unix.MODULE_INIT_COMPRESSED_FILE {
		t.Errorf("flags %v", rec.flags)
	}
}

func TestLoadAllStopsAtRefusal(t *testing.T) {
	files := []string{"kernel/a.ko", "kernel/b.ko", "kernel/c.ko"}
	dir := modDir(t, files, strings.Join(files, "\n"))
	rec := &recorder{answer: map[string]error{"kernel/b.ko": unix.ENOEXEC}}
	res, err := (&Loader{Finit: rec.finit}).LoadAll(dir)
	if !errors.Is(err, syscall.ENOEXEC) || !strings.Contains(err.Error(), "kernel/b.ko") {
		t.Fatalf("err = %v", err)
	}
	if len(res.Loaded) != 1 || len(rec.calls) != 2 {
		t.Fatalf("result %+v calls %v", res, rec.calls)
	}
}

func TestLoadAllErrors(t *testing.T) {
	rec := &recorder{}
	l := &Loader{Finit: rec.finit}
	if _, err := l.LoadAll(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("no load-order: %v", err)
	}
	dir := modDir(t, nil, "kernel/missing.ko\n")
	if _, err := l.LoadAll(dir); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "kernel/missing.ko") {
		t.Errorf("missing module: %v", err)
	}
	dir = modDir(t, nil, "../../etc/shadow.ko\n")
	if _, err := l.LoadAll(dir); !errors.Is(err, ErrBadLoadOrder) {
		t.Errorf("escape: %v", err)
	}
	if len(rec.calls) != 0 {
		t.Errorf("finit called: %v", rec.calls)
	}
}

func TestDefaultDir(t *testing.T) {
	d, err := DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(d, "/lib/modules/") || len(d) <= len("/lib/modules/") {
		t.Fatalf("DefaultDir = %q", d)
	}
}

func FuzzParseLoadOrder(f *testing.F) {
	f.Add([]byte("kernel/drivers/virtio/virtio_ring.ko\nkernel/drivers/virtio/virtio.ko\n"))
	f.Add([]byte("# c\n\n../x.ko\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := ParseLoadOrder(data)
		if err != nil {
			return
		}
		for _, p := range list {
			if strings.HasPrefix(p, "/") || strings.Contains("/"+p+"/", "/../") || !isModuleFile(p) {
				t.Fatalf("accepted %q", p)
			}
		}
	})
}

// TestLoadAllWithoutModules: a kernel with its drivers built in ships no module directory:
// nothing to load, no error; an existing directory without load-order stays an error.
func TestLoadAllWithoutModules(t *testing.T) {
	for _, c := range []struct {
		name       string
		dir        func(t *testing.T) string
		wantAbsent bool
		wantErr    error
	}{
		{"no module directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "lib/modules/6.1.0-sealpod") }, true, nil},
		{"directory without load-order", func(t *testing.T) string { return t.TempDir() }, false, os.ErrNotExist},
		{"empty load-order", func(t *testing.T) string { return modDir(t, nil, "") }, false, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := &recorder{}
			res, err := (&Loader{Finit: rec.finit}).LoadAll(c.dir(t))
			if c.wantErr == nil && err != nil || c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Fatalf("LoadAll: err = %v, want %v", err, c.wantErr)
			}
			if res == nil || res.Absent != c.wantAbsent || res.Count() != 0 || len(rec.calls) != 0 {
				t.Fatalf("LoadAll = %+v (finit calls %v), want Absent=%v and nothing loaded", res, rec.calls, c.wantAbsent)
			}
		})
	}
}
