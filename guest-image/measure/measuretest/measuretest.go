// Package measuretest gives tests outside guest-image/measure small guest bundles whose
// kernel the measurement code accepts for every TEE that needs an EFI-stub kernel (sim-tdx):
// a synthetic EFI-stub bzImage (package internal/testkernel), an initrd and guest.json with the
// measurements computed by the real code. Only tests import it.
package measuretest

import (
	"testing"

	"github.com/sealpod/sealpod/guest-image/measure"
	"github.com/sealpod/sealpod/guest-image/measure/internal/testkernel"
	"github.com/sealpod/sealpod/guest-image/measure/internal/testtdvf"
	"github.com/sealpod/sealpod/guest-image/measure/ovmf"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/tee"
)

// EFIKernel returns a synthetic EFI-stub bzImage of at least size bytes carrying version; the
// same arguments give the same bytes.
func EFIKernel(version string, size int) []byte { return testkernel.BzImage(version, size, true) }

// Bundle returns an in-memory guest bundle (no firmware) booting kernel and initrd with
// cmdline, its guest.json measurements for sim, sim-tdx and pef filled in by measure.Compute.
func Bundle(t testing.TB, kernel, initrd []byte, cmdline string) *bundle.Bundle {
	t.Helper()
	b := &bundle.Bundle{
		Dir:    "measuretest",
		Config: bundle.Config{Version: bundle.Version, Cmdline: cmdline, VCPUs: 1, MemoryMiB: 512},
		Kernel: kernel,
		Initrd: initrd,
	}
	m, err := measure.Compute(measure.BundleInputs(b, tee.Sim, tee.SimTDX, tee.PEF))
	if err != nil {
		t.Fatalf("measuretest bundle: %v", err)
	}
	b.Config.Measurements = m
	return b
}

// TDVF returns a small synthetic TDVF image (TDX metadata with a measured BFV, a TD HOB and a
// PAGE.AUG section, in the layout guest-image/measure/ovmf parses), so that tests get a tdx
// value from measure.Compute without a real firmware build. The same call gives the same bytes.
func TDVF(t testing.TB) []byte {
	t.Helper()
	img := testtdvf.Image(testtdvf.BFV(), 16)
	if _, err := ovmf.Parse(img); err != nil {
		t.Fatalf("measuretest TDVF: %v", err)
	}
	return img
}
