// Package ovmf parses the launch-relevant metadata of an OVMF / TDVF firmware image: the GUIDed
// table that ends 32 bytes before the end of the image ("OVMF footer table"), the SEV metadata
// (SNP_SEC_MEM, SECRETS, CPUID, SVSM_CAA, SNP_KERNEL_HASHES sections), the SEV kernel-hashes
// table address, the SEV-ES AP reset vector and the TDX (TDVF) metadata.
//
// Firmware images are untrusted input: every offset and length is bounds-checked and malformed
// images yield errors wrapping ErrMalformed, never panics.
package ovmf

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrMalformed is wrapped by every error about a structurally invalid firmware image.
var ErrMalformed = errors.New("malformed firmware")

// ErrNotFound is wrapped when a table entry or metadata block the caller asked for is absent.
var ErrNotFound = errors.New("not found in firmware")

// PageSize is the 4 KiB page of SEV-SNP and TDX.
const PageSize = 4096

// FourGiB is the address at which the firmware image ends in guest physical memory.
const FourGiB = 1 << 32

// GUID is a GUID in its in-memory (mixed-endian, "bytes_le") encoding.
type GUID [16]byte

// MustGUID parses the canonical text form ("96b582de-1fb2-45f7-baea-a366c55a082d").
// It panics on malformed text and is meant for constants.
func MustGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// ParseGUID parses the canonical text form of a GUID into its in-memory encoding: the first
// three groups little-endian, the last two as bytes.
func ParseGUID(s string) (GUID, error) {
	var g GUID
	parts := strings.Split(s, "-")
	if len(parts) != 5 || len(parts[0]) != 8 || len(parts[1]) != 4 || len(parts[2]) != 4 ||
		len(parts[3]) != 4 || len(parts[4]) != 12 {
		return g, fmt.Errorf("guid %q: want 8-4-4-4-12 hex digits", s)
	}
	raw, err := hex.DecodeString(strings.Join(parts, ""))
	if err != nil {
		return g, fmt.Errorf("guid %q: %w", s, err)
	}
	g[0], g[1], g[2], g[3] = raw[3], raw[2], raw[1], raw[0]
	g[4], g[5] = raw[5], raw[4]
	g[6], g[7] = raw[7], raw[6]
	copy(g[8:], raw[8:])
	return g, nil
}

// String returns the canonical text form.
func (g GUID) String() string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(g[0:4]), binary.LittleEndian.Uint16(g[4:6]),
		binary.LittleEndian.Uint16(g[6:8]), g[8:10], g[10:16])
}

// Well-known GUIDs of the OVMF footer table (edk2 OvmfPkg/ResetVector).
var (
	FooterTableGUID     = MustGUID("96b582de-1fb2-45f7-baea-a366c55a082d")
	SEVHashTableRVGUID  = MustGUID("7255371f-3a3b-4b04-927b-1da6efa8d454")
	SEVESResetBlockGUID = MustGUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
	SEVMetadataGUID     = MustGUID("dc886566-984a-4798-a75e-5585a7bf67cc")
	TDXMetadataGUID     = MustGUID("e47a6535-984a-4798-865e-4685a7bf8ec2")
)

// SEVSectionType is the type of an SEV metadata section.
type SEVSectionType uint32

// SEV metadata section types (edk2 OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm).
const (
	SNPSecMem       SEVSectionType = 1
	SNPSecrets      SEVSectionType = 2
	SNPCPUID        SEVSectionType = 3
	SNPSVSMCAA      SEVSectionType = 4
	SNPKernelHashes SEVSectionType = 0x10
)

func (t SEVSectionType) String() string {
	switch t {
	case SNPSecMem:
		return "SNP_SEC_MEM"
	case SNPSecrets:
		return "SNP_SECRETS"
	case SNPCPUID:
		return "CPUID"
	case SNPSVSMCAA:
		return "SVSM_CAA"
	case SNPKernelHashes:
		return "SNP_KERNEL_HASHES"
	}
	return fmt.Sprintf("unknown(%#x)", uint32(t))
}

// SEVSection is one entry of the SEV metadata: a guest-physical range and what it holds.
type SEVSection struct {
	GPA  uint32
	Size uint32
	Type SEVSectionType
}

// Firmware is a parsed firmware image. The image bytes are kept (not copied).
type Firmware struct {
	data        []byte
	table       map[GUID][]byte
	sevSections []SEVSection
}

const (
	footerEntryHeaderSize = 18 // u16 size + GUID, at the END of each entry
	footerTrailer         = 32 // the table ends 32 bytes before the end of the image
	sevHeaderSize         = 16 // "ASEV", size, version, num_items
	sevSectionSize        = 12 // gpa, size, type (u32 each)
	maxSEVSections        = 1024
)

// Parse parses the footer table and the SEV metadata of a firmware image. An image without a
// footer table is valid (it simply has no entries); a footer table or SEV metadata that is
// present but inconsistent is an error.
func Parse(data []byte) (*Firmware, error) {
	f := &Firmware{data: data, table: map[GUID][]byte{}}
	if err := f.parseFooterTable(); err != nil {
		return nil, err
	}
	if err := f.parseSEVMetadata(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Firmware) parseFooterTable() error {
	n := len(f.data)
	start := n - footerTrailer - footerEntryHeaderSize
	if start < 0 {
		return nil // too small to carry a table
	}
	var guid GUID
	copy(guid[:], f.data[start+2:start+footerEntryHeaderSize])
	if guid != FooterTableGUID {
		return nil
	}
	footerSize := int(binary.LittleEndian.Uint16(f.data[start:]))
	tableSize := footerSize - footerEntryHeaderSize
	if tableSize < 0 {
		return fmt.Errorf("footer table: size %d smaller than its own header: %w", footerSize, ErrMalformed)
	}
	if tableSize > start {
		return fmt.Errorf("footer table: size %d runs before the start of the %d-byte image: %w", footerSize, n, ErrMalformed)
	}
	table := f.data[start-tableSize : start]
	for len(table) >= footerEntryHeaderSize {
		hdr := table[len(table)-footerEntryHeaderSize:]
		size := int(binary.LittleEndian.Uint16(hdr))
		copy(guid[:], hdr[2:])
		if size < footerEntryHeaderSize {
			return fmt.Errorf("footer table: entry %s: size %d smaller than its header: %w", guid, size, ErrMalformed)
		}
		if size > len(table) {
			return fmt.Errorf("footer table: entry %s: size %d exceeds the %d bytes left in the table: %w", guid, size, len(table), ErrMalformed)
		}
		if _, dup := f.table[guid]; dup {
			return fmt.Errorf("footer table: entry %s: duplicate: %w", guid, ErrMalformed)
		}
		f.table[guid] = table[len(table)-size : len(table)-footerEntryHeaderSize]
		table = table[:len(table)-size]
	}
	return nil
}

// u32Entry reads the little-endian u32 that starts the data of a footer table entry.
func (f *Firmware) u32Entry(g GUID, what string) (uint32, error) {
	e, ok := f.table[g]
	if !ok {
		return 0, fmt.Errorf("footer table: %s entry (%s): %w", what, g, ErrNotFound)
	}
	if len(e) < 4 {
		return 0, fmt.Errorf("footer table: %s entry (%s): %d bytes, want at least 4: %w", what, g, len(e), ErrMalformed)
	}
	return binary.LittleEndian.Uint32(e), nil
}

func (f *Firmware) parseSEVMetadata() error {
	off, err := f.u32Entry(SEVMetadataGUID, "SEV metadata")
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	n := len(f.data)
	if int64(off) > int64(n) || int64(off) < sevHeaderSize {
		return fmt.Errorf("SEV metadata: offset from end %d outside the %d-byte image: %w", off, n, ErrMalformed)
	}
	start := n - int(off)
	hdr := f.data[start:]
	if string(hdr[0:4]) != "ASEV" {
		return fmt.Errorf("SEV metadata: signature %q, want \"ASEV\": %w", hdr[0:4], ErrMalformed)
	}
	size := binary.LittleEndian.Uint32(hdr[4:])
	version := binary.LittleEndian.Uint32(hdr[8:])
	count := binary.LittleEndian.Uint32(hdr[12:])
	if version != 1 {
		return fmt.Errorf("SEV metadata: version %d, want 1: %w", version, ErrMalformed)
	}
	if int64(size) < sevHeaderSize || int64(size) > int64(off) {
		return fmt.Errorf("SEV metadata: size %d outside %d..%d: %w", size, sevHeaderSize, off, ErrMalformed)
	}
	if count > maxSEVSections || sevHeaderSize+int64(count)*sevSectionSize > int64(size) {
		return fmt.Errorf("SEV metadata: %d sections do not fit in size %d: %w", count, size, ErrMalformed)
	}
	for i := range int(count) {
		b := hdr[sevHeaderSize+i*sevSectionSize:]
		s := SEVSection{
			GPA:  binary.LittleEndian.Uint32(b[0:]),
			Size: binary.LittleEndian.Uint32(b[4:]),
			Type: SEVSectionType(binary.LittleEndian.Uint32(b[8:])),
		}
		switch s.Type {
		case SNPSecMem, SNPSecrets, SNPCPUID, SNPSVSMCAA, SNPKernelHashes:
		default:
			return fmt.Errorf("SEV metadata: section %d: unknown type %#x: %w", i, uint32(s.Type), ErrMalformed)
		}
		f.sevSections = append(f.sevSections, s)
	}
	return nil
}

// Data returns the image bytes.
func (f *Firmware) Data() []byte { return f.data }

// GPA returns the guest-physical address of the first byte when the image ends at 4 GiB.
func (f *Firmware) GPA() uint64 { return FourGiB - uint64(len(f.data)) }

// TableEntry returns the data of a footer table entry.
func (f *Firmware) TableEntry(g GUID) ([]byte, bool) {
	e, ok := f.table[g]
	return e, ok
}

// HasFooterTable reports whether the image carries an OVMF footer table with any entry.
func (f *Firmware) HasFooterTable() bool { return len(f.table) > 0 }

// SEVSections returns the SEV metadata sections in firmware order (nil without SEV metadata).
func (f *Firmware) SEVSections() []SEVSection { return f.sevSections }

// HasSEVSection reports whether the SEV metadata has a section of the given type.
func (f *Firmware) HasSEVSection(t SEVSectionType) bool {
	for _, s := range f.sevSections {
		if s.Type == t {
			return true
		}
	}
	return false
}

// SEVESResetEIP returns the AP reset vector from the SEV-ES reset block entry.
func (f *Firmware) SEVESResetEIP() (uint32, error) {
	return f.u32Entry(SEVESResetBlockGUID, "SEV-ES reset block")
}

// SEVHashTableGPA returns the guest-physical address of the SEV kernel-hashes table.
func (f *Firmware) SEVHashTableGPA() (uint32, error) {
	return f.u32Entry(SEVHashTableRVGUID, "SEV hash table")
}
