package volume

import (
	"encoding/hex"
	"fmt"
)

// Kernel target parameters (docs/volumes.md, "On-disk format"). These strings are part of the
// on-disk format: changing an algorithm or option makes existing volumes unreadable.
const (
	// tagSize is the dm-integrity tag size: one hmac(sha256) per 512-byte sector.
	tagSize = 32
	// integrityMode 'J': data and tags are written through dm-integrity's journal, so a crash
	// never leaves a sector whose tag does not match (D would; B would recompute tags).
	integrityMode = "J"
	cryptCipher   = "aes-xts-plain64"
	sectorSize    = 512
	// sbSectors is dm-integrity's SB_SECTORS: the superblock area the kernel zero-checks
	// before it initializes a new superblock.
	sbSectors = SuperblockSize / sectorSize
)

// target is one line of a device-mapper table.
type target struct {
	Start, Length uint64 // in 512-byte sectors
	Type          string
	Params        []byte // holds keys: wipe after use
}

func (t *target) wipe() { clear(t.Params) }

// integrityTarget is the dm-integrity table for the backing device devNum ("major:minor"),
// length sectors long, with the HMAC keys of k:
//
//	<dev> 0 32 J 4 internal_hash:hmac(sha256):<hex> journal_mac:hmac(sha256):<hex> fix_padding fix_hmac
//
// fix_hmac makes the kernel MAC the superblock with the journal_mac key and mix the
// superblock's random salt into every sector tag: a volume opened with other keys (another
// identity or secret) fails at activation with EILSEQ, before any data is read.
func integrityTarget(devNum string, length uint64, k *Keys) target {
	p := fmt.Appendf(make([]byte, 0, 512), "%s 0 %d %s 4 internal_hash:hmac(sha256):", devNum, tagSize, integrityMode)
	p = hex.AppendEncode(p, k.Integrity)
	p = append(p, " journal_mac:hmac(sha256):"...)
	p = hex.AppendEncode(p, k.JournalMAC)
	p = append(p, " fix_padding fix_hmac"...)
	return target{Length: length, Type: "integrity", Params: p}
}

// cryptTarget is the dm-crypt table over the dm-integrity device devNum:
//
//	aes-xts-plain64 <hex key> 0 <dev> 0
//
// (IV offset 0, data offset 0, no optional parameters: in particular no allow_discards,
// which would tell the host which blocks are free).
func cryptTarget(devNum string, length uint64, k *Keys) target {
	p := append(append(make([]byte, 0, 512), cryptCipher...), ' ')
	p = hex.AppendEncode(p, k.Crypt)
	p = fmt.Appendf(p, " 0 %s 0", devNum)
	return target{Length: length, Type: "crypt", Params: p}
}

// linearTarget maps length sectors of the device devNum from sector offset on: the user
// device after the volume header.
//
//	<dev> <offset>
func linearTarget(devNum string, offset, length uint64) target {
	return target{Length: length, Type: "linear", Params: fmt.Appendf(nil, "%s %d", devNum, offset)}
}
