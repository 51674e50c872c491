package containers

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPauseProcess starts the pause as StartPod does and checks what it must be: ready with the
// pod's hostname, confined to its empty root, no capabilities, ended by SIGTERM;
// and with cgo (the agent's build) the C pause, which never starts the Go runtime (one thread).
func TestPauseProcess(t *testing.T) {
	requireRoot(t)
	root := filepath.Join(t.TempDir(), "pause-root")
	if err := os.Mkdir(root, 0o555); err != nil {
		t.Fatal(err)
	}
	ready, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer ready.Close()
	cmd := exec.Command("/proc/self/exe", pauseArg)
	cmd.Args[0] = "sealpod-pause"
	cmd.Stdout = readyW
	cmd.Env = []string{pauseEnv + "=1", pauseHostnameEnv + "=pause-test", pauseRootEnv + "=" + root}
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	defer func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() }()
	_ = ready.SetReadDeadline(time.Now().Add(20 * time.Second))
	if line, err := bufio.NewReader(ready).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("pause: %q %v", line, err)
	}
	pid := cmd.Process.Pid
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "CapPrm:\t0000000000000000"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("pause status lacks %q:\n%s", want, status)
		}
	}
	threads := ""
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			threads = strings.TrimSpace(v)
		}
	}
	if pauseInC && threads != "1" {
		t.Errorf("pause has %s threads: the Go runtime started (want the C pause: 1 thread)", threads)
	}
	if got, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/root"); err != nil || got != root {
		t.Errorf("pause root %q (%v), want %q", got, err, root)
	}
	if host := utsHostname(t, pid); host != "pause-test" {
		t.Errorf("pause hostname %q, want pause-test", host)
	}
	if err := cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("pause after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("pause ignored SIGTERM")
	}
}

// utsHostname reads the hostname in pid's UTS namespace from a thread that joins it and dies.
func utsHostname(t *testing.T, pid int) string {
	t.Helper()
	out := make(chan string, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/uts")
		if err != nil {
			out <- "open: " + err.Error()
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWUTS); err != nil {
			out <- "setns: " + err.Error()
			return
		}
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			out <- "uname: " + err.Error()
			return
		}
		out <- unix.ByteSliceToString(u.Nodename[:])
	}()
	return <-out
}
