package qemuvm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
)

// fakeQEMU writes a script standing in for QEMU: it records its argv (one per line) in
// $dir/argv and runs body. It returns the script and the argv file.
func fakeQEMU(t *testing.T, body string) (bin, argv string) {
	t.Helper()
	dir := t.TempDir()
	bin, argv = filepath.Join(dir, "fake-qemu"), filepath.Join(dir, "argv")
	script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > " + argv + "\n" + body + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, argv
}

// testConfig is SimConfig for a bundle that needs no files (the fake QEMU opens none).
func testConfig(bin string) qemu.Config {
	b := &bundle.Bundle{Dir: "/b/guest", Initrd: []byte("initrd"), Config: bundle.Config{Cmdline: "console=ttyS0 quiet", VCPUs: 1, MemoryMiB: 512}}
	cfg := SimConfig(b, "/tmp/sp1")
	cfg.Binary = bin
	return cfg
}

// TestStartRunsTheShimsCommandLine: the guest suite's QEMU gets exactly the argv the shim's
// launcher builds (runtime-shim/qemu Config.Command, golden-tested there), confined by
// -sandbox, with the two Sealpod ports and user networking.
func TestStartRunsTheShimsCommandLine(t *testing.T) {
	bin, argvFile := fakeQEMU(t, "echo done")
	cfg := testConfig(bin)
	want, err := cfg.Command()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vm := StartT(t, ctx, cfg)
	if err := vm.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(argvFile)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if !slices.Equal(got, want.Args) {
		t.Errorf("argv:\n got %q\nwant %q", got, want.Args)
	}
	joined := strings.Join(got, " ")
	for _, s := range []string{
		"-sandbox " + qemu.Sandbox,
		"-kernel /b/guest/vmlinuz -initrd /b/guest/initrd.img -append console=ttyS0 quiet",
		"path=/tmp/sp1/agent.sock,server=on,wait=off", "name=" + qemu.AgentPortName,
		"path=/tmp/sp1/sim-sp.sock,server=on,wait=off", "name=" + qemu.SimSPPortName,
		"-netdev user,id=net0", "mac=52:54:00:12:34:56",
		"virtio-rng-pci",
	} {
		if !strings.Contains(joined, s) {
			t.Errorf("argv lacks %q: %s", s, joined)
		}
	}
}

func TestStartRefusesInvalidConfig(t *testing.T) {
	cfg := testConfig("/nonexistent")
	cfg.Guest.Kernel = "/a,b"
	if _, err := Start(context.Background(), cfg); !errors.Is(err, qemu.ErrInvalidConfig) {
		t.Fatalf("Start = %v, want ErrInvalidConfig", err)
	}
}

func TestKillStopsTheProcessGroup(t *testing.T) {
	bin, _ := fakeQEMU(t, `sleep 300 & echo "child $!"; printf 'booting\r\nready now\r\n'; wait`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vm, err := Start(ctx, testConfig(bin))
	if err != nil {
		t.Fatal(err)
	}
	line, err := vm.WaitFor(ctx, "ready")
	if err != nil || line != "ready now" {
		t.Fatalf("WaitFor = %q, %v", line, err)
	}
	child, err := vm.WaitFor(ctx, "child ")
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimPrefix(child, "child "))
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := vm.Kill(); err != nil {
		t.Fatalf("second Kill: %v", err)
	}
	// The grandchild was in QEMU's process group: it must be gone (or a zombie being reaped).
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); strings.Contains(string(b), ") Z ") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); !strings.Contains(string(b), ") Z ") {
			t.Errorf("child %d survived Kill", pid)
		}
	}
	if err := vm.Wait(ctx); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("Wait after Kill = %v", err)
	}
	if _, err := vm.WaitFor(ctx, "never"); !errors.Is(err, ErrExited) {
		t.Errorf("WaitFor after exit = %v", err)
	}
	if got := vm.Lines(); len(got) != 3 || got[1] != "booting" {
		t.Errorf("lines %q", got)
	}
}

func TestExitErrorCarriesStderr(t *testing.T) {
	bin, _ := fakeQEMU(t, `echo "qemu: could not load kernel" >&2; exit 1`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vm, err := Start(ctx, testConfig(bin))
	if err != nil {
		t.Fatal(err)
	}
	_, err = vm.WaitFor(ctx, "never")
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "could not load kernel") {
		t.Fatalf("WaitFor = %v", err)
	}
	if err := vm.Wait(ctx); err == nil || !strings.Contains(err.Error(), "could not load kernel") {
		t.Fatalf("Wait = %v", err)
	}
}

func TestContextCancelKills(t *testing.T) {
	bin, _ := fakeQEMU(t, `echo up; exec sleep 300`)
	ctx, cancel := context.WithCancel(context.Background())
	vm, err := Start(ctx, testConfig(bin))
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if _, err := vm.WaitFor(wctx, "up"); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-vm.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("QEMU still running after its context was cancelled")
	}
}

// TestConsoleLines: the console keeps whole lines however the writes are cut.
func TestConsoleLines(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   []string
	}{
		{"one write per line", []string{"a\n", "b\n"}, []string{"a", "b"}},
		{"split line", []string{"ab", "c\nd", "\n"}, []string{"abc", "d"}},
		{"two lines in one write", []string{"a\nb\n"}, []string{"a", "b"}},
		{"unterminated tail", []string{"a\nb"}, []string{"a"}},
		{"empty lines", []string{"\n\n"}, []string{"", ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &console{changed: make(chan struct{})}
			for _, w := range tc.writes {
				if n, err := c.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if !slices.Equal(c.lines, tc.want) {
				t.Errorf("lines %q, want %q", c.lines, tc.want)
			}
		})
	}
}
