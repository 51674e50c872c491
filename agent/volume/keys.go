package volume

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"strings"

	"github.com/sealpod/sealpod/agent/hostvalue"
)

// Secret sizes: the per-workload volume secret is random bytes from the broker.
const (
	MinSecretSize = 32
	MaxSecretSize = 64
)

// Key-derivation constants (docs/volumes.md, "Key derivation"). Changing any of them makes
// every existing volume unreadable: they are part of the on-disk format.
const (
	kdfSalt = "sealpod-volume-v1"
	// Info strings: kdfInfoPrefix + purpose + 0x00 + the claim identity.
	kdfInfoPrefix     = "sealpod volume v1 "
	purposeCrypt      = "dm-crypt aes-xts-plain64"
	purposeIntegrity  = "dm-integrity internal_hash hmac(sha256)"
	purposeJournalMAC = "dm-integrity journal_mac hmac(sha256)"
	cryptKeySize      = 64 // AES-256-XTS: two 256-bit keys
	hmacKeySize       = 32
)

// ValidateIdentity checks a claim identity's syntax: "<namespace>/<claim>" with the
// namespace a DNS-1123 label and the claim name a DNS-1123 subdomain (spec.Claim.Identity).
// The claim name of a StatefulSet volume carries the pod's ordinal ("<template>-<sts>-<N>").
// The values come from the host (the pod's namespace and name) and are checked here again.
func ValidateIdentity(identity string) error {
	ns, claim, ok := strings.Cut(identity, "/")
	if !ok {
		return fmt.Errorf("claim identity %q: want <namespace>/<claim>", identity)
	}
	if !hostvalue.IsDNS1123Label(ns) {
		return fmt.Errorf("claim identity %q: namespace %q is not a DNS-1123 label", identity, ns)
	}
	if !hostvalue.IsDNS1123Subdomain(claim) {
		return fmt.Errorf("claim identity %q: claim %q is not a DNS-1123 subdomain", identity, claim)
	}
	return nil
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
// info = "sealpod volume v1 " ‖ purpose ‖ 0x00 ‖ identity). The identity is the info's tail
// (purposes hold no 0x00), so distinct identities give distinct info strings.
func DeriveKeys(secret []byte, identity string) (*Keys, error) {
	if len(secret) < MinSecretSize || len(secret) > MaxSecretSize {
		return nil, fmt.Errorf("volume secret: %d bytes, want %d..%d", len(secret), MinSecretSize, MaxSecretSize)
	}
	if err := ValidateIdentity(identity); err != nil {
		return nil, err
	}
	prk, err := hkdf.Extract(sha256.New, secret, []byte(kdfSalt))
	if err != nil {
		return nil, fmt.Errorf("volume keys: %w", err)
	}
	defer clear(prk)
	expand := func(purpose string, n int) ([]byte, error) {
		info := make([]byte, 0, len(kdfInfoPrefix)+len(purpose)+1+len(identity))
		info = append(append(append(append(info, kdfInfoPrefix...), purpose...), 0), identity...)
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
