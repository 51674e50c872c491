package cli

import (
	"crypto/sha512"
	"encoding/hex"
	"fmt"

	"github.com/sealpod/sealpod/guest-image/kernel"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/esm"
)

// The ppc64le guest (--arch ppc64le, docs/pef.md): the minimal pseries kernel cross-compiled
// from the same linux-source-6.1 (its vmlinux ELF is the bundle's vmlinuz: QEMU's pseries
// machine and the ultravisor load the ELF), an initrd laid out as for x86 with a ppc64le
// agent, and the PEF digests only: SNP and TDX do not exist on Power.

// bundleArch is guest.json's arch for a build architecture ("" for x86_64).
func bundleArch(a kernel.Arch) string {
	if a == kernel.ArchPPC64LE {
		return bundle.ArchPPC64LE
	}
	return ""
}

// checkArchFlags refuses what does not exist for the architecture: for ppc64le Debian's
// packaged (amd64) kernel, a prebuilt bzImage, the built-in variant (it exists for TDX) and
// firmware (the pseries machine boots with QEMU's SLOF; PEF measures no firmware).
func checkArchFlags(o *Options) error {
	if _, err := kernel.ParseArch(string(o.Arch)); err != nil {
		return badFlag("--arch: %v", err)
	}
	if o.Arch != kernel.ArchPPC64LE {
		return nil
	}
	for _, f := range []struct {
		flag string
		set  bool
	}{
		{"--kernel-package", o.Kernel.Name != ""}, {"--kernel debian", o.KernelFlavor == KernelDebian},
		{"--kernel-image", o.KernelImage != ""}, {"--builtin-initramfs", o.BuiltinInitramfs},
		{"--firmware", o.Firmware != ""}, {"--tdx-kernel-header", o.TDXKernelHeader != ""},
	} {
		if f.set {
			return badFlag("--arch ppc64le builds the minimal pseries kernel; %s is x86_64 only", f.flag)
		}
	}
	return nil
}

// pefMeasurements are the digests an ESM blob carries for this bundle, as svm-tools computes
// them (package imagebuilder/esm): SHA-512 of the objcopy'd vmlinux and its size, of the
// initrd, of the command line, and svm-tools' RTAS digest. sealctl recomputes them for the
// command line and initrd it seals (imagebuilder/pefseal); these are for reference.
func pefMeasurements(b *bundle.Bundle) (bundle.Measurements, error) {
	k, size, err := esm.KernelDigestELF(b.Kernel)
	if err != nil {
		return bundle.Measurements{}, fmt.Errorf("measure pef: vmlinux: %w", err)
	}
	initrd := sha512.Sum512(b.Initrd)
	cmdline := esm.BootargsDigest(b.Config.Cmdline)
	rtas := esm.RTASDigestSVMTools()
	return bundle.Measurements{PEF: &bundle.PEFMeasurement{
		Kernel: hex.EncodeToString(k[:]), KernelSize: size, Initrd: hex.EncodeToString(initrd[:]),
		Cmdline: hex.EncodeToString(cmdline[:]), RTAS: hex.EncodeToString(rtas[:]),
	}}, nil
}
