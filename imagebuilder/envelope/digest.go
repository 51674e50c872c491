package envelope

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/sealpod/sealpod/internal/tee"
)

// Digest is the envelope digest: SHA-256 of the whole envelope bytes. The launch carries it
// (HostData) and the broker expects it; on the wire and in files it is lowercase hex (String).
type Digest [sha256.Size]byte

// ErrDigest is wrapped by ParseDigest for a string that is not 64 lowercase hex digits.
var ErrDigest = errors.New("malformed envelope digest")

// Sum returns the digest of an envelope.
func Sum(env []byte) Digest { return sha256.Sum256(env) }

// String returns the digest as 64 lowercase hex digits.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// ParseDigest parses 64 lowercase hex digits (the form String writes); anything else, upper
// case included, is an error wrapping ErrDigest.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != 2*len(d) {
		return Digest{}, fmt.Errorf("%w: %d characters, want %d hex digits", ErrDigest, len(s), 2*len(d))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return Digest{}, fmt.Errorf("%w: character %d is not a lowercase hex digit", ErrDigest, i)
		}
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return Digest{}, fmt.Errorf("%w: %w", ErrDigest, err)
	}
	return d, nil
}

// HostData is the digest as t's launch places it: SNP/sim HOST_DATA (32 bytes), TDX
// MRCONFIGID (zero-padded to 48 bytes), nil for pef. The rule lives in internal/tee.
func (d Digest) HostData(t tee.TEE) []byte { return t.HostData(d) }

// MarshalText writes the hex form (JSON strings, flags).
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses the hex form strictly (ParseDigest).
func (d *Digest) UnmarshalText(b []byte) error {
	v, err := ParseDigest(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}
