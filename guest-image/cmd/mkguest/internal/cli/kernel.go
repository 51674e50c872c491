package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/sealpod/sealpod/guest-image/kernel"
	"github.com/sealpod/sealpod/guest-image/measure/tdx"
)

// guestKernel is the kernel of a bundle: the minimal kernel (built, and variant when the
// initramfs is built in), Debian's (tree + mods) or a prebuilt image (imageVersion).
type guestKernel struct {
	image        []byte
	release      string
	built        *kernel.Built
	variant      *kernel.Variant
	tree         *kernel.Tree
	mods         *kernel.Resolution
	imageVersion string
}

func (k *guestKernel) describe() string {
	switch {
	case k.variant != nil:
		return k.variant.Describe()
	case k.built != nil:
		return k.built.Describe()
	case k.tree != nil:
		return "debian " + k.tree.Package.String()
	}
	return "prebuilt image " + k.imageVersion
}

// buildBuiltinKernel builds the built-in variant (a variable so that tests of the bundle
// logic can stand in for the kernel build).
var buildBuiltinKernel = kernel.BuildBuiltin

// ErrBadKernelFlag is wrapped by errors of the kernel flags (--kernel-image, --kernel-option,
// --builtin-initramfs, --tdx-kernel-header).
var ErrBadKernelFlag = errors.New("invalid kernel flag")

func badFlag(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrBadKernelFlag)
}

// kernelOptionRE is one --kernel-option: a Kconfig symbol and a value Kconfig writes.
var kernelOptionRE = regexp.MustCompile(`^(CONFIG_[A-Z0-9_]+)=(y|n|-?[0-9]+|0x[0-9a-fA-F]+|"[ !#-\[\]-~]*")$`)

// reservedOptions are set by other flags: --builtin-initramfs and --cmdline.
var reservedOptions = []string{"CONFIG_CMDLINE", "CONFIG_CMDLINE_BOOL", "CONFIG_CMDLINE_OVERRIDE", "CONFIG_INITRAMFS_SOURCE"}

// fragment returns the minimal kernel's configuration fragment with the --kernel-option
// lines appended (they win over the fragment's own lines), or nil (the default fragment,
// and so the default cache key) without any.
func fragment(arch kernel.Arch, opts []string) ([]byte, error) {
	if len(opts) == 0 {
		return nil, nil
	}
	var b bytes.Buffer
	if arch == kernel.ArchPPC64LE {
		b.Write(kernel.MinimalConfigPPC64LE)
	} else {
		b.Write(kernel.MinimalConfig)
	}
	b.WriteString("\n# --- mkguest --kernel-option ---\n")
	for _, o := range opts {
		m := kernelOptionRE.FindStringSubmatch(o)
		if m == nil {
			return nil, badFlag("--kernel-option %q: want CONFIG_NAME=y, =n, a number or a \"string\" (printable ASCII without \" and \\)", o)
		}
		if slices.Contains(reservedOptions, m[1]) || strings.HasPrefix(m[1], "CONFIG_INITRAMFS_COMPRESSION") {
			return nil, badFlag("--kernel-option %s: set by --cmdline and --builtin-initramfs, not by hand", m[1])
		}
		if m[2] == "n" {
			fmt.Fprintf(&b, "# %s is not set\n", m[1])
			continue
		}
		fmt.Fprintln(&b, o)
	}
	if _, err := kernel.ParseKconfig(b.Bytes()); err != nil {
		return nil, badFlag("--kernel-option: %v", err)
	}
	return b.Bytes(), nil
}

// checkKernelFlags refuses combinations of the kernel flags that do not fit together.
func checkKernelFlags(o *Options) error {
	if err := checkArchFlags(o); err != nil {
		return err
	}
	if o.KernelImage != "" {
		for flag, set := range map[string]bool{
			"--kernel debian": o.KernelFlavor == KernelDebian, "--kernel-package": o.Kernel.Name != "",
			"--kernel-source": o.KernelSource != "", "--kernel-option": len(o.KernelOptions) > 0,
			"--builtin-initramfs": o.BuiltinInitramfs,
		} {
			if set {
				return badFlag("--kernel-image takes the kernel as built; %s does not apply to it", flag)
			}
		}
	}
	minimal := o.KernelImage == "" && o.KernelFlavor == KernelMinimal
	if len(o.KernelOptions) > 0 && !minimal {
		return badFlag("--kernel-option configures the minimal kernel (--kernel %s)", KernelMinimal)
	}
	if o.BuiltinInitramfs && !minimal {
		return badFlag("--builtin-initramfs builds the minimal kernel (--kernel %s); Debian's kernel is used as packaged", KernelMinimal)
	}
	if _, err := tdx.ParseKernelHeader(o.TDXKernelHeader); err != nil {
		return badFlag("--tdx-kernel-header: %v", err)
	}
	if o.TDXKernelHeader != "" && o.Firmware == "" {
		return badFlag("--tdx-kernel-header %s: it changes the tdx measurement only, which needs --firmware (a TDVF)", o.TDXKernelHeader)
	}
	return nil
}

// builtinCmdline is the command line built into the kernel: --cmdline with "noinitrd" added
// (the 6.1 EFI stub then loads no initrd the host offers; docs/measurements.md).
func builtinCmdline(cmdline string) string {
	if slices.Contains(strings.Fields(cmdline), "noinitrd") {
		return cmdline
	}
	return strings.TrimSpace(cmdline + " noinitrd")
}

// readKernelImage reads a prebuilt kernel: an x86 bzImage; with a firmware also an EFI stub
// (OVMF and TDVF boot the kernel as a PE/COFF application).
func readKernelImage(name string, firmware bool) (*guestKernel, error) {
	img, err := os.ReadFile(name)
	if err != nil {
		return nil, badFlag("--kernel-image: %v", err)
	}
	version, err := tdx.KernelVersion(img)
	if err != nil {
		return nil, badFlag("--kernel-image %s: %v", name, err)
	}
	if firmware && !bytes.HasPrefix(img, []byte("MZ")) {
		return nil, badFlag("--kernel-image %s: no EFI stub (no MZ/PE header), which OVMF/TDVF need to boot and measure it: build it with CONFIG_EFI_STUB=y", name)
	}
	release, _, _ := strings.Cut(version, " ")
	return &guestKernel{image: img, release: release, imageVersion: version}, nil
}

// getKernel builds (or takes from the cache) the kernel o asks for.
func getKernel(ctx context.Context, o *Options) (*guestKernel, error) {
	if o.KernelImage != "" {
		return readKernelImage(o.KernelImage, o.Firmware != "")
	}
	switch o.KernelFlavor {
	case KernelMinimal:
		if o.Kernel.Name != "" {
			return nil, fmt.Errorf("kernel: a Debian kernel package (%s) was pinned with --kernel %s", o.Kernel, KernelMinimal)
		}
		frag, err := fragment(o.Arch, o.KernelOptions)
		if err != nil {
			return nil, err
		}
		o.kernelBuild = kernel.BuildOptions{Arch: o.Arch, Tarball: o.KernelSource, CacheDir: o.KernelCacheDir, Fragment: frag, Log: o.Log}
		b, err := kernel.BuildMinimal(ctx, o.kernelBuild)
		if err != nil {
			return nil, err
		}
		img, err := os.ReadFile(b.BzImagePath())
		if err != nil {
			return nil, fmt.Errorf("minimal kernel: %w", err)
		}
		return &guestKernel{image: img, release: b.Release, built: b}, nil
	case KernelDebian:
		pkg := o.Kernel
		if pkg.Name == "" {
			var err error
			if pkg, err = kernel.Resolve(ctx, o.MetaPackage); err != nil {
				return nil, fmt.Errorf("resolve %s: %w", o.MetaPackage, err)
			}
		}
		cache := &kernel.Cache{Dir: o.CacheDir, Log: o.Log}
		tree, err := cache.Prepare(ctx, pkg)
		if err != nil {
			return nil, err
		}
		ix, err := kernel.NewIndex(tree.ModulesDir(), tree.Release)
		if err != nil {
			return nil, err
		}
		mods, err := ix.Resolve(o.Modules, o.OptionalModules)
		if err != nil {
			return nil, fmt.Errorf("kernel %s: %w", tree.Release, err)
		}
		img, err := os.ReadFile(tree.KernelPath())
		if err != nil {
			return nil, err
		}
		return &guestKernel{image: img, release: tree.Release, tree: tree, mods: mods}, nil
	}
	return nil, fmt.Errorf("kernel %q: unknown (want %s or %s)", o.KernelFlavor, KernelMinimal, KernelDebian)
}
