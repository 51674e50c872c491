package cli

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/guest-image/initrd"
	"github.com/sealpod/sealpod/guest-image/kernel"
	"github.com/sealpod/sealpod/guest-image/kernel/fakesource"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/esm"
	"github.com/sealpod/sealpod/internal/repopath"
	"github.com/sealpod/sealpod/internal/testdeps"
)

var testInitPPC64LE testInitBuild

// ppcTestInit is tests/guest/testinit built for ppc64le (static: CGO_ENABLED=0), next to
// testInit's build.
func ppcTestInit(t *testing.T) string {
	t.Helper()
	dir := filepath.Dir(testInit(t))
	return testInitPPC64LE.get(t, func() (string, error) { return dir, nil }, "testinit-ppc64le", "ppc64le")
}

// TestReadInitArch: /init must be a static executable of the guest's architecture.
func TestReadInitArch(t *testing.T) {
	x86, ppc := testInit(t), ppcTestInit(t)
	for _, tc := range []struct {
		init string
		arch kernel.Arch
		want string // "" = accepted
	}{
		{x86, kernel.ArchX86_64, ""},
		{ppc, kernel.ArchPPC64LE, ""},
		{x86, kernel.ArchPPC64LE, "want a little-endian ppc64 executable"},
		{ppc, kernel.ArchX86_64, "want an x86-64 executable"},
	} {
		_, err := readInit(tc.init, tc.arch)
		if tc.want == "" && err != nil || tc.want != "" && (!errors.Is(err, ErrBadInit) || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("readInit(%s, %s) = %v, want %q", filepath.Base(tc.init), tc.arch, err, tc.want)
		}
	}
}

// TestArchFlagsRefused: for ppc64le, flags that only make sense for the x86 guest are refused
// before anything is built, naming the flag.
func TestArchFlagsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*Options)
		want string
	}{
		{"debian kernel", func(o *Options) { o.KernelFlavor = KernelDebian }, "--kernel debian"},
		{"kernel package", func(o *Options) { o.Kernel = kernel.Package{Name: "linux-image-6.1.0-56-amd64", Version: "6.1.192-2"} }, "--kernel-package"},
		{"kernel image", func(o *Options) { o.KernelImage = "/boot/vmlinuz" }, "--kernel-image"},
		{"builtin", func(o *Options) { o.BuiltinInitramfs = true }, "--builtin-initramfs"},
		{"firmware", func(o *Options) { o.Firmware = "/usr/share/ovmf/OVMF.fd" }, "--firmware"},
		{"tdx header", func(o *Options) { o.TDXKernelHeader = "unmodified" }, "--tdx-kernel-header"},
		{"unknown arch", func(o *Options) { o.Arch = "riscv64" }, "riscv64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{Arch: kernel.ArchPPC64LE, Init: ppcTestInit(t), OutDir: t.TempDir(), KernelCacheDir: t.TempDir()}
			tc.set(&o)
			_, err := Build(context.Background(), o)
			if !errors.Is(err, ErrBadKernelFlag) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrBadKernelFlag naming %q", err, tc.want)
			}
		})
	}
}

// TestBuildPPC64LEBundle builds a ppc64le bundle on the fake kernel source (whose "vmlinux" is
// a small ppc64le ELF, imagebuilder/esm's objcopy fixture): guest.json says arch ppc64le with
// the hvc0 command line and carries only the pef digests, computed as svm-tools does (the
// kernel through objcopy -O binary -S); the initrd is the x86 layout around the ppc64le init.
func TestBuildPPC64LEBundle(t *testing.T) {
	if _, err := exec.LookPath(kernel.CrossCompilePPC64LE + "gcc"); err != nil {
		testdeps.Missing(t, "%sgcc (Debian gcc-powerpc64le-linux-gnu; make deps installs it): %v", kernel.CrossCompilePPC64LE, err)
	}
	elfFixture, err := os.ReadFile(filepath.Join(repopath.Root(t), "imagebuilder/esm/testdata/objcopy/layout.elf"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o := Options{
		Arch: kernel.ArchPPC64LE, Init: ppcTestInit(t), OutDir: filepath.Join(t.TempDir(), "guest"),
		KernelSource: fakesource.Tarball(t, elfFixture), KernelCacheDir: t.TempDir(),
	}
	if _, err := Build(ctx, o); err != nil {
		t.Fatal(err)
	}
	b, src := readBundle(t, o.OutDir)
	if err := kernel.CheckPPC64LEVmlinux(b.Kernel); err != nil {
		t.Fatal(err)
	}
	c := b.Config
	if c.Arch != bundle.ArchPPC64LE || c.Cmdline != DefaultCmdlinePPC64LE || c.Measurements.Sim != "" || c.Measurements.SimTDX != nil || c.Measurements.PEF == nil {
		t.Fatalf("guest.json: %+v", c)
	}
	k, size, err := esm.KernelDigestELF(b.Kernel)
	if err != nil {
		t.Fatal(err)
	}
	ird, cmd, rtas := sha512.Sum512(b.Initrd), esm.BootargsDigest(DefaultCmdlinePPC64LE), esm.RTASDigestSVMTools()
	want := bundle.PEFMeasurement{Kernel: hex.EncodeToString(k[:]), KernelSize: size, Initrd: hex.EncodeToString(ird[:]),
		Cmdline: hex.EncodeToString(cmd[:]), RTAS: hex.EncodeToString(rtas[:])}
	if *c.Measurements.PEF != want {
		t.Errorf("pef measurement %+v, want %+v", *c.Measurements.PEF, want)
	}
	for _, line := range []string{"arch: ppc64le\n", "initrd-compression: lz4\n"} {
		if !strings.Contains(src, line) {
			t.Errorf("SOURCES.txt lacks %q:\n%s", line, src)
		}
	}
	files, err := initrd.Read(b.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	init, err := os.ReadFile(o.Init)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range files {
		if f.Path == "init" && string(f.Data) == string(init) {
			found = true
		}
	}
	if !found {
		t.Error("initrd: /init is not the ppc64le init")
	}
}
