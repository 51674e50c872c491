package volume

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// The dm-integrity superblock (linux drivers/md/dm-integrity.c, struct superblock), at sector 0
// of the backing device; the kernel reads and writes SB_SECTORS = 8 sectors (4096 bytes) there.
// Offsets (little-endian):
//
//	0   magic[8]                  "integrt\0"
//	8   version                   u8 (1..5; 5 with fix_hmac)
//	9   log2_interleave_sectors   u8
//	10  integrity_tag_size        le16 (32 for hmac(sha256))
//	12  journal_sections          le32
//	16  provided_data_sectors     le64 (usable 512-byte sectors)
//	24  flags                     le32 (0x1 journal MAC, 0x2 recalculating, 0x4 dirty bitmap,
//	                                    0x8 fixed padding, 0x10 fixed HMAC)
//	28  log2_sectors_per_block    u8
//	29  log2_blocks_per_bitmap_bit u8
//	30  pad[2]
//	32  recalc_sector             le64
//	40  pad2[8]
//	48  salt[16]                  (fix_hmac)
//	480 superblock MAC            hmac(sha256) over bytes 0..479 with the journal_mac key
//	                              (fix_hmac: the last 32 bytes of sector 0)
const (
	SuperblockSize = 4096
	sbMinSize      = 64
)

var sbMagic = []byte("integrt\x00")

// Superblock flags (dm-integrity.c SB_FLAG_*).
const (
	sbFlagJournalMAC = 0x1
	sbFlagFixedHMAC  = 0x10
)

// State is what Probe finds on a device.
type State int

const (
	// StateEmpty: the first SuperblockSize bytes are all zero. This is the only state in
	// which Open formats, and the only one in which the kernel's dm-integrity initializes a
	// superblock itself ("The device is not initialized" otherwise).
	StateEmpty State = iota + 1
	// StateIntegrity: a dm-integrity superblock in the format Open writes.
	StateIntegrity
)

func (s State) String() string {
	switch s {
	case StateEmpty:
		return "empty"
	case StateIntegrity:
		return "dm-integrity"
	}
	return "unknown"
}

// Errors callers branch on (errors.Is).
var (
	// ErrUnknownContent: the device holds neither zeros nor a dm-integrity superblock. Open
	// refuses it and never formats it.
	ErrUnknownContent = errors.New("device holds data that is not a sealed volume")
	// ErrBadSuperblock: a dm-integrity superblock that this package never writes (version,
	// tag size, flags or sizes out of range). The host controls these bytes.
	ErrBadSuperblock = errors.New("dm-integrity superblock not in the sealed-volume format")
)

// Superblock is the part of the dm-integrity superblock Open uses. Its fields are read from
// the host-controlled device and only trusted after the kernel has checked the superblock MAC
// (fix_hmac) during activation; before that they only size the first table load, and the
// kernel refuses a table longer than what it computes itself.
type Superblock struct {
	Version             uint8
	Log2Interleave      uint8
	TagSize             uint16
	JournalSections     uint32
	ProvidedDataSectors uint64
	Flags               uint32
	Log2SectorsPerBlock uint8
}

// Probe classifies the first bytes of a device (at least sbMinSize bytes; SuperblockSize for
// the zero check). It returns the parsed superblock for StateIntegrity.
func Probe(head []byte) (State, *Superblock, error) {
	if len(head) < SuperblockSize {
		return 0, nil, fmt.Errorf("probe: read %d bytes, need %d", len(head), SuperblockSize)
	}
	head = head[:SuperblockSize]
	if !bytes.Equal(head[:len(sbMagic)], sbMagic) {
		for _, c := range head {
			if c != 0 {
				return 0, nil, ErrUnknownContent
			}
		}
		return StateEmpty, nil, nil
	}
	sb, err := ParseSuperblock(head)
	if err != nil {
		return 0, nil, err
	}
	return StateIntegrity, sb, nil
}

// ParseSuperblock parses and range-checks a dm-integrity superblock in the format Open
// creates: version 5, tag size 32, journal MAC and fixed HMAC set, 512-byte blocks.
func ParseSuperblock(b []byte) (*Superblock, error) {
	if len(b) < sbMinSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadSuperblock, len(b))
	}
	if !bytes.Equal(b[:len(sbMagic)], sbMagic) {
		return nil, fmt.Errorf("%w: no magic", ErrBadSuperblock)
	}
	sb := &Superblock{
		Version:             b[8],
		Log2Interleave:      b[9],
		TagSize:             binary.LittleEndian.Uint16(b[10:]),
		JournalSections:     binary.LittleEndian.Uint32(b[12:]),
		ProvidedDataSectors: binary.LittleEndian.Uint64(b[16:]),
		Flags:               binary.LittleEndian.Uint32(b[24:]),
		Log2SectorsPerBlock: b[28],
	}
	switch {
	case sb.Version != 5:
		return nil, fmt.Errorf("%w: version %d, want 5", ErrBadSuperblock, sb.Version)
	case sb.TagSize != tagSize:
		return nil, fmt.Errorf("%w: tag size %d, want %d", ErrBadSuperblock, sb.TagSize, tagSize)
	case sb.Flags&(sbFlagJournalMAC|sbFlagFixedHMAC) != sbFlagJournalMAC|sbFlagFixedHMAC:
		return nil, fmt.Errorf("%w: flags %#x lack journal MAC and fixed HMAC", ErrBadSuperblock, sb.Flags)
	case sb.Log2SectorsPerBlock != 0:
		return nil, fmt.Errorf("%w: log2 sectors per block %d, want 0", ErrBadSuperblock, sb.Log2SectorsPerBlock)
	case sb.JournalSections == 0:
		return nil, fmt.Errorf("%w: no journal sections", ErrBadSuperblock)
	case sb.ProvidedDataSectors == 0 || sb.ProvidedDataSectors > maxSectors:
		return nil, fmt.Errorf("%w: provided data sectors %d out of range", ErrBadSuperblock, sb.ProvidedDataSectors)
	}
	return sb, nil
}

// maxSectors bounds sizes read from the host (2^48 sectors = 128 PiB).
const maxSectors = 1 << 48
