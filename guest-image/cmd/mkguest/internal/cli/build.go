// Package cli implements mkguest, the build of the measured guest bundle (docs/guest.md):
// the minimal kernel built from Debian's linux-source-6.1 (or Debian's packaged kernel), a
// deterministic initrd holding /init (the agent) and, for Debian's kernel, the modules it
// loads, and guest.json with the reference measurements.
package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/sealpod/sealpod/internal/atomicfile"

	"github.com/sealpod/sealpod/guest-image/initrd"
	"github.com/sealpod/sealpod/guest-image/kernel"
	"github.com/sealpod/sealpod/guest-image/measure"
	"github.com/sealpod/sealpod/guest-image/measure/tdx"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/tee"
)

// Defaults of the guest build. See docs/guest.md for why the console is ttyS0.
const (
	DefaultCmdline = "console=ttyS0 quiet panic=-1"
	// DefaultCmdlinePPC64LE is the ppc64le default: hvc0 is the pseries hypervisor console.
	DefaultCmdlinePPC64LE = "console=hvc0 quiet panic=-1"
	DefaultVCPUs          = 1
	DefaultMemoryMiB      = 512
	DefaultCompression    = initrd.CompressAuto
	SourcesFile           = "SOURCES.txt"
)

// Kernel flavours (--kernel).
const (
	// KernelMinimal is Sealpod's own kernel: linux-source-6.1, tinyconfig plus
	// guest-image/kernel/minimal.config, everything built in (the default).
	KernelMinimal = "minimal"
	// KernelDebian is Debian's packaged kernel with the modules the agent loads.
	KernelDebian = "debian"
)

// Errors callers may branch on.
var (
	ErrBadInit     = errors.New("unusable init binary")
	ErrInitrdLarge = errors.New("initrd exceeds the size limit")
)

// Options describe one guest build.
type Options struct {
	// Init is the static binary installed as /init (the agent, or a test init).
	Init string
	// Arch is the guest architecture (default kernel.ArchX86_64). kernel.ArchPPC64LE builds
	// the pseries (IBM PEF) guest: the minimal kernel only, cross-compiled; its vmlinuz is the
	// vmlinux ELF and Init must be a static ppc64le executable.
	Arch kernel.Arch
	// KernelFlavor is KernelMinimal (default) or KernelDebian (implied by Kernel).
	KernelFlavor string
	// KernelSource is the minimal kernel's source tarball (default Debian's linux-source-6.1).
	KernelSource string
	// KernelCacheDir holds built minimal kernels (default ~/.cache/sealpod/kernel).
	KernelCacheDir string
	// OutDir receives vmlinuz, initrd.img, guest.json, SOURCES.txt (and firmware.fd).
	OutDir string
	// CacheDir holds downloaded and unpacked kernel packages.
	CacheDir string
	// MetaPackage names the kernel when Kernel is unset (default linux-image-amd64).
	MetaPackage string
	// Kernel pins the kernel package (name=version); zero = resolve MetaPackage with apt.
	Kernel kernel.Package
	// Modules and OptionalModules are resolved with their dependencies; an optional module
	// the kernel lacks is skipped and recorded in SOURCES.txt.
	Modules, OptionalModules []string
	Cmdline                  string
	VCPUs, MemoryMiB         int
	Compression              initrd.Compression
	// Firmware optionally adds firmware.fd (e.g. an AmdSev OVMF); its measurements are then
	// computed too. Without it the bundle carries sim and pef measurements only.
	Firmware string
	// BuiltinInitramfs builds the initramfs (uncompressed) and the command line (with
	// "noinitrd") into the minimal kernel (kernel.BuildBuiltin): initrd.img is then empty, and
	// with a TDVF firmware the tdx value binds kernel, agent and command line through RTMR[1].
	BuiltinInitramfs bool
	// KernelImage is a prebuilt bzImage used as is (no modules; the initrd holds /init).
	KernelImage string
	// KernelOptions are CONFIG_X=value lines added to the minimal kernel's fragment.
	KernelOptions []string
	// TDXKernelHeader is how the host's QEMU hands the kernel header to TDVF (measure:
	// "qemu", the default, or "unmodified"); it changes the tdx value's RTMR[1].
	TDXKernelHeader string
	// MaxInitrdSize is the limit on initrd.img; 0 = initrd.MaxSize.
	MaxInitrdSize int
	Log           *slog.Logger

	kernelBuild kernel.BuildOptions // the minimal kernel's build, for the built-in variant
}

// Result summarises a build.
type Result struct {
	// Kernel is the Debian package (KernelDebian); Minimal the built kernel (KernelMinimal).
	Kernel  kernel.Package
	Minimal *kernel.Built
	// Variant is the minimal kernel with the initramfs and command line built in.
	Variant     *kernel.Variant
	Release     string
	Modules     []string // load order
	InitrdBytes int
	Config      bundle.Config
	Duration    time.Duration
}

func (o *Options) defaults() {
	if o.MetaPackage == "" {
		o.MetaPackage = kernel.DefaultMetaPackage
	}
	if o.Modules == nil {
		o.Modules = kernel.DefaultModules
	}
	if o.OptionalModules == nil {
		o.OptionalModules = kernel.DefaultOptionalModules
	}
	if o.Arch == "" {
		o.Arch = kernel.ArchX86_64
	}
	if o.Cmdline == "" {
		o.Cmdline = DefaultCmdline
		if o.Arch == kernel.ArchPPC64LE {
			o.Cmdline = DefaultCmdlinePPC64LE
		}
	}
	if o.VCPUs == 0 {
		o.VCPUs = DefaultVCPUs
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = DefaultMemoryMiB
	}
	if o.Compression == "" {
		o.Compression = DefaultCompression
	}
	if o.KernelFlavor == "" && o.KernelImage == "" {
		o.KernelFlavor = KernelMinimal
		if o.Kernel.Name != "" {
			o.KernelFlavor = KernelDebian
		}
	}
	if o.MaxInitrdSize == 0 {
		o.MaxInitrdSize = initrd.MaxSize
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// Build produces the guest bundle in o.OutDir. The same options (same init, kernel package,
// module list, cmdline, …) always produce byte-identical files.
func Build(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	o.defaults()
	if o.OutDir == "" {
		return nil, errors.New("guest build: output directory: required")
	}
	if err := checkKernelFlags(&o); err != nil {
		return nil, fmt.Errorf("guest build: %w", err)
	}
	if o.BuiltinInitramfs {
		if o.Compression != initrd.CompressAuto && o.Compression != initrd.CompressNone {
			return nil, fmt.Errorf("guest build: --compression %s: %w: the built-in initramfs is not compressed (the bzImage is, as a whole)", o.Compression, ErrBadKernelFlag)
		}
		o.Compression = initrd.CompressNone
		o.Cmdline = builtinCmdline(o.Cmdline)
	}
	initBin, err := readInit(o.Init, o.Arch)
	if err != nil {
		return nil, err
	}
	var fw []byte
	if o.Firmware != "" {
		if fw, err = os.ReadFile(o.Firmware); err != nil {
			return nil, fmt.Errorf("guest build: firmware: %w", err)
		}
	}

	k, err := getKernel(ctx, &o)
	if err != nil {
		return nil, fmt.Errorf("guest build: %w", err)
	}
	o.Log.Info("kernel", "kernel", k.describe(), "release", k.release, "elapsed", time.Since(start).Round(time.Millisecond))

	if o.Compression == initrd.CompressAuto && k.built != nil {
		// The minimal kernel decompresses LZ4 fast even under emulation (docs/guest.md), and
		// the bundle stays small; Debian's kernel keeps the measured none/gzip choice.
		o.Compression = initrd.CompressLZ4
	}
	img, used, err := buildInitrd(initBin, k, o.Compression, o.MaxInitrdSize)
	if err != nil {
		return nil, fmt.Errorf("guest build: initrd: %w", err)
	}
	if o.Compression == initrd.CompressAuto && used != initrd.CompressNone {
		o.Log.Warn("initrd: uncompressed archive exceeds the size limit; using gzip (boots slower under TCG)", "limit", o.MaxInitrdSize)
	}
	o.Compression = used
	if len(img) > o.MaxInitrdSize {
		return nil, fmt.Errorf("guest build: initrd.img is %d bytes (%.1f MiB), limit %d: %w",
			len(img), float64(len(img))/(1<<20), o.MaxInitrdSize, ErrInitrdLarge)
	}
	vmlinuz := k.image
	if o.BuiltinInitramfs {
		v, err := buildBuiltinKernel(ctx, o.kernelBuild, kernel.Builtin{Initramfs: img, Cmdline: o.Cmdline})
		if err != nil {
			return nil, fmt.Errorf("guest build: %w", err)
		}
		k.variant, vmlinuz = v, v.Image
		img = []byte{} // initrd.img stays, empty: no separate initrd (the shim passes no -initrd)
	}
	b := &bundle.Bundle{
		Config:   bundle.Config{Version: bundle.Version, Arch: bundleArch(o.Arch), Cmdline: o.Cmdline, VCPUs: o.VCPUs, MemoryMiB: o.MemoryMiB},
		Kernel:   vmlinuz,
		Initrd:   img,
		Firmware: fw,
	}
	if err := b.Config.Validate(); err != nil {
		return nil, fmt.Errorf("guest build: %w", err)
	}
	in := measure.BundleInputs(b, tee.Sim, tee.SimTDX, tee.PEF)
	if fw != nil {
		in = measure.BundleInputs(b) // everything the firmware supports, plus sim, sim-tdx and pef
		in.TDXKernelHeader = o.TDXKernelHeader
	}
	if o.Arch == kernel.ArchPPC64LE {
		b.Config.Measurements, err = pefMeasurements(b)
	} else {
		b.Config.Measurements, err = measure.Compute(in)
	}
	if err != nil {
		return nil, fmt.Errorf("guest build: measurements: %w", err)
	}
	var notes []string
	if t := b.Config.Measurements.TDX; t != nil && !tdxBindsBoot(t) {
		// MRTD covers the firmware only; without a pinned RTMR[2] any kernel, initrd (agent)
		// and command line would match, so a tdx value would not identify this guest.
		o.Log.Warn("tdx measurement omitted: it would not bind the kernel, initrd and cmdline (build them in: --builtin-initramfs; or a kernel >= 6.9 with --tdx-kernel-header unmodified)")
		b.Config.Measurements.TDX = nil
		notes = append(notes, "tdx-omitted: RTMR[1]/RTMR[2] (kernel, initrd, cmdline) cannot be pinned for this kernel and initrd")
	}
	cfg, err := b.Config.Marshal()
	if err != nil {
		return nil, err
	}
	sources := sourcesText(k, initBin, o, b, notes)

	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("guest build: %w", err)
	}
	files := []struct {
		name string
		data []byte
	}{
		{bundle.KernelFile, vmlinuz},
		{bundle.InitrdFile, img},
		{SourcesFile, sources},
	}
	if fw != nil {
		files = append(files, struct {
			name string
			data []byte
		}{bundle.FirmwareFile, fw})
	} else if err := os.Remove(filepath.Join(o.OutDir, bundle.FirmwareFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// A stale firmware.fd would be loaded with this bundle and break its measurements.
		return nil, fmt.Errorf("guest build: remove stale firmware: %w", err)
	}
	// guest.json last: a bundle with a guest.json is complete.
	files = append(files, struct {
		name string
		data []byte
	}{bundle.ConfigFile, cfg})
	for _, f := range files {
		if err := atomicfile.Write(filepath.Join(o.OutDir, f.name), f.data, 0o644); err != nil {
			return nil, fmt.Errorf("guest build: %w", err)
		}
	}
	res := &Result{
		Release: k.release, Minimal: k.built, Variant: k.variant, InitrdBytes: len(img),
		Config: b.Config, Duration: time.Since(start),
	}
	if k.tree != nil {
		res.Kernel = k.tree.Package
	}
	if k.mods != nil {
		for _, m := range k.mods.Order {
			res.Modules = append(res.Modules, m.Name)
		}
	}
	return res, nil
}

// tdxBindsBoot reports whether a TDX reference value pins the direct-boot artifacts (RTMR[2]).
func tdxBindsBoot(t *bundle.TDXMeasurement) bool {
	return len(t.RTMRs) > 2 && t.RTMRs[2] != ""
}

// readInit reads the /init binary and checks that it can run as PID 1 of an initrd without a
// libc: an ELF executable of the guest's architecture (x86-64, or 64-bit little-endian
// PowerPC) with no program interpreter (statically linked).
func readInit(name string, arch kernel.Arch) ([]byte, error) {
	if name == "" {
		return nil, fmt.Errorf("init: path required: %w", ErrBadInit)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("init %s: %w (build the agent first, or pass another static binary)", name, err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("init %s: not an ELF executable: %v: %w", name, err, ErrBadInit)
	}
	defer f.Close()
	machine, want := elf.EM_X86_64, "an x86-64 executable"
	if arch == kernel.ArchPPC64LE {
		machine, want = elf.EM_PPC64, "a little-endian ppc64 executable (GOARCH=ppc64le)"
	}
	if f.Machine != machine || f.Data != elf.ELFDATA2LSB || (f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN) {
		return nil, fmt.Errorf("init %s: %v %v %v, want %s: %w", name, f.Machine, f.Data, f.Type, want, ErrBadInit)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("init %s: dynamically linked (has a program interpreter); the initrd has no libc, "+
				"build it static (CGO_ENABLED=0, or -ldflags '-extldflags -static'): %w", name, ErrBadInit)
		}
	}
	if f.Type == elf.ET_DYN && f.Entry == 0 {
		return nil, fmt.Errorf("init %s: a shared library, not an executable: %w", name, ErrBadInit)
	}
	return data, nil
}

// buildInitrd lays out the initramfs:
//
//	/init                                   the agent (0755)
//	/dev/console                            char 5:1, so the kernel gives PID 1 a console
//	/proc /sys /dev /run /tmp               mount points
//
// and, for Debian's kernel only (the minimal kernel has everything built in):
//
//	/lib/modules/<release>/<module paths>   the modules, verbatim (signatures intact)
//	/lib/modules/<release>/load-order       their load order (agent/kmod)
func buildInitrd(initBin []byte, k *guestKernel, c initrd.Compression, limit int) ([]byte, initrd.Compression, error) {
	var a initrd.Archive
	for _, err := range []error{
		a.AddFile("init", 0o755, initBin),
		a.AddDir("dev", 0o755),
		a.AddCharDevice("dev/console", 0o600, 5, 1),
		a.AddDir("proc", 0o555),
		a.AddDir("sys", 0o555),
		a.AddDir("run", 0o755),
		a.AddDir("tmp", 0o777|fs.ModeSticky),
	} {
		if err != nil {
			return nil, "", err
		}
	}
	if k.mods != nil {
		modRoot := path.Join("lib/modules", k.release)
		for _, m := range k.mods.Order {
			data, err := os.ReadFile(filepath.Join(k.tree.ModulesDir(), filepath.FromSlash(m.Path)))
			if err != nil {
				return nil, "", err
			}
			if err := a.AddFile(path.Join(modRoot, m.Path), 0o644, data); err != nil {
				return nil, "", err
			}
		}
		if err := a.AddFile(path.Join(modRoot, "load-order"), 0o644, k.mods.LoadOrder()); err != nil {
			return nil, "", err
		}
	}
	return a.Build(c, limit)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sourcesText records what went into the bundle (deterministic: no times, no host paths).
func sourcesText(k *guestKernel, initBin []byte, o Options, b *bundle.Bundle, notes []string) []byte {
	var s strings.Builder
	fmt.Fprintf(&s, "# Sealpod guest bundle: inputs and outputs (written by mkguest; same inputs, same file)\n")
	switch {
	case k.built != nil:
		fmt.Fprintf(&s, "kernel: %s\n", KernelMinimal)
		if o.Arch != kernel.ArchX86_64 {
			fmt.Fprintf(&s, "arch: %s\n", o.Arch)
		}
		fmt.Fprintf(&s, "kernel-source-package: %s=%s\n", k.built.SourcePackage, k.built.SourceVersion)
		fmt.Fprintf(&s, "kernel-source-sha256: %s\n", k.built.SourceSHA256)
		fmt.Fprintf(&s, "kernel-config-fragment-sha256: %s\n", k.built.FragmentSHA256)
		for _, p := range k.built.Patches {
			fmt.Fprintf(&s, "kernel-patch: %s\n", p)
		}
		if k.built.PatchesSHA256 != "" {
			fmt.Fprintf(&s, "kernel-patches-sha256: %s\n", k.built.PatchesSHA256)
		}
		for _, opt := range o.KernelOptions {
			fmt.Fprintf(&s, "kernel-option: %s\n", opt)
		}
		fmt.Fprintf(&s, "kernel-compiler: %s\n", k.built.Compiler)
		if k.variant != nil {
			fmt.Fprintf(&s, "kernel-base-sha256: %s\n", k.built.BzImageSHA256)
			fmt.Fprintf(&s, "kernel-builtin-initramfs-sha256: %s\n", k.variant.InitramfsSHA256)
			fmt.Fprintf(&s, "kernel-builtin-cmdline: %s\n", k.variant.Cmdline)
		}
	case k.tree == nil:
		fmt.Fprintf(&s, "kernel: image\n")
		fmt.Fprintf(&s, "kernel-image-version: %s\n", k.imageVersion)
	default:
		fmt.Fprintf(&s, "kernel: %s\n", KernelDebian)
		fmt.Fprintf(&s, "kernel-package: %s\n", k.tree.Package)
		fmt.Fprintf(&s, "kernel-package-sha256: %s\n", k.tree.Package.SHA256)
		fmt.Fprintf(&s, "kernel-package-file: %s\n", k.tree.Package.Filename)
	}
	fmt.Fprintf(&s, "kernel-release: %s\n", k.release)
	fmt.Fprintf(&s, "init-sha256: %s\n", sha(initBin))
	fmt.Fprintf(&s, "initrd-compression: %s\n", o.Compression)
	if k.mods != nil {
		for _, m := range k.mods.Order {
			fmt.Fprintf(&s, "module: %s %s\n", m.Name, m.Path)
		}
		for _, m := range k.mods.Builtin {
			fmt.Fprintf(&s, "module-builtin: %s\n", m)
		}
		for _, m := range k.mods.Absent {
			fmt.Fprintf(&s, "module-absent-optional: %s\n", m)
		}
	}
	fmt.Fprintf(&s, "vmlinuz-sha256: %s\n", sha(b.Kernel))
	fmt.Fprintf(&s, "initrd-sha256: %s\n", sha(b.Initrd))
	if b.Firmware != nil {
		fmt.Fprintf(&s, "firmware-sha256: %s\n", sha(b.Firmware))
		if b.Config.Measurements.TDX != nil || o.TDXKernelHeader != "" {
			h, _ := tdx.ParseKernelHeader(o.TDXKernelHeader)
			fmt.Fprintf(&s, "tdx-kernel-header: %s\n", h)
		}
	}
	for _, n := range notes {
		fmt.Fprintf(&s, "%s\n", n)
	}
	return []byte(s.String())
}
