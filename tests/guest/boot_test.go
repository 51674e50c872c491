package guest_test

// Boot smoke test of the measured guest (owner: guest image). It builds a guest bundle the way
// `make guest` does, with tests/guest/testinit as /init instead of the agent, on the minimal
// kernel (the default) and on Debian's packaged kernel, boots it under QEMU software emulation
// and checks that the kernel modules (Debian's kernel) load and the virtio devices the agent
// needs appear. Runs by default when qemu-system-x86_64 is installed; -short skips it.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/guest-image/initrd"
	"github.com/sealpod/sealpod/guest-image/kernel/kerneltest"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/testdeps"
	"github.com/sealpod/sealpod/tests/qemuvm"
)

// bootTimeout bounds each wait on the guest: TCG on a loaded 2-core CI machine is slow.
const bootTimeout = 120 * time.Second

// bootGoBuild builds a package of this module into dir and returns the binary's path.
func bootGoBuild(t testing.TB, dir, pkg string, env ...string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// bootTestBundle builds a guest bundle with testinit as /init, running the real mkguest
// command, and returns its directory: kernel "minimal" (the default; built once and cached) or
// "debian" (Debian's cached kernel package).
func bootTestBundle(t testing.TB, kernel string) string {
	t.Helper()
	return bootTestBundleArgs(t, kernel)
}

// bootTestBundleArgs is bootTestBundle with extra mkguest flags.
func bootTestBundleArgs(t testing.TB, kernel string, extra ...string) string {
	t.Helper()
	if _, err := qemuvm.Available(); err != nil {
		testdeps.Missing(t, "%v", err)
	}
	dir := t.TempDir()
	initBin := bootGoBuild(t, dir, "github.com/sealpod/sealpod/tests/guest/testinit", "CGO_ENABLED=0")
	mkguest := bootGoBuild(t, dir, "github.com/sealpod/sealpod/guest-image/cmd/mkguest")
	out := filepath.Join(dir, "guest")
	args := []string{"--init", initBin, "--out", out}
	if kernel == "debian" {
		args = append(args, "--kernel-package", kerneltest.Tree(t).Package.String())
	}
	args = append(args, extra...)
	cmd := exec.Command(mkguest, args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkguest: %v\n%s", err, b)
	}
	return out
}

type bootResult struct {
	toInit, toModules, toPowerOff time.Duration
	lines                         []string
}

// bootOnce boots the bundle as the shim boots a sim VM (runtime-shim/qemu: the sealpod.agent
// and sealpod.sim-sp ports, virtio-rng, QEMU's -sandbox), on user networking, and waits for
// testinit to finish and QEMU to exit.
func bootOnce(t testing.TB, dir string) bootResult {
	t.Helper()
	b, err := bundle.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	sockDir, cleanup, err := qemuvm.ShortTempDir()
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	ctx, cancel := context.WithTimeout(context.Background(), 3*bootTimeout)
	defer cancel()
	cfg := qemuvm.SimConfig(b, sockDir) // the shim's sim command line, on user networking
	cfg.Guest.Cmdline += " SEALPOD_TESTINIT_PORTS=2"
	vm := qemuvm.StartT(t, ctx, cfg)
	var r bootResult
	wait := func(text string) time.Duration {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, bootTimeout)
		defer wcancel()
		if _, err := vm.WaitFor(wctx, text); err != nil {
			t.Fatal(err)
		}
		return time.Since(vm.Started())
	}
	r.toInit = wait("sealpod-testinit: started")
	r.toModules = wait("sealpod-testinit: modules loaded")
	wait("sealpod-testinit: done")
	wctx, wcancel := context.WithTimeout(ctx, bootTimeout)
	defer wcancel()
	if err := vm.Wait(wctx); err != nil {
		t.Fatalf("guest did not power off cleanly: %v", err)
	}
	r.toPowerOff = time.Since(vm.Started())
	r.lines = vm.Lines()
	return r
}

func TestBootSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the QEMU boot")
	}
	for _, kernel := range []string{"minimal", "debian"} {
		t.Run(kernel, func(t *testing.T) { testBootSmoke(t, kernel) })
	}
}

func testBootSmoke(t *testing.T, kernel string) {
	dir := bootTestBundle(t, kernel)
	img, err := os.Stat(filepath.Join(dir, bundle.InitrdFile))
	if err != nil {
		t.Fatal(err)
	}
	if img.Size() >= initrd.MaxSize {
		t.Errorf("initrd.img is %d bytes, limit %d", img.Size(), initrd.MaxSize)
	}
	src, err := os.ReadFile(filepath.Join(dir, "SOURCES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), "\nkernel: "+kernel+"\n") {
		t.Fatalf("SOURCES.txt does not name the %s kernel:\n%s", kernel, src)
	}
	modules := strings.Count(string(src), "\nmodule: ")

	r := bootOnce(t, dir)
	console := strings.Join(r.lines, "\n")
	if strings.Contains(console, "sealpod-testinit: FAIL") {
		t.Fatalf("testinit failed:\n%s", console)
	}
	loaded, noDevice := -1, 0
	for _, l := range r.lines {
		if rest, ok := strings.CutPrefix(l, "sealpod-testinit: modules loaded "); ok {
			loaded, _ = strconv.Atoi(strings.Fields(rest)[0])
		}
		if strings.HasPrefix(l, "sealpod-testinit: module without device ") {
			noDevice++
		}
	}
	switch kernel {
	case "minimal":
		// Everything is built in: no modules in the initrd, none loaded.
		if modules != 0 || loaded != 0 || noDevice != 0 {
			t.Errorf("minimal kernel: SOURCES.txt lists %d modules, %d loaded, %d without device", modules, loaded, noDevice)
		}
	default:
		// Every module of the load order is in the kernel, except sev-guest, which declines
		// (ENODEV) outside an SEV-SNP guest.
		if loaded <= 0 || loaded+noDevice != modules || noDevice > 1 {
			t.Errorf("modules loaded %d + without device %d, SOURCES.txt lists %d", loaded, noDevice, modules)
		}
		if noDevice == 1 && !strings.Contains(console, "without device kernel/drivers/virt/coco/sev-guest/sev-guest.ko") {
			t.Errorf("a module other than sev-guest found no device:\n%s", console)
		}
	}
	for _, want := range []string{
		"sealpod-testinit: virtio-port sealpod.agent",
		"sealpod-testinit: virtio-port sealpod.sim-sp",
		"sealpod-testinit: netdev eth0",
		"sealpod-testinit: hwrng virtio_rng.0",
	} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q:\n%s", want, console)
		}
	}
	t.Logf("%s kernel, boot under TCG: QEMU start → /init %v, → modules loaded %v, → powered off %v (initrd %d bytes)",
		kernel, r.toInit.Round(time.Millisecond), r.toModules.Round(time.Millisecond), r.toPowerOff.Round(time.Millisecond), img.Size())
}

// BenchmarkBootToModulesLoaded measures QEMU start → "modules loaded" under TCG, for the
// minimal kernel and for Debian's in the same run (compare the two as a ratio).
func BenchmarkBootToModulesLoaded(b *testing.B) {
	for _, kernel := range []string{"minimal", "debian"} {
		b.Run(kernel, func(b *testing.B) {
			dir := bootTestBundle(b, kernel)
			var total, init time.Duration
			for b.Loop() {
				r := bootOnce(b, dir)
				total += r.toModules
				init += r.toInit
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s-to-modules/op")
			b.ReportMetric(init.Seconds()/float64(b.N), "s-to-init/op")
		})
	}
}
