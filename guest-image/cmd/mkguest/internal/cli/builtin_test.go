package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/guest-image/initrd"
	"github.com/sealpod/sealpod/guest-image/kernel"
	"github.com/sealpod/sealpod/guest-image/kernel/fakesource"
	"github.com/sealpod/sealpod/guest-image/measure/measuretest"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
)

// fakeKernelOpts returns options building the minimal kernel from a fake source (package
// fakesource) whose bzImage is a synthetic 6.1 EFI-stub kernel followed by the .config and
// the built-in initramfs: the real cache, tree and variant logic and the real measurements,
// in seconds. With tdvf, a synthetic TDVF is the firmware.
func fakeKernelOpts(t *testing.T, tdvf bool) Options {
	t.Helper()
	o := Options{
		Init:           testInit(t),
		OutDir:         filepath.Join(t.TempDir(), "guest"),
		KernelSource:   fakesource.Tarball(t, measuretest.EFIKernel("6.1.0-sealpod", 0x4000)),
		KernelCacheDir: t.TempDir(),
	}
	if tdvf {
		o.Firmware = filepath.Join(t.TempDir(), "TDVF.fd")
		if err := os.WriteFile(o.Firmware, measuretest.TDVF(t), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

func readBundle(t *testing.T, dir string) (*bundle.Bundle, string) {
	t.Helper()
	b, err := bundle.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(dir, SourcesFile))
	if err != nil {
		t.Fatal(err)
	}
	return b, string(src)
}

var zeroRTMR = strings.Repeat("00", 48)

// TestBuildBuiltinInitramfs: --builtin-initramfs puts /init and the command line (with
// noinitrd) into the kernel, leaves initrd.img empty, and with a TDVF emits the tdx value
// (RTMR[1] of the kernel, RTMR[2] zero for 6.1), which a separate initrd could not get. The
// same inputs give the same files; another agent or command line gives another RTMR[1].
func TestBuildBuiltinInitramfs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := fakeKernelOpts(t, true)

	// Without it: a separate initrd, no tdx value (what `make guest` gave before).
	sep := o
	sep.OutDir = filepath.Join(t.TempDir(), "separate")
	if _, err := Build(ctx, sep); err != nil {
		t.Fatal(err)
	}
	sb, ssrc := readBundle(t, sep.OutDir)
	if sb.Config.Measurements.TDX != nil || !strings.Contains(ssrc, "tdx-omitted:") || len(sb.Initrd) == 0 {
		t.Fatalf("separate initrd: tdx %+v, initrd %d bytes", sb.Config.Measurements.TDX, len(sb.Initrd))
	}

	o.BuiltinInitramfs = true
	res, err := Build(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	b, src := readBundle(t, o.OutDir)
	if len(b.Initrd) != 0 || res.InitrdBytes != 0 {
		t.Errorf("initrd.img has %d bytes, want none (built in)", len(b.Initrd))
	}
	if want := DefaultCmdline + " noinitrd"; b.Config.Cmdline != want {
		t.Errorf("cmdline %q, want %q", b.Config.Cmdline, want)
	}
	initBin, err := os.ReadFile(o.Init)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b.Kernel, initBin) || !bytes.Contains(b.Kernel, []byte(`CONFIG_CMDLINE="`+b.Config.Cmdline+`"`)) {
		t.Errorf("vmlinuz lacks the uncompressed /init or the built-in command line")
	}
	m := b.Config.Measurements
	if m.TDX == nil || len(m.TDX.RTMRs) != 4 || m.TDX.RTMRs[1] == "" || m.TDX.RTMRs[2] != zeroRTMR {
		t.Fatalf("tdx value %+v, want RTMR[1] pinned and RTMR[2] zero", m.TDX)
	}
	if m.Sim == "" || m.PEF == nil || m.SimTDX == nil {
		t.Errorf("measurements %+v: want sim, sim-tdx and pef too", m)
	}
	for _, want := range []string{"kernel-builtin-initramfs-sha256: ", "kernel-builtin-cmdline: " + b.Config.Cmdline + "\n", "tdx-kernel-header: qemu\n"} {
		if !strings.Contains(src, want) {
			t.Errorf("SOURCES.txt lacks %q:\n%s", want, src)
		}
	}
	if strings.Contains(src, "tdx-omitted") {
		t.Errorf("SOURCES.txt says tdx omitted:\n%s", src)
	}

	again := o
	again.OutDir = filepath.Join(t.TempDir(), "again")
	if _, err := Build(ctx, again); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{bundle.KernelFile, bundle.InitrdFile, bundle.ConfigFile, SourcesFile} {
		x, _ := os.ReadFile(filepath.Join(o.OutDir, name))
		y, err := os.ReadFile(filepath.Join(again.OutDir, name))
		if err != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs between two builds of the same inputs (%v)", name, err)
		}
	}

	otherInit := filepath.Join(t.TempDir(), "init")
	if err := os.WriteFile(otherInit, append(bytes.Clone(initBin), "another agent"...), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(*Options){
		"other agent":   func(o *Options) { o.Init = otherInit },
		"other cmdline": func(o *Options) { o.Cmdline = "console=ttyS0 panic=-1" },
	} {
		other := o
		other.OutDir = filepath.Join(t.TempDir(), "other")
		change(&other)
		if _, err := Build(ctx, other); err != nil {
			t.Fatal(err)
		}
		ob, _ := readBundle(t, other.OutDir)
		if ob.Config.Measurements.TDX == nil || ob.Config.Measurements.TDX.RTMRs[1] == m.TDX.RTMRs[1] {
			t.Errorf("%s: RTMR[1] %+v, want one different from %s", name, ob.Config.Measurements.TDX, m.TDX.RTMRs[1])
		}
	}
}

// TestBuildKernelImage: --kernel-image is used byte for byte, without modules; with a TDVF and
// a ≥ 6.9 kernel the tdx value is emitted for --tdx-kernel-header unmodified (RTMR[2] covers
// the separate initrd) and omitted for qemu (QEMU writes the initrd address into the header).
func TestBuildKernelImage(t *testing.T) {
	ctx := context.Background()
	img := measuretest.EFIKernel("6.12.1-owner", 0x4000)
	path := filepath.Join(t.TempDir(), "bzImage")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		header string
		tdx    bool
	}{{"unmodified", true}, {"qemu", false}} {
		t.Run(tc.header, func(t *testing.T) {
			o := fakeKernelOpts(t, true)
			o.KernelSource, o.KernelImage, o.TDXKernelHeader = "", path, tc.header
			res, err := Build(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			b, src := readBundle(t, o.OutDir)
			if !bytes.Equal(b.Kernel, img) || res.Release != "6.12.1-owner" || len(res.Modules) != 0 {
				t.Errorf("vmlinuz is not the image as given (release %q, %d modules)", res.Release, len(res.Modules))
			}
			if !strings.Contains(src, "kernel: image\n") || !strings.Contains(src, "initrd-compression: none\n") {
				t.Errorf("SOURCES.txt:\n%s", src)
			}
			if got := b.Config.Measurements.TDX != nil; got != tc.tdx {
				t.Errorf("tdx value present = %v, want %v", got, tc.tdx)
			}
		})
	}
}

// TestKernelFlagsRefused: each kernel flag is validated, with a clear error, before any build.
func TestKernelFlagsRefused(t *testing.T) {
	dir := t.TempDir()
	notBz := filepath.Join(dir, "notbz")
	noStub := filepath.Join(dir, "nostub")
	if err := os.WriteFile(notBz, []byte("just bytes, no setup header"), 0o644); err != nil {
		t.Fatal(err)
	}
	raw := measuretest.EFIKernel("6.12.1", 0x4000)
	copy(raw, "XX") // no MZ: not an EFI stub
	if err := os.WriteFile(noStub, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	fw := filepath.Join(dir, "TDVF.fd")
	if err := os.WriteFile(fw, measuretest.TDVF(t), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		set  func(*Options)
		want string
	}{
		{"option syntax", func(o *Options) { o.KernelOptions = []string{"TDX_GUEST_DRIVER=y"} }, `--kernel-option "TDX_GUEST_DRIVER=y"`},
		{"option module", func(o *Options) { o.KernelOptions = []string{"CONFIG_TSM_REPORTS=m"} }, "CONFIG_NAME=y"},
		{"option newline", func(o *Options) { o.KernelOptions = []string{"CONFIG_X=y\nCONFIG_Y=y"} }, "--kernel-option"},
		{"option quote", func(o *Options) { o.KernelOptions = []string{`CONFIG_X="a"b"`} }, "--kernel-option"},
		{"option reserved", func(o *Options) { o.KernelOptions = []string{`CONFIG_CMDLINE="x"`} }, "set by --cmdline"},
		{"option debian", func(o *Options) { o.KernelFlavor = KernelDebian; o.KernelOptions = []string{"CONFIG_X=y"} }, "configures the minimal kernel"},
		{"builtin debian", func(o *Options) { o.KernelFlavor = KernelDebian; o.BuiltinInitramfs = true }, "--builtin-initramfs builds the minimal kernel"},
		{"builtin gzip", func(o *Options) { o.BuiltinInitramfs = true; o.Compression = initrd.CompressGzip }, "--compression gzip"},
		{"image and builtin", func(o *Options) { o.KernelImage = noStub; o.BuiltinInitramfs = true }, "--builtin-initramfs does not apply"},
		{"image and option", func(o *Options) { o.KernelImage = noStub; o.KernelOptions = []string{"CONFIG_X=y"} }, "--kernel-option does not apply"},
		{"image missing", func(o *Options) { o.KernelImage = filepath.Join(dir, "missing") }, "no such file"},
		{"image not bzImage", func(o *Options) { o.KernelImage = notBz }, "not an x86 bzImage"},
		{"image without stub", func(o *Options) { o.KernelImage = noStub; o.Firmware = fw }, "no EFI stub"},
		{"header value", func(o *Options) { o.TDXKernelHeader = "patched"; o.Firmware = fw }, "want qemu or unmodified"},
		{"header without firmware", func(o *Options) { o.TDXKernelHeader = "unmodified" }, "needs --firmware"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{Init: testInit(t), OutDir: filepath.Join(t.TempDir(), "out"), KernelCacheDir: filepath.Join(dir, "no-cache")}
			tc.set(&o)
			_, err := Build(context.Background(), o)
			if !errors.Is(err, ErrBadKernelFlag) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrBadKernelFlag mentioning %q", err, tc.want)
			}
			if _, err := os.Stat(o.OutDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("refused build wrote %s", o.OutDir)
			}
		})
	}
}

// TestKernelOptionFragment: --kernel-option lines are appended to the minimal fragment (=n as
// "is not set"), change the cache key, reach the kernel's .config and are listed in SOURCES.txt.
func TestKernelOptionFragment(t *testing.T) {
	frag, err := fragment(kernel.ArchX86_64, []string{"CONFIG_TSM_REPORTS=y", "CONFIG_NR_CPUS=8", "CONFIG_SEV_GUEST=n", `CONFIG_DEFAULT_HOSTNAME="pod"`})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(frag, []byte("# Sealpod")) || !bytes.HasSuffix(frag, []byte("CONFIG_TSM_REPORTS=y\nCONFIG_NR_CPUS=8\n# CONFIG_SEV_GUEST is not set\nCONFIG_DEFAULT_HOSTNAME=\"pod\"\n")) {
		t.Fatalf("fragment ends:\n%s", frag[max(0, len(frag)-200):])
	}
	if f, err := fragment(kernel.ArchX86_64, nil); f != nil || err != nil {
		t.Fatalf("no options: %q %v, want the default fragment (nil)", f, err)
	}
	ctx := context.Background()
	o := fakeKernelOpts(t, false)
	plain, err := Build(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	o.OutDir = filepath.Join(t.TempDir(), "opt")
	o.KernelOptions = []string{"CONFIG_TSM_REPORTS=y"}
	res, err := Build(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Minimal.Key == plain.Minimal.Key {
		t.Errorf("the option did not change the cache key")
	}
	cfg, err := os.ReadFile(res.Minimal.ConfigPath())
	if err != nil || !bytes.Contains(cfg, []byte("\nCONFIG_TSM_REPORTS=y\n")) {
		t.Errorf("kernel .config lacks the option: %v", err)
	}
	_, src := readBundle(t, o.OutDir)
	if !strings.Contains(src, "kernel-option: CONFIG_TSM_REPORTS=y\n") {
		t.Errorf("SOURCES.txt:\n%s", src)
	}
}
