package guest_test

// Boot test of the built-in-initramfs variant of the minimal kernel (mkguest
// --builtin-initramfs, docs/guest.md): testinit and the command line are built into the kernel,
// the bundle has no separate initrd, and the VM boots without -initrd to testinit's end. The
// host's command line is ignored (CMDLINE_OVERRIDE). Needs the minimal kernel's cache entry
// with its build tree (built first when absent, as CI does; cached afterwards).

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/tests/qemuvm"
)

func TestBootBuiltinInitramfs(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the kernel variant build and the QEMU boot")
	}
	const builtin = "console=ttyS0 quiet panic=-1 SEALPOD_TESTINIT_PORTS=2"
	dir := bootTestBundleArgs(t, "minimal", "--builtin-initramfs", "--cmdline", builtin)
	b, err := bundle.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Initrd) != 0 {
		t.Fatalf("initrd.img has %d bytes, want none (built in)", len(b.Initrd))
	}
	if want := builtin + " noinitrd"; b.Config.Cmdline != want {
		t.Fatalf("guest.json cmdline %q, want %q", b.Config.Cmdline, want)
	}
	sockDir, cleanup, err := qemuvm.ShortTempDir()
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	cfg := qemuvm.SimConfig(b, sockDir) // the shim's sim command line
	// A host that asks for 9 ports: testinit would fail waiting for them, were the host's
	// command line not ignored (CMDLINE_OVERRIDE).
	cfg.Guest.Cmdline = "console=ttyS0 SEALPOD_TESTINIT_PORTS=9"
	cmd, err := cfg.Command()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(cmd.Args, "-initrd") {
		t.Fatalf("QEMU command line has -initrd: %q", cmd.Args)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*bootTimeout)
	defer cancel()
	vm := qemuvm.StartT(t, ctx, cfg)
	for _, text := range []string{"sealpod-testinit: started", "sealpod-testinit: done"} {
		wctx, wcancel := context.WithTimeout(ctx, bootTimeout)
		_, err := vm.WaitFor(wctx, text)
		wcancel()
		if err != nil {
			t.Fatalf("%v\n%s", err, vm.Console())
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, bootTimeout)
	defer wcancel()
	if err := vm.Wait(wctx); err != nil {
		t.Fatalf("guest did not power off cleanly: %v", err)
	}
	console := vm.Console()
	for _, want := range []string{"sealpod-testinit: modules loaded 0 ", "sealpod-testinit: virtio-port sealpod.agent", "sealpod-testinit: virtio-port sealpod.sim-sp"} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q:\n%s", want, console)
		}
	}
	if strings.Contains(console, "FAIL") {
		t.Errorf("testinit failed:\n%s", console)
	}
	t.Logf("built-in variant booted to testinit's end in %v", time.Since(vm.Started()).Round(time.Millisecond))
}
