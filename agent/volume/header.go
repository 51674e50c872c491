package volume

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// The Sealpod volume header: the first HeaderSize bytes of the decrypted (dm-crypt) device.
// It is inside the encrypted and integrity-protected device, so it needs no MAC of its own:
// the host cannot change it without dm-integrity reporting EIO, only replay an older copy of
// the whole device (which the generation catches) or of single sectors with their tags.
// All fields are in sector 0 (one atomic sector write); the rest of the block is zero.
// Big-endian:
//
//	0   magic[8]        "sealpodv"
//	8   version         u32 (1)
//	12  mode            u8 (1 Filesystem, 2 Block)
//	13  reserved[3]     zero
//	16  identity[32]    SHA-256 of the claim identity ("<namespace>/<claim>")
//	48  generation      u64 (the broker generation this volume was last opened at)
//	56  data offset     u64 (sectors; HeaderSectors)
//	64  data sectors    u64 (the user device's size: the dm-crypt device minus the header)
//	72  reserved        zero up to HeaderSize
const (
	HeaderSize    = 4096
	HeaderSectors = HeaderSize / sectorSize
	headerVersion = 1
	headerFields  = 72
)

var headerMagic = []byte("sealpodv")

// Errors callers branch on (errors.Is).
var (
	// ErrBadHeader: the decrypted device's header is not a valid Sealpod volume header.
	ErrBadHeader = errors.New("sealed volume header invalid")
	// ErrRollback: the volume's generation does not match the broker's: an older (or
	// otherwise out-of-sequence) copy of the volume, or an emptied device, was attached.
	ErrRollback = errors.New("volume rollback detected")
	// errNoHeader: the header block is all zero (a first format that did not finish).
	errNoHeader = fmt.Errorf("%w: no header (all zero)", ErrBadHeader)
)

// Header is the decoded Sealpod volume header.
type Header struct {
	IdentityDigest [32]byte
	Mode           Mode
	Generation     uint64
	DataOffset     uint64 // sectors
	DataSectors    uint64
}

// modeCode is a Mode's header byte (never 0, so a zeroed field is invalid).
func modeCode(m Mode) byte { return byte(m) + 1 }

func (m Mode) String() string {
	switch m {
	case ModeFilesystem:
		return "Filesystem"
	case ModeBlock:
		return "Block"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

func (h Header) encode() []byte {
	b := make([]byte, HeaderSize)
	copy(b, headerMagic)
	binary.BigEndian.PutUint32(b[8:], headerVersion)
	b[12] = modeCode(h.Mode)
	copy(b[16:48], h.IdentityDigest[:])
	binary.BigEndian.PutUint64(b[48:], h.Generation)
	binary.BigEndian.PutUint64(b[56:], h.DataOffset)
	binary.BigEndian.PutUint64(b[64:], h.DataSectors)
	return b
}

// decodeHeader parses a header block strictly: every byte is either a known field or zero.
// An all-zero block is errNoHeader.
func decodeHeader(b []byte) (*Header, error) {
	if len(b) != HeaderSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrBadHeader, len(b), HeaderSize)
	}
	if !bytes.Equal(b[:len(headerMagic)], headerMagic) {
		if isZero(b) {
			return nil, errNoHeader
		}
		return nil, fmt.Errorf("%w: no magic", ErrBadHeader)
	}
	if v := binary.BigEndian.Uint32(b[8:]); v != headerVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrBadHeader, v, headerVersion)
	}
	h := &Header{
		Generation:  binary.BigEndian.Uint64(b[48:]),
		DataOffset:  binary.BigEndian.Uint64(b[56:]),
		DataSectors: binary.BigEndian.Uint64(b[64:]),
	}
	switch b[12] {
	case modeCode(ModeFilesystem):
		h.Mode = ModeFilesystem
	case modeCode(ModeBlock):
		h.Mode = ModeBlock
	default:
		return nil, fmt.Errorf("%w: mode %d", ErrBadHeader, b[12])
	}
	copy(h.IdentityDigest[:], b[16:48])
	switch {
	case !isZero(b[13:16]) || !isZero(b[headerFields:]):
		return nil, fmt.Errorf("%w: reserved bytes not zero", ErrBadHeader)
	case h.DataOffset != HeaderSectors:
		return nil, fmt.Errorf("%w: data offset %d sectors, want %d", ErrBadHeader, h.DataOffset, HeaderSectors)
	case h.DataSectors == 0 || h.DataSectors > maxSectors:
		return nil, fmt.Errorf("%w: data sectors %d out of range", ErrBadHeader, h.DataSectors)
	}
	return h, nil
}

// check verifies that the header belongs to this claim identity, mode and device size
// (sectors: the dm-crypt device's size).
func (h *Header) check(identity string, mode Mode, sectors uint64) error {
	if h.IdentityDigest != sha256.Sum256([]byte(identity)) {
		return fmt.Errorf("%w: the volume header names another claim than %s", ErrWrongIdentity, identity)
	}
	if h.Mode != mode {
		return fmt.Errorf("%w: volume formatted as %s, opened as %s", ErrBadHeader, h.Mode, mode)
	}
	if h.DataOffset+h.DataSectors != sectors {
		return fmt.Errorf("%w: header data %d+%d sectors, device has %d", ErrBadHeader, h.DataOffset, h.DataSectors, sectors)
	}
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Generations is the broker's per-volume generation counter (kbs volume begin/commit):
// Begin returns the committed generation c and a pending p = c+1, which the broker keeps
// (Begin again returns the same p) until Commit(p).
type Generations interface {
	Begin(ctx context.Context, identity string) (committed, pending uint64, err error)
	Commit(ctx context.Context, identity string, gen uint64) error
}

// begin calls g.Begin and checks the answer's shape.
func begin(ctx context.Context, g Generations, identity string) (c, p uint64, err error) {
	c, p, err = g.Begin(ctx, identity)
	if err != nil {
		return 0, 0, fmt.Errorf("volume %s: begin generation: %w", identity, err)
	}
	if err := checkBegin(identity, c, p); err != nil {
		return 0, 0, err
	}
	return c, p, nil
}

func checkBegin(identity string, c, p uint64) error {
	if c == 1<<64-1 || p != c+1 {
		return fmt.Errorf("volume %s: broker generations committed %d, pending %d: want pending = committed+1", identity, c, p)
	}
	return nil
}

// decide is the rollback rule: a volume whose header generation v is the broker's committed
// c opens; v == p is a crash after the header write and before Commit, and opens too.
// Anything else is ErrRollback.
func decide(identity string, v, c, p uint64) error {
	switch {
	case v == c || v == p:
		return nil
	case v < c:
		return fmt.Errorf("%w: volume %s: header generation %d is older than the broker's committed generation %d (an older copy of the volume)", ErrRollback, identity, v, c)
	default:
		return fmt.Errorf("%w: volume %s: header generation %d is newer than the broker's pending generation %d", ErrRollback, identity, v, p)
	}
}

// planFormat decides whether a device without a header (empty, or a first format that did
// not finish) may be formatted: only if the broker never committed a generation for the
// claim (so no data was ever handed to a container) and the caller allows it.
func planFormat(identity string, c uint64, allow bool) error {
	if c > 0 {
		return fmt.Errorf("%w: volume %s: the device is not formatted but the broker's committed generation is %d (the volume was wiped or replaced)", ErrRollback, identity, c)
	}
	if !allow {
		return ErrNotFormatted
	}
	return nil
}

// headerIO reads and durably writes the header block (the dm-crypt device's first 4 KiB).
type headerIO interface {
	readHeader() ([]byte, error)
	writeHeader(b []byte) error
}

// advance is the second half of the generation protocol on an open volume: read and check
// the header, apply decide, write p to the header (durably), then Commit(p). It returns the
// committed generation. A refused header is neither written nor committed.
func advance(ctx context.Context, g Generations, identity string, c, p uint64, hio headerIO, mode Mode, sectors uint64) (uint64, error) {
	raw, err := hio.readHeader()
	if err != nil {
		return 0, fmt.Errorf("read volume header: %w", err)
	}
	h, err := decodeHeader(raw)
	if errors.Is(err, errNoHeader) {
		if err := planFormat(identity, c, false); err != nil {
			return 0, err
		}
	}
	if err != nil {
		return 0, err
	}
	if err := h.check(identity, mode, sectors); err != nil {
		return 0, err
	}
	if err := decide(identity, h.Generation, c, p); err != nil {
		return 0, err
	}
	h.Generation = p
	if err := hio.writeHeader(h.encode()); err != nil {
		return 0, fmt.Errorf("write volume header generation %d: %w", p, err)
	}
	if err := g.Commit(ctx, identity, p); err != nil {
		return 0, fmt.Errorf("volume %s: commit generation %d: %w", identity, p, err)
	}
	return p, nil
}
