// Package testkernel builds synthetic x86 kernel images for the measurement tests: a bzImage
// setup header (boot protocol 2.15, loaded high, a kernel_version string) and, for an EFI-stub
// kernel, a PE32+ header with one section covering the rest of the file, as the Linux EFI stub
// lays it out. Only tests import it.
package testkernel

import "encoding/binary"

// Layout of the synthetic image.
const (
	VersionOff    = 0x300 // kernel_version string
	PEOff         = 0x400 // PE signature (e_lfanew)
	SizeOfHeaders = 0x600 // the section starts here
	MinSize       = 0x800
)

// BzImage returns a size-byte bzImage carrying version; with efiStub it is also a PE32+
// image whose Authenticode hash covers every byte but the CheckSum and Certificate Table
// entry. The payload bytes are a deterministic pattern.
func BzImage(version string, size int, efiStub bool) []byte {
	size = max(size, MinSize)
	k := make([]byte, size)
	for i := SizeOfHeaders; i < size; i++ {
		k[i] = byte((i*7 + i>>9) & 0xff)
	}
	copy(k[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(k[0x206:], 0x020f) // boot protocol 2.15
	binary.LittleEndian.PutUint16(k[0x20e:], VersionOff-0x200)
	k[0x1f1] = 2    // setup_sects
	k[0x211] = 0x01 // loadflags: LOADED_HIGH
	copy(k[VersionOff:], version+"\x00")
	if !efiStub {
		return k
	}
	copy(k, "MZ")
	binary.LittleEndian.PutUint32(k[0x3c:], PEOff)
	copy(k[PEOff:], "PE\x00\x00")
	coff := PEOff + 4
	binary.LittleEndian.PutUint16(k[coff:], 0x8664) // x86-64
	binary.LittleEndian.PutUint16(k[coff+2:], 1)    // one section
	binary.LittleEndian.PutUint16(k[coff+16:], 240) // PE32+ optional header with 16 directories
	opt := coff + 20
	binary.LittleEndian.PutUint16(k[opt:], 0x20b)
	binary.LittleEndian.PutUint32(k[opt+60:], SizeOfHeaders)
	binary.LittleEndian.PutUint32(k[opt+108:], 16)
	sec := opt + 240
	copy(k[sec:], ".text")
	binary.LittleEndian.PutUint32(k[sec+16:], uint32(size-SizeOfHeaders)&0xffffffff) //nolint:gosec // test images are far below 4 GiB
	binary.LittleEndian.PutUint32(k[sec+20:], SizeOfHeaders)
	return k
}
