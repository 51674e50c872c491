package qemuvm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestArgs(t *testing.T) {
	cfg := Config{
		Kernel: "/b/vmlinuz", Initrd: "/b/initrd.img", Append: "console=ttyS0 quiet",
		Ports:   []Port{{Name: "sealpod.agent", Socket: "/tmp/sp1/a.sock"}, {Name: "sealpod.sim-sp", Socket: "/tmp/sp1/s.sock", Connect: true}},
		UserNet: true, HostForwards: []string{"tcp:127.0.0.1:8022-:22"}, RNG: true,
	}
	args, err := cfg.Args()
	if err != nil {
		t.Fatal(err)
	}
	want := "-nodefaults -no-user-config -no-reboot -display none -monitor none -machine q35,accel=tcg -cpu max -smp 1 -m 512 " +
		"-chardev stdio,id=con0,signal=off -serial chardev:con0 -kernel /b/vmlinuz -initrd /b/initrd.img -append console=ttyS0 quiet " +
		"-device virtio-serial-pci,id=vser0 " +
		"-chardev socket,id=port0,path=/tmp/sp1/a.sock,server=on,wait=off -device virtserialport,bus=vser0.0,chardev=port0,name=sealpod.agent " +
		"-chardev socket,id=port1,path=/tmp/sp1/s.sock,server=off -device virtserialport,bus=vser0.0,chardev=port1,name=sealpod.sim-sp " +
		"-netdev user,id=net0,hostfwd=tcp:127.0.0.1:8022-:22 -device virtio-net-pci,netdev=net0,romfile= " +
		"-object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0"
	if got := strings.Join(args, " "); got != want {
		t.Errorf("args:\n got %s\nwant %s", got, want)
	}
}

func TestArgsRejects(t *testing.T) {
	long := "/tmp/" + strings.Repeat("x", 110)
	tests := map[string]Config{
		"no kernel":      {},
		"comma kernel":   {Kernel: "/a,b"},
		"comma port":     {Kernel: "k", Ports: []Port{{Name: "a,b", Socket: "/tmp/s"}}},
		"repeated port":  {Kernel: "k", Ports: []Port{{Name: "a", Socket: "/tmp/s"}, {Name: "a", Socket: "/tmp/t"}}},
		"long socket":    {Kernel: "k", Ports: []Port{{Name: "a", Socket: long}}},
		"no socket":      {Kernel: "k", Ports: []Port{{Name: "a"}}},
		"comma hostfwd":  {Kernel: "k", UserNet: true, HostForwards: []string{"tcp::1-:2,x=y"}},
		"newline append": {Kernel: "k", Machine: "q35\n"},
	}
	for name, cfg := range tests {
		if _, err := cfg.Args(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// fakeQEMU writes a script standing in for QEMU: it prints console lines, starts a child in
// its process group and waits (or exits with the given status).
func fakeQEMU(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fake-qemu")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKillStopsTheProcessGroup(t *testing.T) {
	bin := fakeQEMU(t, `sleep 300 & echo "child $!"; printf 'booting\r\nready now\r\n'; wait`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vm, err := Start(ctx, Config{Binary: bin, Kernel: "k"})
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
	if err := vm.Wait(ctx); err == nil || !strings.Contains(err.Error(), "killed") {
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
	bin := fakeQEMU(t, `echo "qemu: could not load kernel" >&2; exit 1`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vm, err := Start(ctx, Config{Binary: bin, Kernel: "k"})
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
	bin := fakeQEMU(t, `echo up; exec sleep 300`)
	ctx, cancel := context.WithCancel(context.Background())
	vm, err := Start(ctx, Config{Binary: bin, Kernel: "k"})
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
