package qemu

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealpod/sealpod/internal/syncbuf"
)

// fakeQEMU writes an executable shell script standing in for QEMU and returns its path.
// The script records its argv (one per line) in $dir/argv and runs body.
func fakeQEMU(t *testing.T, body string) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "qemu")
	script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > " + dir + "/argv\n" + body + "\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

func simConfig(binary string) Config {
	return Config{Binary: binary, TEE: TEESim, Guest: guest(""), AgentSocket: "/tmp/a.sock", SimSPSocket: "/tmp/s.sock"}
}

// syncBuf is a console sink the test reads while QEMU writes.
type syncBuf = syncbuf.Buffer

func waitFile(t *testing.T, p string) []byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(p)
		if err == nil && len(b) > 0 && bytes.HasSuffix(b, []byte("\n")) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written within 10 s", p)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestStartPassesArgvAndTap(t *testing.T) {
	bin, dir := fakeQEMU(t, `[ -e /proc/self/fd/3 ] && echo "fd3 present" || echo "fd3 missing"
echo "line two"; echo "end" > `+"$(dirname $0)"+`/done`)
	tap, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	cfg := simConfig(bin)
	cfg.NIC = &NIC{TapFile: tap, MAC: mac, VNetHdr: true}
	var console syncBuf
	vm, err := Start(cfg, StartOptions{Console: &console})
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(context.Background()); err != nil {
		t.Fatalf("wait: %v", err)
	}
	want, _ := cfg.Command()
	got := strings.Split(strings.TrimSuffix(string(waitFile(t, filepath.Join(dir, "argv"))), "\n"), "\n")
	if strings.Join(got, "\x00") != strings.Join(want.Args, "\x00") {
		t.Errorf("argv seen by QEMU:\n%q\nwant\n%q", got, want.Args)
	}
	if c := console.String(); c != "fd3 present\nline two\n" {
		t.Errorf("console %q", c)
	}
}

func TestStopSIGTERM(t *testing.T) {
	bin, dir := fakeQEMU(t, `trap 'echo "terminating on signal 15"; exit 0' TERM
echo $$ > `+"$(dirname $0)"+`/pid
while :; do sleep 0.05; done`)
	var console syncBuf
	vm, err := Start(simConfig(bin), StartOptions{Console: &console})
	if err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, "pid"))
	if rss, err := vm.RSS(); err != nil || rss == 0 {
		t.Errorf("RSS of a running process: %d, %v", rss, err)
	}
	start := time.Now()
	if err := vm.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("Stop took %v: SIGTERM was not honoured, SIGKILL was needed", el)
	}
	if err := vm.Wait(context.Background()); err != nil {
		t.Errorf("QEMU exiting 0 on SIGTERM: Wait = %v", err)
	}
	if !strings.Contains(console.String(), "terminating on signal 15") {
		t.Errorf("the fake did not see SIGTERM; console %q", console.String())
	}
	if _, err := vm.RSS(); !errors.Is(err, ErrNotRunning) {
		t.Errorf("RSS after exit: %v, want ErrNotRunning", err)
	}
	if err := vm.Stop(time.Second); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// TestStopEscalatesToKill: a QEMU that ignores SIGTERM is killed after the grace period, and
// so is every process of its group.
func TestStopEscalatesToKill(t *testing.T) {
	bin, dir := fakeQEMU(t, `trap '' TERM
sleep 1000 &
echo $! > `+"$(dirname $0)"+`/child
wait`)
	vm, err := Start(simConfig(bin), StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(string(waitFile(t, filepath.Join(dir, "child")))))
	if err != nil {
		t.Fatal(err)
	}
	if !alive(child) || !alive(vm.PID()) {
		t.Fatal("fake QEMU or its child not running")
	}
	start := time.Now()
	if err := vm.Stop(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Errorf("Stop returned after %v, before the grace period: SIGTERM was not ignored?", el)
	}
	err = vm.Wait(context.Background())
	var ee interface{ Sys() any }
	if err == nil || !errors.As(err, &ee) {
		t.Fatalf("Wait after SIGKILL: %v", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Errorf("exit %v, want killed by SIGKILL", ee.Sys())
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(child) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d of the QEMU process group survived", child)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWaitReportsFailure(t *testing.T) {
	bin, _ := fakeQEMU(t, `echo "qemu-system-x86_64: -object sev-snp-guest: invalid object type" >&2; exit 1`)
	vm, err := Start(simConfig(bin), StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = vm.Wait(context.Background())
	if err == nil || !strings.Contains(err.Error(), "invalid object type") {
		t.Fatalf("Wait = %v, want QEMU's stderr in the error", err)
	}
	if vm.ExitError() == nil {
		t.Error("ExitError nil after exit 1")
	}
	select {
	case <-vm.Exited():
	default:
		t.Error("Exited not closed")
	}
}

func TestWaitContext(t *testing.T) {
	bin, _ := fakeQEMU(t, `sleep 1000`)
	vm, err := Start(simConfig(bin), StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := vm.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait = %v, want DeadlineExceeded", err)
	}
	if vm.ExitError() != nil {
		t.Fatal("ExitError set while running")
	}
	if err := vm.Kill(); err != nil {
		t.Fatal(err)
	}
	if alive(vm.PID()) {
		t.Fatal("still alive after Kill")
	}
}

func TestStartMissingBinary(t *testing.T) {
	_, err := Start(simConfig(filepath.Join(t.TempDir(), "no-qemu")), StartOptions{})
	if err == nil || !strings.Contains(err.Error(), "no-qemu") {
		t.Fatalf("got %v", err)
	}
	if _, err := Start(Config{}, StartOptions{}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("empty config: %v", err)
	}
}

func TestParseVmRSS(t *testing.T) {
	cases := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"Name:\tqemu\nVmHWM:\t  200 kB\nVmRSS:\t  123456 kB\nRssAnon:\t1 kB\n", 123456 * 1024, true},
		{"VmRSS: 0 kB\n", 0, true},
		{"Name:\tkthreadd\nState:\tS\n", 0, false},
		{"VmRSS:\t12 MB\n", 0, false},
		{"VmRSS:\tx kB\n", 0, false},
		{"VmRSS:\t99999999999999999999 kB\n", 0, false},
		{"VmRSS:\n", 0, false},
	}
	for _, tc := range cases {
		got, err := ParseVmRSS([]byte(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseVmRSS(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	self, err := ReadRSS(os.Getpid())
	if err != nil || self < 1<<20 {
		t.Errorf("own RSS %d, %v: want at least 1 MiB", self, err)
	}
}

func FuzzParseVmRSS(f *testing.F) {
	f.Add([]byte("VmRSS:\t  123456 kB\n"))
	f.Add([]byte("VmRSS:\n"))
	f.Add([]byte("VmRSS: 1 kB 2\nVmRSS: 3 kB"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := ParseVmRSS(b)
		if err == nil && n%1024 != 0 {
			t.Fatalf("%d is not a whole number of kB", n)
		}
	})
}
