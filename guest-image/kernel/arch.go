package kernel

import (
	"bytes"
	"debug/elf"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// Arch is the guest architecture a minimal kernel is built for, named as Go's GOARCH-like
// bundle names: x86_64 (the default; the SNP/TDX guest) and ppc64le (the IBM PEF guest, a
// pseries LPAR, cross-compiled with powerpc64le-linux-gnu-gcc).
type Arch string

// The architectures the minimal kernel is built for.
const (
	ArchX86_64  Arch = "x86_64"
	ArchPPC64LE Arch = "ppc64le"
)

// Arches lists the supported architectures in the order used in messages.
var Arches = []Arch{ArchX86_64, ArchPPC64LE}

// ErrUnknownArch is wrapped by ParseArch for a name that is not a supported architecture.
var ErrUnknownArch = errors.New("unknown guest architecture")

// ParseArch validates an architecture name; "" is ArchX86_64.
func ParseArch(s string) (Arch, error) {
	if s == "" {
		return ArchX86_64, nil
	}
	if a := Arch(s); slices.Contains(Arches, a) {
		return a, nil
	}
	return "", fmt.Errorf("%w %q (want %s or %s)", ErrUnknownArch, s, ArchX86_64, ArchPPC64LE)
}

// MinimalConfigPPC64LE is the fragment applied on top of `make ARCH=powerpc tinyconfig` for
// the ppc64le (pseries) minimal kernel (minimal-ppc64le.config, docs/pef.md).
//
//go:embed minimal-ppc64le.config
var MinimalConfigPPC64LE []byte

// archSpec is everything of a minimal-kernel build that depends on the architecture.
type archSpec struct {
	// recipe goes into the cache key; x86_64 keeps the original recipe so that its cache
	// entries (and golden values) stay those of before architectures were added.
	recipe string
	// env is added to the build's environment after the reproducible KBUILD_* values.
	env []string
	// compiler is the C compiler whose --version is part of the cache key.
	compiler string
	// compilerPackage is the Debian package that installs compiler (error messages).
	compilerPackage string
	// target is the make target; image the file it produces in the O= tree; file the
	// name of the image in the cache entry.
	target, image, file string
	// fragment is the default configuration fragment.
	fragment []byte
	// check validates the built image.
	check func(img []byte) error
	// lockFile serialises builders of the architecture in the cache directory: a ppc64le
	// build does not hold up the x86_64 kernel the test suites use.
	lockFile string
}

func (a Arch) spec() archSpec {
	if a == ArchPPC64LE {
		return archSpec{
			recipe:          buildRecipe + " ppc64le",
			env:             []string{"ARCH=powerpc", "CROSS_COMPILE=" + CrossCompilePPC64LE},
			compiler:        CrossCompilePPC64LE + "gcc",
			compilerPackage: "gcc-powerpc64le-linux-gnu",
			target:          "vmlinux",
			image:           "vmlinux",
			file:            "vmlinux",
			fragment:        MinimalConfigPPC64LE,
			check:           CheckPPC64LEVmlinux,
			lockFile:        ".lock-ppc64le",
		}
	}
	return archSpec{
		recipe:          buildRecipe,
		env:             []string{"ARCH=x86_64"},
		compiler:        "gcc",
		compilerPackage: "gcc",
		target:          "bzImage",
		image:           "arch/x86/boot/bzImage",
		file:            "bzImage",
		fragment:        MinimalConfig,
		check:           func([]byte) error { return nil },
		lockFile:        ".lock",
	}
}

// CrossCompilePPC64LE is the toolchain prefix of the ppc64le build (Debian:
// gcc-powerpc64le-linux-gnu).
const CrossCompilePPC64LE = "powerpc64le-linux-gnu-"

// ErrNotVmlinux is wrapped by CheckPPC64LEVmlinux.
var ErrNotVmlinux = errors.New("not a ppc64le vmlinux")

// CheckPPC64LEVmlinux checks that img is what a pseries guest boots and PEF measures: a
// 64-bit little-endian PowerPC ELF executable with at least one loadable segment.
func CheckPPC64LEVmlinux(img []byte) error {
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotVmlinux, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_PPC64 || f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB || (f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN) {
		return fmt.Errorf("%w: %v %v %v %v", ErrNotVmlinux, f.Machine, f.Class, f.Data, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Filesz > 0 {
			return nil
		}
	}
	return fmt.Errorf("%w: no loadable segment", ErrNotVmlinux)
}

// baseConfig writes the configuration the fragment is merged into: `make tinyconfig`. For
// ppc64le that would be the tiny configuration of the default 32-bit powerpc, and switching it
// to 64-bit afterwards turns on the defaults of every symbol that appears (VT, input, wireless,
// a 32-bit FRAME_WARN, …); so there the fragment is applied from the start — tinyconfig's own
// steps (allnoconfig with kernel/configs/tiny-base.config, then tiny.config) with the fragment
// added to the allnoconfig input.
func (o *BuildOptions) baseConfig(run func(what, name string, args ...string) error, src, obj, dir string) error {
	mk := makeArgs(src, obj)
	if o.Arch != ArchPPC64LE {
		return run("tinyconfig", "make", mk("tinyconfig")...)
	}
	base, err := os.ReadFile(filepath.Join(src, "kernel/configs/tiny-base.config"))
	if err != nil {
		return fmt.Errorf("minimal kernel: %w", err)
	}
	all := filepath.Join(dir, "allnoconfig.config")
	if err := os.WriteFile(all, append(append(base, '\n'), o.Fragment...), 0o644); err != nil {
		return fmt.Errorf("minimal kernel: %w", err)
	}
	if err := run("allnoconfig", "make", mk("KCONFIG_ALLCONFIG="+all, "allnoconfig")...); err != nil {
		return err
	}
	return run("tiny.config", "make", mk("tiny.config")...)
}
