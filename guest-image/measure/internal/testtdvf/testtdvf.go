// Package testtdvf builds synthetic TDVF firmware images for the measurement tests: TDX
// metadata with three sections (a measured BFV, a TD HOB page and a PAGE.AUG section) and the
// GUIDed footer table that guest-image/measure/ovmf parses. Only tests import it.
package testtdvf

import (
	"encoding/binary"

	"github.com/sealpod/sealpod/guest-image/measure/ovmf"
)

// Layout of the synthetic image.
const (
	BFVAddr  = 0xffffe000  // guest address of the BFV (measured)
	HOBAddr  = 0x800000    // guest address of the TD HOB page
	AugAddr  = 0x100000000 // guest address of the PAGE.AUG section
	BFVBytes = 0x2000      // size of BFV
)

// BFV returns the BFVBytes-byte BFV the tests measure, a deterministic pattern.
func BFV() []byte {
	bfv := make([]byte, BFVBytes)
	for i := range bfv {
		bfv[i] = byte(i * 7)
	}
	return bfv
}

// Image returns a TDVF image whose first section is bfv (at BFVAddr, with MR.EXTEND) and
// whose PAGE.AUG section is augPages pages: bfv ‖ padding to whole pages ‖ metadata ‖ offset
// of the metadata from the end ‖ GUIDed footer table ‖ 32 bytes. The same arguments give the
// same bytes.
func Image(bfv []byte, augPages uint64) []byte {
	type sec struct {
		off, raw   uint32
		addr, size uint64
		typ, attr  uint32
	}
	secs := []sec{
		{0, uint32(len(bfv)), BFVAddr, uint64(len(bfv)), 0, ovmf.TDXAttrMRExtend}, //nolint:gosec // a test image of a few KiB
		{0, 0, HOBAddr, 0x1000, 2, 0},
		{0, 0, AugAddr, augPages * 0x1000, 4, ovmf.TDXAttrPageAug},
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
	img := append([]byte{}, bfv...)
	img = append(img, make([]byte, 4096-(len(bfv)+len(meta)+72)%4096)...) // 72: the bytes after the metadata
	img = append(img, meta...)
	img = binary.LittleEndian.AppendUint32(img, uint32(len(meta)+22+18+32)) //nolint:gosec // a few hundred bytes
	img = binary.LittleEndian.AppendUint16(img, 22)
	img = append(img, ovmf.TDXMetadataGUID[:]...)
	img = binary.LittleEndian.AppendUint16(img, 22+18)
	img = append(img, ovmf.FooterTableGUID[:]...)
	img = append(img, make([]byte, 32)...)
	return img
}
