package ovmf

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// TDXSectionType is the type of a TDVF metadata section (Intel TDX Virtual Firmware Design
// Guide, "TDVF descriptor").
type TDXSectionType uint32

// TDVF section types.
const (
	TDXBFV            TDXSectionType = 0 // boot firmware volume (code)
	TDXCFV            TDXSectionType = 1 // configuration firmware volume (variables)
	TDXTDHOB          TDXSectionType = 2 // TD hand-off block, filled by the VMM
	TDXTempMem        TDXSectionType = 3 // temporary memory
	TDXPermMem        TDXSectionType = 4 // permanent memory
	TDXPayload        TDXSectionType = 5 // payload (td-shim)
	TDXPayloadParam   TDXSectionType = 6 // payload parameters (td-shim)
	TDXTDInfo         TDXSectionType = 7 // TD info (td-shim)
	TDXTDParams       TDXSectionType = 8 // TD params (td-shim)
	tdxSectionTypeMax                = 9
)

func (t TDXSectionType) String() string {
	names := []string{"BFV", "CFV", "TD_HOB", "TempMem", "PermMem", "Payload", "PayloadParam", "TD_INFO", "TD_PARAMS"}
	if int(t) < len(names) {
		return names[t]
	}
	return fmt.Sprintf("unknown(%d)", uint32(t))
}

// TDVF section attributes.
const (
	TDXAttrMRExtend uint32 = 1 << 0 // content is measured into MRTD with TDH.MR.EXTEND
	TDXAttrPageAug  uint32 = 1 << 1 // pages are added after launch (TDH.MEM.PAGE.AUG), not measured
)

// TDXSection is one TDVF metadata section.
type TDXSection struct {
	DataOffset     uint32 // offset of the raw data in the image
	RawDataSize    uint32
	MemoryAddress  uint64 // guest-physical address
	MemoryDataSize uint64
	Type           TDXSectionType
	Attributes     uint32
}

const (
	tdxHeaderSize  = 16 // "TDVF", length, version, number of sections
	tdxSectionSize = 32
	maxTDXSections = 1024
	// MaxTDXPages bounds the pages all TDVF sections may describe (4 GiB), so that a hostile
	// image cannot make the MRTD computation run for hours.
	MaxTDXPages = 1 << 20
)

// TDXSections parses the TDVF metadata the footer table points at. It returns an error
// wrapping ErrNotFound when the image has no TDX metadata.
func (f *Firmware) TDXSections() ([]TDXSection, error) {
	off, err := f.u32Entry(TDXMetadataGUID, "TDX metadata")
	if err != nil {
		return nil, err
	}
	n := len(f.data)
	if int64(off) > int64(n) || int64(off) < tdxHeaderSize {
		return nil, fmt.Errorf("TDX metadata: offset from end %d outside the %d-byte image: %w", off, n, ErrMalformed)
	}
	start := n - int(off)
	hdr := f.data[start:]
	if string(hdr[0:4]) != "TDVF" {
		return nil, fmt.Errorf("TDX metadata: signature %q, want \"TDVF\": %w", hdr[0:4], ErrMalformed)
	}
	length := binary.LittleEndian.Uint32(hdr[4:])
	version := binary.LittleEndian.Uint32(hdr[8:])
	count := binary.LittleEndian.Uint32(hdr[12:])
	if version != 1 {
		return nil, fmt.Errorf("TDX metadata: version %d, want 1: %w", version, ErrMalformed)
	}
	if count == 0 || count > maxTDXSections {
		return nil, fmt.Errorf("TDX metadata: %d sections, want 1..%d: %w", count, maxTDXSections, ErrMalformed)
	}
	need := int64(tdxHeaderSize) + int64(count)*tdxSectionSize
	if int64(length) < need || int64(length) > int64(off) {
		return nil, fmt.Errorf("TDX metadata: length %d, want %d..%d for %d sections: %w", length, need, off, count, ErrMalformed)
	}
	var sections []TDXSection
	var pages uint64
	for i := range int(count) {
		b := hdr[tdxHeaderSize+i*tdxSectionSize:]
		s := TDXSection{
			DataOffset:     binary.LittleEndian.Uint32(b[0:]),
			RawDataSize:    binary.LittleEndian.Uint32(b[4:]),
			MemoryAddress:  binary.LittleEndian.Uint64(b[8:]),
			MemoryDataSize: binary.LittleEndian.Uint64(b[16:]),
			Type:           TDXSectionType(binary.LittleEndian.Uint32(b[24:])),
			Attributes:     binary.LittleEndian.Uint32(b[28:]),
		}
		if err := s.validate(n); err != nil {
			return nil, fmt.Errorf("TDX metadata: section %d (%s): %w", i, s.Type, err)
		}
		pages += s.MemoryDataSize / PageSize
		if pages > MaxTDXPages {
			return nil, fmt.Errorf("TDX metadata: sections describe more than %d pages: %w", MaxTDXPages, ErrMalformed)
		}
		sections = append(sections, s)
	}
	return sections, nil
}

func (s TDXSection) validate(imageSize int) error {
	if s.Type >= tdxSectionTypeMax {
		return fmt.Errorf("unknown type: %w", ErrMalformed)
	}
	if uint64(s.DataOffset)+uint64(s.RawDataSize) > uint64(imageSize) {
		return fmt.Errorf("data [%#x, +%#x) outside the %d-byte image (TDX measures the unified OVMF.fd, not the CODE half of a split image): %w", s.DataOffset, s.RawDataSize, imageSize, ErrMalformed)
	}
	if s.MemoryAddress%PageSize != 0 || s.MemoryDataSize%PageSize != 0 {
		return fmt.Errorf("memory %#x+%#x not page aligned: %w", s.MemoryAddress, s.MemoryDataSize, ErrMalformed)
	}
	if s.MemoryAddress+s.MemoryDataSize < s.MemoryAddress {
		return fmt.Errorf("memory %#x+%#x wraps around: %w", s.MemoryAddress, s.MemoryDataSize, ErrMalformed)
	}
	if s.Type != TDXTDInfo && uint64(s.RawDataSize) > s.MemoryDataSize {
		return fmt.Errorf("raw data size %#x exceeds memory size %#x: %w", s.RawDataSize, s.MemoryDataSize, ErrMalformed)
	}
	if s.Attributes&TDXAttrMRExtend != 0 {
		if s.Attributes&TDXAttrPageAug != 0 {
			return fmt.Errorf("attributes %#x: both MR.EXTEND and PAGE.AUG: %w", s.Attributes, ErrMalformed)
		}
		// The VMM maps the image bytes as the section's memory, so a measured section must
		// be backed by exactly its memory size of image data.
		if uint64(s.RawDataSize) != s.MemoryDataSize {
			return fmt.Errorf("measured section has raw size %#x != memory size %#x: %w", s.RawDataSize, s.MemoryDataSize, ErrMalformed)
		}
	}
	return nil
}

// HasTDXMetadata reports whether the image carries a TDX metadata pointer.
func (f *Firmware) HasTDXMetadata() bool {
	_, ok := f.table[TDXMetadataGUID]
	return ok
}

// TDXSectionData returns the image bytes of a TDVF section (validated by TDXSections).
func (f *Firmware) TDXSectionData(s TDXSection) ([]byte, error) {
	if uint64(s.DataOffset)+uint64(s.RawDataSize) > uint64(len(f.data)) {
		return nil, errors.New("TDX section data outside the image")
	}
	return f.data[s.DataOffset : s.DataOffset+s.RawDataSize], nil
}
