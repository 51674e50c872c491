package volume

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/sealpod/sealpod/agent/hostvalue"
)

// NoOrdinal is ClaimID.Ordinal for a claim that is not a StatefulSet volumeClaimTemplate
// (a plain PVC or an ephemeral volume).
const NoOrdinal = -1

// MaxOrdinal bounds ClaimID.Ordinal (Kubernetes StatefulSet replicas are int32).
const MaxOrdinal = 1<<31 - 1

// Secret sizes: the per-workload volume secret is random bytes from the broker.
const (
	MinSecretSize = 32
	MaxSecretSize = 64
)

// Key-derivation constants (docs/volumes.md, "Key derivation"). Changing any of them makes
// every existing volume unreadable: they are part of the on-disk format.
const (
	kdfSalt = "sealpod-volume-v1"
	// Info strings: kdfInfoPrefix + purpose + 0x00 + the encoded claim identity.
	kdfInfoPrefix     = "sealpod volume v1 "
	purposeCrypt      = "dm-crypt aes-xts-plain64"
	purposeIntegrity  = "dm-integrity internal_hash hmac(sha256)"
	purposeJournalMAC = "dm-integrity journal_mac hmac(sha256)"
	cryptKeySize      = 64 // AES-256-XTS: two 256-bit keys
	hmacKeySize       = 32
)

// ClaimID is the identity a volume is bound to: the pod's namespace, the claim's name (for a
// StatefulSet, the volumeClaimTemplate's name, not the generated PVC name) and the
// StatefulSet ordinal (NoOrdinal otherwise). These values come from the host (the pod's
// namespace and name) and are validated by their Kubernetes syntax before use.
type ClaimID struct {
	Namespace string
	Claim     string
	Ordinal   int
}

// Validate checks the identity's syntax: Namespace a DNS-1123 label, Claim a DNS-1123
// subdomain, Ordinal NoOrdinal or 0..MaxOrdinal.
func (id ClaimID) Validate() error {
	if !hostvalue.IsDNS1123Label(id.Namespace) {
		return fmt.Errorf("claim identity: namespace %q is not a DNS-1123 label", id.Namespace)
	}
	if !hostvalue.IsDNS1123Subdomain(id.Claim) {
		return fmt.Errorf("claim identity: claim %q is not a DNS-1123 subdomain", id.Claim)
	}
	if id.Ordinal != NoOrdinal && (id.Ordinal < 0 || id.Ordinal > MaxOrdinal) {
		return fmt.Errorf("claim identity: ordinal %d out of range (-1 or 0..%d)", id.Ordinal, MaxOrdinal)
	}
	return nil
}

// encode is the identity's canonical encoding in the HKDF info string:
//
//	u16be len(namespace) ‖ namespace ‖ u16be len(claim) ‖ claim ‖ u8 hasOrdinal ‖ u32be ordinal
//
// (hasOrdinal 0 and ordinal 0 for NoOrdinal). Lengths make it injective.
func (id ClaimID) encode() []byte {
	b := make([]byte, 0, 2+len(id.Namespace)+2+len(id.Claim)+5)
	b = binary.BigEndian.AppendUint16(b, uint16(len(id.Namespace)))
	b = append(b, id.Namespace...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(id.Claim)))
	b = append(b, id.Claim...)
	if id.Ordinal == NoOrdinal {
		b = append(b, 0)
		b = binary.BigEndian.AppendUint32(b, 0)
	} else {
		b = append(b, 1)
		b = binary.BigEndian.AppendUint32(b, uint32(id.Ordinal))
	}
	return b
}

// Keys are the per-volume keys derived from the volume secret and the claim identity.
type Keys struct {
	Crypt      []byte // 64 bytes, dm-crypt aes-xts-plain64
	Integrity  []byte // 32 bytes, dm-integrity internal_hash hmac(sha256)
	JournalMAC []byte // 32 bytes, dm-integrity journal_mac hmac(sha256) (also MACs the superblock: fix_hmac)
}

// Wipe zeroes the keys.
func (k *Keys) Wipe() {
	for _, b := range [][]byte{k.Crypt, k.Integrity, k.JournalMAC} {
		clear(b)
	}
}

// DeriveKeys derives the volume keys: for each purpose,
// HKDF-SHA256(ikm = secret, salt = "sealpod-volume-v1",
// info = "sealpod volume v1 " ‖ purpose ‖ 0x00 ‖ id.encode()).
func DeriveKeys(secret []byte, id ClaimID) (*Keys, error) {
	if len(secret) < MinSecretSize || len(secret) > MaxSecretSize {
		return nil, fmt.Errorf("volume secret: %d bytes, want %d..%d", len(secret), MinSecretSize, MaxSecretSize)
	}
	if err := id.Validate(); err != nil {
		return nil, err
	}
	prk, err := hkdf.Extract(sha256.New, secret, []byte(kdfSalt))
	if err != nil {
		return nil, fmt.Errorf("volume keys: %w", err)
	}
	defer clear(prk)
	enc := id.encode()
	expand := func(purpose string, n int) ([]byte, error) {
		info := make([]byte, 0, len(kdfInfoPrefix)+len(purpose)+1+len(enc))
		info = append(append(append(append(info, kdfInfoPrefix...), purpose...), 0), enc...)
		return hkdf.Expand(sha256.New, prk, string(info), n)
	}
	var k Keys
	if k.Crypt, err = expand(purposeCrypt, cryptKeySize); err != nil {
		return nil, fmt.Errorf("volume keys: %w", err)
	}
	if k.Integrity, err = expand(purposeIntegrity, hmacKeySize); err != nil {
		return nil, fmt.Errorf("volume keys: %w", err)
	}
	if k.JournalMAC, err = expand(purposeJournalMAC, hmacKeySize); err != nil {
		return nil, fmt.Errorf("volume keys: %w", err)
	}
	return &k, nil
}
