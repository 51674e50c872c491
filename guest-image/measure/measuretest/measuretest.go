// Package measuretest gives tests outside guest-image/measure small guest bundles whose
// kernel the measurement code accepts for every TEE that needs an EFI-stub kernel (sim-tdx):
// a synthetic EFI-stub bzImage (package internal/testkernel), an initrd and guest.json with the
// measurements computed by the real code. Only tests import it.
package measuretest

import (
	"encoding/binary"
	"testing"

	"github.com/sealpod/sealpod/guest-image/measure"
	"github.com/sealpod/sealpod/guest-image/measure/internal/testkernel"
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
	bfv := make([]byte, 0x2000)
	for i := range bfv {
		bfv[i] = byte(i * 7)
	}
	type sec struct {
		off, raw   uint32
		addr, size uint64
		typ, attr  uint32
	}
	secs := []sec{
		{0, uint32(len(bfv)), 0xffffe000, uint64(len(bfv)), 0, ovmf.TDXAttrMRExtend}, //nolint:gosec // a test image of a few KiB
		{0, 0, 0x800000, 0x1000, 2, 0},
		{0, 0, 0x100000000, 16 * 0x1000, 4, ovmf.TDXAttrPageAug},
	}
	meta := []byte("TDVF")
	meta = binary.LittleEndian.AppendUint32(meta, uint32(16+32*len(secs))) //nolint:gosec // two sections
	meta = binary.LittleEndian.AppendUint32(meta, 1)
	meta = binary.LittleEndian.AppendUint32(meta, uint32(len(secs))) //nolint:gosec // two sections
	for _, s := range secs {
		meta = binary.LittleEndian.AppendUint32(meta, s.off)
		meta = binary.LittleEndian.AppendUint32(meta, s.raw)
		meta = binary.LittleEndian.AppendUint64(meta, s.addr)
		meta = binary.LittleEndian.AppendUint64(meta, s.size)
		meta = binary.LittleEndian.AppendUint32(meta, s.typ)
		meta = binary.LittleEndian.AppendUint32(meta, s.attr)
	}
	// bfv ‖ padding to whole pages ‖ metadata ‖ offset of the metadata from the end ‖ GUIDed
	// footer table ‖ 32 bytes
	img := append([]byte{}, bfv...)
	img = append(img, make([]byte, 4096-(len(meta)+72)%4096)...) // 72: the bytes after the metadata
	img = append(img, meta...)
	img = binary.LittleEndian.AppendUint32(img, uint32(len(meta)+22+18+32)) //nolint:gosec // a few hundred bytes
	img = binary.LittleEndian.AppendUint16(img, 22)
	img = append(img, ovmf.TDXMetadataGUID[:]...)
	img = binary.LittleEndian.AppendUint16(img, 22+18)
	img = append(img, ovmf.FooterTableGUID[:]...)
	img = append(img, make([]byte, 32)...)
	if _, err := ovmf.Parse(img); err != nil {
		t.Fatalf("measuretest TDVF: %v", err)
	}
	return img
}
