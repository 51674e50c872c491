package boot

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/internal/testdeps"
)

func TestRootMountOf(t *testing.T) {
	for _, c := range []struct {
		name, mountinfo string
		want            RootMount
		parentless      bool
	}{
		{"initramfs", "1 1 0:2 / / rw - rootfs rootfs rw,size=1000k\n2 1 0:20 / /proc rw,nosuid - proc proc rw\n",
			RootMount{"1", "1", "rootfs"}, true},
		// A bind mount of rootfs keeps the type but has a parent.
		{"bind of rootfs", "20 1 0:2 / / rw - rootfs rootfs rw\n21 20 0:20 / /proc rw - proc proc rw\n",
			RootMount{"20", "1", "rootfs"}, false},
		{"tmpfs on rootfs", "1 1 0:2 / / rw - rootfs rootfs rw\n25 1 0:22 / / rw - tmpfs tmpfs rw,mode=755\n",
			RootMount{"25", "1", "tmpfs"}, false},
		{"disk root", "22 1 8:1 / / rw,relatime shared:1 master:2 - ext4 /dev/sda1 rw\n", RootMount{"22", "1", "ext4"}, false},
		{"bind of a subdirectory on /", "30 1 8:1 /srv / rw - ext4 /dev/sda1 rw\n", RootMount{"30", "1", "ext4"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := RootMountOf(strings.NewReader(c.mountinfo))
			if err != nil || got != c.want || got.Parentless() != c.parentless {
				t.Fatalf("RootMountOf = %+v (parentless %v), %v; want %+v (parentless %v)", got, got.Parentless(), err, c.want, c.parentless)
			}
		})
	}
	for _, bad := range []string{"2 1 0:20 / /proc rw - proc proc rw\n", "1 1 0:2 / / rw rootfs rootfs rw\n", ""} {
		if m, err := RootMountOf(strings.NewReader(bad)); err == nil {
			t.Errorf("RootMountOf(%q) = %+v, want an error", bad, m)
		}
	}
}

// The switch test runs in a child process (this test binary, re-executed) in a new mount
// namespace that plays PID 1; a thread of it in a further mount namespace plays the container.
const (
	helperEnv    = "SEALPOD_BOOT_TEST_HELPER"
	helperDirEnv = "SEALPOD_BOOT_TEST_DIR"
	agentMarker  = "the agent's root\n"
	ctrMarker    = "the container's root\n"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "agent":
		os.Exit(agentHelper(os.Getenv(helperDirEnv)))
	}
	os.Exit(m.Run())
}

// TestSwitchRootMakesPivotRootWork: the agent's root is a directory on which pivot_root(2)
// fails with EINVAL (as on the initial ramfs: here because "/" is not a mount point, in the
// guest because rootfs has no parent). After switchRoot, in the same process: the other
// files moved to the new tmpfs root, the running binary (/init) unlinked rather than copied,
// the old root left empty (what a container that uncovers the namespace's root mount finds),
// and a container's pivot_root into its own root succeeds and leaves nothing of the agent's
// root in the container's view.
func TestSwitchRootMakesPivotRootWork(t *testing.T) {
	if os.Geteuid() != 0 {
		testdeps.Missing(t, "needs root (mount namespaces, pivot_root)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=agent", helperDirEnv+"="+t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	t.Logf("agent helper:\n%s", out)
	if err != nil {
		t.Fatalf("agent helper: %v", err)
	}
	for _, want := range []string{
		"before the switch: container pivot_root: EINVAL\n",
		"switched: same process, /init unlinked: ENOENT\n",
		"switched: moved lib/modules/r/load-order: modules\n",
		"switched: the old root holds [.sealpod-root]\n",
		"after the switch: agent's root is a mount with a parent: true (<nil>)\n",
		"after the switch: container pivot_root: ok\n",
		"after the switch: container sees /init: ENOENT\n",
		"after the switch: container sees /marker: " + strings.TrimSpace(ctrMarker) + "\n",
		"after the switch: container sees old root mounted: no\n",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("agent helper output lacks %q", want)
		}
	}
}

// agentHelper builds a fake initramfs in a private tmpfs under dir, chroots into it (a root
// that is no mount point), runs the container helper before and after switchRoot and prints
// what happened.
func agentHelper(dir string) int {
	fail := func(what string, err error) int {
		fmt.Printf("FAIL %s: %v\n", what, err)
		return 1
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail("make / private", err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
		return fail("mount tmpfs", err)
	}
	root := filepath.Join(dir, "initramfs")
	for _, d := range []string{"proc", "ctr"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return fail("mkdir", err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(agentMarker), 0o755); err != nil {
		return fail("write init", err)
	}
	if err := os.MkdirAll(filepath.Join(root, "lib/modules/r"), 0o755); err != nil {
		return fail("mkdir modules", err)
	}
	if err := os.WriteFile(filepath.Join(root, "lib/modules/r/load-order"), []byte("modules\n"), 0o644); err != nil {
		return fail("write load-order", err)
	}
	if err := unix.Chroot(root); err != nil {
		return fail("chroot", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fail("chdir", err)
	}
	// /proc, for the container helper before the switch.
	if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		return fail("mount proc", err)
	}
	runContainer := func(when string) {
		for _, l := range inContainer() {
			fmt.Printf("%s: container %s\n", when, l)
		}
	}
	runContainer("before the switch")

	// /init plays the running agent binary: switchRoot unlinks it instead of copying it.
	var st unix.Stat_t
	if err := unix.Stat("/init", &st); err != nil {
		return fail("stat /init", err)
	}
	oldRoot, err := os.Open("/")
	if err != nil {
		return fail("open /", err)
	}
	defer oldRoot.Close()
	// LeaveInitramfs runs before anything is mounted (it unmounts the /proc it looked at).
	if err := unix.Unmount("/proc", 0); err != nil {
		return fail("unmount proc", err)
	}
	pid := os.Getpid()
	if _, err := switchRoot(newRootDir, fileID{Dev: uint64(st.Dev), Ino: st.Ino}); err != nil {
		return fail("switchRoot", err)
	}
	if _, err := os.Stat("/init"); os.Getpid() == pid && err != nil {
		fmt.Printf("switched: same process, /init unlinked: %s\n", errName(err))
	}
	if b, err := os.ReadFile("/lib/modules/r/load-order"); err == nil {
		fmt.Printf("switched: moved lib/modules/r/load-order: %s", b)
	}
	if names, err := oldRoot.Readdirnames(-1); err == nil {
		fmt.Printf("switched: the old root holds %v\n", names)
	}
	if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		return fail("mount proc again", err)
	}
	// "/" is now a mount with a parent. (thread-self: a
	// container thread that ended on the main thread leaves /proc/self in its namespace.)
	runtime.LockOSThread()
	if f, err := os.Open("/proc/thread-self/mountinfo"); err == nil {
		m, err := RootMountOf(f)
		f.Close()
		fmt.Printf("after the switch: agent's root is a mount with a parent: %v (%v)\n", err == nil && !m.Parentless(), err)
	}
	runtime.UnlockOSThread()
	runContainer("after the switch")
	return 0
}

// inContainer does, on a thread of its own in a new mount namespace, what runc does with a
// container's root: a mount of its own, pivot_root into it, the old root detached. It returns
// what it saw. The thread is never unlocked, so it ends with the goroutine.
func inContainer() []string {
	out := make(chan []string)
	go func() {
		runtime.LockOSThread()
		var seen []string
		defer func() { out <- seen }()
		say := func(format string, a ...any) { seen = append(seen, fmt.Sprintf(format, a...)) }
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			say("unshare: %v", err)
			return
		}
		if err := unix.Mount("tmpfs", "/ctr", "tmpfs", 0, "mode=0755"); err != nil {
			say("mount: %v", err)
			return
		}
		if err := os.Mkdir("/ctr/old", 0o700); err != nil {
			say("mkdir: %v", err)
			return
		}
		if err := os.WriteFile("/ctr/marker", []byte(ctrMarker), 0o644); err != nil {
			say("write marker: %v", err)
			return
		}
		if err := unix.PivotRoot("/ctr", "/ctr/old"); err != nil {
			say("pivot_root: %s", errName(err))
			return
		}
		say("pivot_root: ok")
		if err := unix.Chdir("/"); err != nil {
			say("chdir: %v", err)
			return
		}
		if err := unix.Unmount("/old", unix.MNT_DETACH); err != nil {
			say("detach old root: %v", err)
			return
		}
		for _, p := range []string{"/init", "/marker"} {
			if b, err := os.ReadFile(p); err != nil {
				say("sees %s: %s", p, errName(err))
			} else {
				say("sees %s: %s", p, strings.TrimSpace(string(b)))
			}
		}
		oldMounted := "no"
		if _, err := os.Stat("/old/init"); err == nil {
			oldMounted = "yes"
		}
		say("sees old root mounted: %s", oldMounted)
	}()
	return <-out
}

func errName(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		if n := unix.ErrnoName(errno); n != "" {
			return n
		}
	}
	return err.Error()
}
