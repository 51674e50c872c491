//go:build linux && cgo

package preinit

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/runc/libcontainer/exeseal"
	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/internal/testdeps"
)

func TestClone(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "agent")
	content := bytes.Repeat([]byte("sealpod agent bytes "), 100000) // 2 MB: several sendfile rounds
	if err := os.WriteFile(src, content, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := Clone(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !exeseal.IsCloned(f) {
		t.Fatal("runc's exeseal does not take the copy as a sealed clone")
	}
	got, err := os.ReadFile("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content) {
		t.Fatalf("copy has %d bytes, differs from the %d-byte source", len(got), len(content))
	}
	if _, err := f.Write([]byte("x")); err == nil {
		t.Fatal("a write to the sealed copy succeeded")
	}
	if flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("copy is not close-on-exec: flags %#x (%v)", flags, err)
	}
	for _, bad := range []string{filepath.Join(dir, "missing"), dir} {
		if f, err := Clone(bad); err == nil {
			f.Close()
			t.Errorf("Clone(%s) succeeded", bad)
		}
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(src, link); err != nil {
		t.Fatal(err)
	}
	if f, err := Clone(link); err == nil {
		f.Close()
		t.Error("Clone followed a symlink")
	}
}

func TestWantedOnlyAsInit(t *testing.T) {
	// The test process is not PID 1: never, whatever argv[0] says.
	for _, args := range [][]string{{"/init"}, {"/init", "sealpod.debug=1"}, {"sealpod-agent"}, {}} {
		if Wanted(args) {
			t.Errorf("Wanted(%q) in a process with pid %d", args, os.Getpid())
		}
	}
}

// TestFirstStage runs a static stand-in agent as /init, PID 1 of a new PID and mount namespace
// chrooted into a tmpfs holding only /init: its constructor must copy /init into a sealed
// memfd, unlink /init and execute the copy (argv[0] "sealpod-agent", the other arguments
// kept). Run from a disk directory instead (not the initial ramfs), or executed from another
// path with argv[0] "/init", it must do nothing.
func TestFirstStage(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds a static binary")
	}
	if os.Geteuid() != 0 {
		testdeps.Missing(t, "root (a PID and mount namespace and a tmpfs)")
	}
	bin := filepath.Join(t.TempDir(), "stage")
	build := exec.Command("go", "build", "-o", bin, "-ldflags", "-extldflags -static", "./testdata/stage")
	build.Env = append(os.Environ(), "CGO_ENABLED=1", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the stand-in agent: %v\n%s", err, out)
	}
	run := func(t *testing.T, tmpfs bool, path string) string {
		// The disk case lives in the package directory: t.TempDir may be a tmpfs.
		root, err := os.MkdirTemp(".", "stage-root-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(root) })
		if root, err = filepath.Abs(root); err != nil {
			t.Fatal(err)
		}
		if tmpfs {
			if err := unix.Mount("tmpfs", root, "tmpfs", 0, "mode=0755"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
		} else {
			var sfs unix.Statfs_t
			if err := unix.Statfs(root, &sfs); err != nil || sfs.Type == unix.TMPFS_MAGIC || sfs.Type == unix.RAMFS_MAGIC {
				t.Fatalf("%s: want a disk file system, statfs type %#x (%v)", root, sfs.Type, err)
			}
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"init", "other"} {
			if err := os.WriteFile(filepath.Join(root, name), data, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Mkdir(filepath.Join(root, "proc"), 0o555); err != nil {
			t.Fatal(err)
		}
		cmd := &exec.Cmd{Path: path, Args: []string{"/init", "sealpod.debug=1"}, Env: []string{"HOME=/"}}
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("stand-in agent: %v\n%s", err, out)
		}
		return string(out)
	}
	t.Run("initramfs", func(t *testing.T) {
		out := run(t, true, "/init")
		want := `linked=true pid=1 argv0=sealpod-agent args=["sealpod.debug=1"] init-gone=true seals=0xf (<nil>)`
		if strings.TrimSpace(out) != want {
			t.Fatalf("second stage printed\n%s\nwant\n%s", out, want)
		}
	})
	untouched := func(t *testing.T, out string) {
		t.Helper()
		// A file on a tmpfs carries F_SEAL_SEAL (0x1) by default; the clone has 0xf.
		if !strings.Contains(out, "argv0=/init") || !strings.Contains(out, "init-gone=false") || strings.Contains(out, "seals=0xf") {
			t.Fatalf("stand-in agent printed\n%s\nwant it untouched (argv0=/init, /init present, not a sealed copy)", out)
		}
	}
	t.Run("disk root", func(t *testing.T) { untouched(t, run(t, false, "/init")) })
	// argv[0] is the caller's choice (libcontainer passes the agent's own to runc init): only
	// the path the kernel executed counts.
	t.Run("argv0 only", func(t *testing.T) { untouched(t, run(t, true, "/other")) })
}
