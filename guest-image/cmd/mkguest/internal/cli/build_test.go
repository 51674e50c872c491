package cli

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealpod/sealpod/guest-image/initrd"
	"github.com/sealpod/sealpod/guest-image/kernel"
	"github.com/sealpod/sealpod/guest-image/kernel/kerneltest"
	"github.com/sealpod/sealpod/guest-image/measure"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/internal/testdeps"
)

var (
	testInitHost testInitBuild
	testInitDir  string // where testInitHost is built; TestMain removes it
)

func TestMain(m *testing.M) {
	code := m.Run()
	if testInitDir != "" {
		os.RemoveAll(testInitDir)
	}
	os.Exit(code)
}

// testInitBuild is tests/guest/testinit built as a static binary (CGO_ENABLED=0) for one
// GOARCH, once per test run.
type testInitBuild struct {
	once sync.Once
	path string
	err  error
}

// get builds the init the first time, as name in the directory dir returns, for goarch
// ("" = the host's); every call returns the path of that build, or fails t with its error.
func (b *testInitBuild) get(t *testing.T, dir func() (string, error), name, goarch string) string {
	t.Helper()
	b.once.Do(func() {
		d, err := dir()
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(d, name)
		cmd := exec.Command("go", "build", "-trimpath", "-o", b.path, "github.com/sealpod/sealpod/tests/guest/testinit")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		what := "testinit"
		if goarch != "" {
			cmd.Env = append(cmd.Env, "GOARCH="+goarch)
			what += " for " + goarch
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = errors.New("go build " + what + ": " + err.Error() + ": " + string(out))
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// testInit builds tests/guest/testinit as a static binary for the host, once per test run.
func testInit(t *testing.T) string {
	t.Helper()
	return testInitHost.get(t, func() (string, error) {
		var err error
		testInitDir, err = os.MkdirTemp("", "mkguest-test-")
		return testInitDir, err
	}, "testinit", "")
}

func TestReadInit(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "script")
	if err := os.WriteFile(text, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := map[string]string{
		"":                            "path required",
		filepath.Join(dir, "missing"): "build the agent first",
		text:                          "not an ELF executable",
	}
	// Any dynamically linked executable of the host (Debian's are).
	if sh, err := exec.LookPath("sh"); err == nil {
		if real, err := filepath.EvalSymlinks(sh); err == nil {
			tests[real] = "dynamically linked"
		}
	}
	for in, want := range tests {
		if _, err := readInit(in, kernel.ArchX86_64); !errors.Is(err, ErrBadInit) && !errors.Is(err, fs.ErrNotExist) || err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("readInit(%q) err = %v, want %q", in, err, want)
		}
	}
	if _, err := readInit(testInit(t), kernel.ArchX86_64); err != nil {
		t.Errorf("static test init refused: %v", err)
	}
}

// buildOpts returns options building with the cached Debian kernel (pinned, so that two
// builds cannot straddle an apt index update).
func buildOpts(t *testing.T, tree *kernel.Tree, out string) Options {
	dir, err := kernel.DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	return Options{Init: testInit(t), OutDir: out, CacheDir: dir, Kernel: tree.Package}
}

// TestBuildReproducible runs the whole guest build twice on Debian's kernel package and
// checks byte-identical output, the initrd's layout and size, and that guest.json's
// measurements are what the measure package computes for the bundle as loaded from disk.
func TestBuildReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the guest build on Debian's kernel package")
	}
	tree := kerneltest.Tree(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	outs := []string{filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")}
	var res *Result
	for _, out := range outs {
		start := time.Now()
		r, err := Build(ctx, buildOpts(t, tree, out))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("build %s: %v (initrd %d bytes)", out, time.Since(start).Round(time.Millisecond), r.InitrdBytes)
		res = r
	}
	for _, name := range []string{bundle.KernelFile, bundle.InitrdFile, bundle.ConfigFile, SourcesFile} {
		a, err := os.ReadFile(filepath.Join(outs[0], name))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(outs[1], name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two builds", name)
		}
	}

	b, err := bundle.Load(outs[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Initrd) >= initrd.MaxSize {
		t.Errorf("initrd.img is %d bytes, limit %d", len(b.Initrd), initrd.MaxSize)
	}
	want, err := measure.Compute(measure.BundleInputs(b, tee.Sim, tee.SimTDX, tee.PEF))
	if err != nil {
		t.Fatal(err)
	}
	if b.Config.Measurements.Sim != want.Sim || *b.Config.Measurements.PEF != *want.PEF || want.Sim == "" {
		t.Errorf("guest.json measurements %+v, recomputed %+v", b.Config.Measurements, want)
	}
	if got, err := b.Config.Measurement(tee.SimTDX); err != nil || want.SimTDX == nil || got != strings.Join(append([]string{want.SimTDX.MRTD}, want.SimTDX.RTMRs...), ":") {
		t.Errorf("guest.json sim-tdx measurement %q (%v), recomputed %+v", got, err, want.SimTDX)
	}
	if b.Config.Cmdline != DefaultCmdline || b.Config.VCPUs != 1 || b.Config.MemoryMiB != 512 || b.Firmware != nil {
		t.Errorf("guest.json %+v", b.Config)
	}

	// The initrd: /init is the binary, /dev/console is 5:1, every module of load-order is there.
	entries, err := initrd.Read(b.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]initrd.Entry{}
	for _, e := range entries {
		files[e.Path] = e
	}
	initBin, err := os.ReadFile(testInit(t))
	if err != nil {
		t.Fatal(err)
	}
	if e := files["init"]; !bytes.Equal(e.Data, initBin) || e.Mode != 0o755 {
		t.Errorf("/init: mode %v, %d bytes", e.Mode, len(e.Data))
	}
	if e := files["dev/console"]; e.Mode&fs.ModeCharDevice == 0 || e.Major != 5 || e.Minor != 1 {
		t.Errorf("/dev/console: %+v", e)
	}
	modRoot := path.Join("lib/modules", res.Release)
	lo, ok := files[path.Join(modRoot, "load-order")]
	if !ok {
		t.Fatal("no load-order")
	}
	lines := strings.Fields(string(lo.Data))
	if len(lines) != len(res.Modules) || len(lines) < len(kernel.DefaultModules) {
		t.Errorf("load-order has %d lines, %d modules resolved", len(lines), len(res.Modules))
	}
	for _, l := range lines {
		e, ok := files[path.Join(modRoot, l)]
		if !ok {
			t.Errorf("load-order lists %s, not in the initrd", l)
			continue
		}
		orig, err := os.ReadFile(filepath.Join(tree.ModulesDir(), l))
		if err != nil || !bytes.Equal(orig, e.Data) {
			t.Errorf("module %s is not the package's file verbatim (%v)", l, err)
		}
	}
	src, err := os.ReadFile(filepath.Join(outs[0], SourcesFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kernel-package: " + tree.Package.String(), "kernel-release: " + res.Release, "module: virtio_pci "} {
		if !strings.Contains(string(src), want) {
			t.Errorf("SOURCES.txt lacks %q:\n%s", want, src)
		}
	}
}

func TestBuildRefuses(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the guest build on Debian's kernel package")
	}
	tree := kerneltest.Tree(t)
	ctx := context.Background()

	o := buildOpts(t, tree, t.TempDir())
	o.MaxInitrdSize = 1 << 20
	if _, err := Build(ctx, o); !errors.Is(err, ErrInitrdLarge) {
		t.Errorf("1 MiB limit: err = %v", err)
	}
	o = buildOpts(t, tree, t.TempDir())
	o.Modules = []string{"virtio_pci", "no_such_module"}
	if _, err := Build(ctx, o); !errors.Is(err, kernel.ErrNoModule) {
		t.Errorf("unknown module: err = %v", err)
	}
	o = buildOpts(t, tree, t.TempDir())
	o.VCPUs = 1000
	if _, err := Build(ctx, o); err == nil || !strings.Contains(err.Error(), "vcpus") {
		t.Errorf("1000 vCPUs: err = %v", err)
	}
	for _, name := range []string{bundle.ConfigFile, bundle.InitrdFile} {
		if _, err := os.Stat(filepath.Join(o.OutDir, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("failed build left %s", name)
		}
	}
}

func TestBuildRemovesStaleFirmware(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the guest build on Debian's kernel package")
	}
	tree := kerneltest.Tree(t)
	o := buildOpts(t, tree, t.TempDir())
	stale := filepath.Join(o.OutDir, bundle.FirmwareFile)
	if err := os.WriteFile(stale, []byte("old firmware"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stale firmware.fd kept: %v", err)
	}
}

func TestCommandHelpAndFlags(t *testing.T) {
	cmd := NewMkguestCmd()
	if cmd.Example == "" {
		t.Error("no Example")
	}
	cmd.SetArgs([]string{"--init", testInit(t), "--compression", "brotli"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "brotli") {
		t.Errorf("bad compression: %v", err)
	}
	cmd = NewMkguestCmd()
	cmd.SetArgs([]string{"--init", testInit(t), "--kernel-package", "linux-image-amd64"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "name=version") {
		t.Errorf("bad pin: %v", err)
	}
	cmd = NewMkguestCmd()
	cmd.SetArgs([]string{})
	cmd.SetErr(&bytes.Buffer{})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "init") {
		t.Errorf("missing --init: %v", err)
	}
}

// TestBuildWithDebianOVMF: Debian's OVMF has SEV metadata but no kernel-hashes table (no snp
// value possible for a direct-boot kernel) and TDX metadata whose MRTD would not bind the
// 6.1 kernel (no RTMR[2]): the bundle carries the firmware, sim and pef, and neither snp nor tdx.
func TestBuildWithDebianOVMF(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the guest build on Debian's kernel package")
	}
	const fw = "/usr/share/ovmf/OVMF.fd"
	if _, err := os.Stat(fw); err != nil {
		testdeps.Missing(t, "%s not installed (apt-get install ovmf): %v", fw, err)
	}
	tree := kerneltest.Tree(t)
	o := buildOpts(t, tree, t.TempDir())
	o.Firmware = fw
	if _, err := Build(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Load(o.OutDir)
	if err != nil {
		t.Fatal(err)
	}
	m := b.Config.Measurements
	if b.Firmware == nil || m.Sim == "" || m.PEF == nil || m.SNP != "" || m.TDX != nil {
		t.Fatalf("measurements %+v (firmware %d bytes)", m, len(b.Firmware))
	}
	want, err := measure.Compute(measure.BundleInputs(b, tee.Sim))
	if err != nil || want.Sim != m.Sim {
		t.Fatalf("sim %s, recomputed with the firmware %s (%v)", m.Sim, want.Sim, err)
	}
	src, err := os.ReadFile(filepath.Join(o.OutDir, SourcesFile))
	if err != nil || !strings.Contains(string(src), "tdx-omitted:") || !strings.Contains(string(src), "firmware-sha256: ") {
		t.Fatalf("SOURCES.txt:\n%s (%v)", src, err)
	}
}
