package boot

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/internal/testdeps"
)

func TestRootFSType(t *testing.T) {
	for _, c := range []struct {
		name, mountinfo, want string
	}{
		{"initramfs", "1 1 0:2 / / rw - rootfs rootfs rw,size=1000k\n2 1 0:20 / /proc rw,nosuid - proc proc rw\n", "rootfs"},
		{"after the switch", "1 1 0:2 / / rw - rootfs rootfs rw\n25 1 0:22 / / rw - tmpfs tmpfs rw,mode=755\n", "tmpfs"},
		{"disk root", "22 1 8:1 / / rw,relatime shared:1 master:2 - ext4 /dev/sda1 rw\n", "ext4"},
		{"bind of a subdirectory on /", "30 1 8:1 /srv / rw - ext4 /dev/sda1 rw\n", "ext4"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := RootFSType(strings.NewReader(c.mountinfo))
			if err != nil || got != c.want {
				t.Fatalf("RootFSType = %q, %v; want %q", got, err, c.want)
			}
		})
	}
	if _, err := RootFSType(strings.NewReader("2 1 0:20 / /proc rw - proc proc rw\n")); err == nil {
		t.Fatal("RootFSType accepted a table without /")
	}
}

func TestSwitchedRoot(t *testing.T) {
	for _, c := range []struct {
		value string
		ok    bool
	}{
		{"1500,2048,7", true}, {"", false}, {"1,2", false}, {"1,-2,3", false}, {"a,b,c", false},
	} {
		t.Setenv(rootSwitchEnv, c.value)
		st, ok := SwitchedRoot()
		if ok != c.ok || (ok && (st.Duration.Microseconds() != 1500 || st.Bytes != 2048 || st.Files != 7)) {
			t.Errorf("SwitchedRoot(%q) = %+v, %v", c.value, st, ok)
		}
		if _, set := os.LookupEnv(rootSwitchEnv); set {
			t.Errorf("SwitchedRoot(%q) left %s in the environment", c.value, rootSwitchEnv)
		}
	}
}

// TestMoveTree moves a small initramfs-like tree (with the destination inside it, as at boot)
// and checks that every kind of entry arrives with its mode and owner and leaves the source.
func TestMoveTree(t *testing.T) {
	if os.Geteuid() != 0 {
		testdeps.Missing(t, "needs root (chown, mknod)")
	}
	src := t.TempDir()
	dst := filepath.Join(src, ".newroot")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "lib/modules"), 0o755))
	must(os.WriteFile(filepath.Join(src, "init"), []byte("agent binary"), 0o755))
	must(os.WriteFile(filepath.Join(src, "lib/modules/a.ko"), []byte("module"), 0o644))
	must(os.Link(filepath.Join(src, "lib/modules/a.ko"), filepath.Join(src, "lib/modules/b.ko")))
	must(os.Symlink("lib/modules", filepath.Join(src, "mods")))
	must(os.WriteFile(filepath.Join(src, "suid"), []byte("x"), 0o644))
	must(os.Chown(filepath.Join(src, "suid"), 1000, 1000))
	must(unix.Chmod(filepath.Join(src, "suid"), 0o4755))
	must(os.Mkdir(filepath.Join(src, "ro"), 0o755))
	must(os.WriteFile(filepath.Join(src, "ro/f"), nil, 0o600))
	must(os.Chmod(filepath.Join(src, "ro"), 0o555))
	must(os.Mkdir(filepath.Join(src, "dev"), 0o755))
	must(unix.Mknod(filepath.Join(src, "dev/console"), unix.S_IFCHR|0o600, int(unix.Mkdev(5, 1))))
	must(unix.Mkfifo(filepath.Join(src, "fifo"), 0o640))
	must(os.Mkdir(dst, 0o755))

	st, err := moveTree(src, dst)
	must(err)
	if st.Bytes != int64(len("agent binary")+len("module")+len("x")) || st.Files != 12 {
		t.Errorf("moveTree stats %+v", st)
	}
	entries, _ := os.ReadDir(src)
	if len(entries) != 1 || entries[0].Name() != ".newroot" {
		t.Errorf("source not emptied: %v", entries)
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
		uid  uint32
	}{
		{"init", 0o755, 0}, {"lib/modules/a.ko", 0o644, 0}, {"suid", os.ModeSetuid | 0o755, 1000},
		{"ro", os.ModeDir | 0o555, 0}, {"ro/f", 0o600, 0}, {"mods", os.ModeSymlink | 0o777, 0},
		{"dev/console", os.ModeDevice | os.ModeCharDevice | 0o600, 0}, {"fifo", os.ModeNamedPipe | 0o640, 0},
	} {
		fi, err := os.Lstat(filepath.Join(dst, c.path))
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		if fi.Mode() != c.mode || fi.Sys().(*syscall.Stat_t).Uid != c.uid {
			t.Errorf("%s: mode %v uid %d, want %v uid %d", c.path, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid, c.mode, c.uid)
		}
	}
	var a, b unix.Stat_t
	must(unix.Stat(filepath.Join(dst, "lib/modules/a.ko"), &a))
	must(unix.Stat(filepath.Join(dst, "lib/modules/b.ko"), &b))
	if a.Ino != b.Ino {
		t.Error("hard link became two files")
	}
	if l, _ := os.Readlink(filepath.Join(dst, "mods")); l != "lib/modules" {
		t.Errorf("symlink target %q", l)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "init")); string(got) != "agent binary" {
		t.Errorf("init content %q", got)
	}
	must(os.Chmod(filepath.Join(dst, "ro"), 0o755)) // let t.TempDir clean up
}

// BenchmarkMoveTree moves an initrd-sized tree (a 14 MB agent, 40 modules) between two
// directories of one tmpfs, as LeaveInitramfs does at boot.
func BenchmarkMoveTree(b *testing.B) {
	agent := make([]byte, 14<<20)
	module := make([]byte, 24<<10)
	for b.Loop() {
		b.StopTimer()
		src := b.TempDir()
		dst := filepath.Join(src, ".newroot")
		if err := os.MkdirAll(filepath.Join(src, "lib/modules"), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, "init"), agent, 0o755); err != nil {
			b.Fatal(err)
		}
		for i := range 40 {
			if err := os.WriteFile(filepath.Join(src, "lib/modules", strconv.Itoa(i)+".ko"), module, 0o644); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.Mkdir(dst, 0o755); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := moveTree(src, dst); err != nil {
			b.Fatal(err)
		}
	}
}
