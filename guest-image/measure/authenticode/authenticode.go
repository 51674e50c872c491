// Package authenticode computes the Authenticode image hash of a PE/COFF file (Microsoft,
// "Windows Authenticode Portable Executable Signature Format", "Calculating the PE Image
// Hash"), the digest UEFI firmware measures when it loads an EFI application such as an
// EFI-stub Linux kernel. The hash function is a parameter: SHA-256 is what pesign and
// sbsign compute, SHA-384 what TDVF extends into RTMR[1].
//
// The image is hashed in this order: the headers up to SizeOfHeaders without the optional
// header's CheckSum field and without the Certificate Table data-directory entry; every
// section with raw data, sorted by PointerToRawData; then the data after the last section
// up to the end of the file, less the attribute certificate table (which the format places
// at the end of the file). This is also what edk2's measured-boot code (MeasurePeImageAndExtend)
// hashes.
package authenticode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"slices"
)

// ErrMalformed is wrapped by every error about an image that is not a well-formed PE/COFF
// file.
var ErrMalformed = errors.New("authenticode: malformed PE/COFF image")

const (
	peMagic32     = 0x10b
	peMagic32Plus = 0x20b
	// Offsets inside the optional header.
	checksumOff       = 64
	dirOff32          = 96  // data directories, PE32
	dirOff32Plus      = 112 // data directories, PE32+
	numDirsOff32      = 92
	numDirsOff32Plus  = 108
	sizeOfHeadersOff  = 60
	certDirIndex      = 4 // IMAGE_DIRECTORY_ENTRY_SECURITY
	dirEntrySize      = 8
	sectionHeaderSize = 40
	// maxSections bounds the section table of a hostile image (the PE format allows 96).
	maxSections = 96
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// span is a byte range [off, off+n) of the image fed to the hash.
type span struct{ off, n uint64 }

// Layout is what the hash covers, as offsets into the image.
type layout struct {
	spans []span
}

// parse validates the image and returns the ranges the Authenticode hash covers, in order.
func parse(img []byte) (*layout, error) {
	size := uint64(len(img))
	if size < 0x40 || img[0] != 'M' || img[1] != 'Z' {
		return nil, malformed("no MZ header")
	}
	peOff := uint64(binary.LittleEndian.Uint32(img[0x3c:]))
	if peOff+24 > size || string(img[peOff:peOff+4]) != "PE\x00\x00" {
		return nil, malformed("no PE signature at e_lfanew %#x", peOff)
	}
	coff := peOff + 4
	numSections := uint64(binary.LittleEndian.Uint16(img[coff+2:]))
	optSize := uint64(binary.LittleEndian.Uint16(img[coff+16:]))
	opt := coff + 20
	if opt+optSize > size {
		return nil, malformed("optional header (%d bytes at %#x) outside the image", optSize, opt)
	}
	if optSize < 2 {
		return nil, malformed("optional header too short (%d bytes)", optSize)
	}
	var dirOff, numDirsOff uint64
	switch m := binary.LittleEndian.Uint16(img[opt:]); m {
	case peMagic32:
		dirOff, numDirsOff = dirOff32, numDirsOff32
	case peMagic32Plus:
		dirOff, numDirsOff = dirOff32Plus, numDirsOff32Plus
	default:
		return nil, malformed("optional header magic %#x: want PE32 or PE32+", m)
	}
	if optSize < dirOff {
		return nil, malformed("optional header too short (%d bytes) for its magic", optSize)
	}
	numDirs := uint64(binary.LittleEndian.Uint32(img[opt+numDirsOff:]))
	if numDirs > (optSize-dirOff)/dirEntrySize {
		return nil, malformed("%d data directories do not fit the optional header", numDirs)
	}
	sizeOfHeaders := uint64(binary.LittleEndian.Uint32(img[opt+sizeOfHeadersOff:]))
	secTable := opt + optSize
	if numSections > maxSections {
		return nil, malformed("%d sections: at most %d", numSections, maxSections)
	}
	secEnd := secTable + numSections*sectionHeaderSize
	if secEnd > size {
		return nil, malformed("section table outside the image")
	}
	if sizeOfHeaders > size || sizeOfHeaders < secEnd {
		return nil, malformed("SizeOfHeaders %#x: want between the end of the section table %#x and the file size %#x", sizeOfHeaders, secEnd, size)
	}

	l := &layout{}
	checksum := opt + checksumOff
	var certSize uint64
	if numDirs > certDirIndex {
		cert := opt + dirOff + certDirIndex*dirEntrySize
		certAddr := uint64(binary.LittleEndian.Uint32(img[cert:]))
		certSize = uint64(binary.LittleEndian.Uint32(img[cert+4:]))
		if certSize > 0 && (certAddr+certSize > size || certAddr < sizeOfHeaders) {
			return nil, malformed("certificate table [%#x, +%#x) outside the image", certAddr, certSize)
		}
		l.spans = append(l.spans,
			span{0, checksum},
			span{checksum + 4, cert - (checksum + 4)},
			span{cert + dirEntrySize, sizeOfHeaders - (cert + dirEntrySize)})
	} else {
		// No Certificate Table entry to leave out.
		l.spans = append(l.spans, span{0, checksum}, span{checksum + 4, sizeOfHeaders - (checksum + 4)})
	}

	type section struct{ ptr, size uint64 }
	var sections []section
	for i := range numSections {
		h := secTable + i*sectionHeaderSize
		rawSize := uint64(binary.LittleEndian.Uint32(img[h+16:]))
		rawPtr := uint64(binary.LittleEndian.Uint32(img[h+20:]))
		if rawSize == 0 {
			continue
		}
		if rawPtr+rawSize > size {
			return nil, malformed("section %d raw data [%#x, +%#x) outside the image", i, rawPtr, rawSize)
		}
		sections = append(sections, section{rawPtr, rawSize})
	}
	slices.SortStableFunc(sections, func(a, b section) int {
		switch {
		case a.ptr < b.ptr:
			return -1
		case a.ptr > b.ptr:
			return 1
		}
		return 0
	})
	hashed := sizeOfHeaders
	for _, s := range sections {
		l.spans = append(l.spans, span{s.ptr, s.size})
		hashed += s.size
	}
	// Data after the sections, less the certificate table at the end of the file.
	if size > hashed {
		if hashed+certSize > size {
			return nil, malformed("sections (%#x bytes) and certificate table (%#x bytes) exceed the file (%#x bytes)", hashed, certSize, size)
		}
		if extra := size - certSize - hashed; extra > 0 {
			l.spans = append(l.spans, span{hashed, extra})
		}
	}
	return l, nil
}

// Digest returns the Authenticode hash of the PE/COFF image img computed with h (which is
// reset first), e.g. sha256.New() or sha512.New384().
func Digest(img []byte, h hash.Hash) ([]byte, error) {
	l, err := parse(img)
	if err != nil {
		return nil, err
	}
	h.Reset()
	for _, s := range l.spans {
		h.Write(img[s.off : s.off+s.n])
	}
	return h.Sum(nil), nil
}
