// Package p384 verifies ECDSA P-384 signatures for a public key that signs many messages —
// an SNP chip's VCEK signs the report of every pod on its node — faster than crypto/ecdsa,
// by precomputing multiples of the key once.
//
// crypto/ecdsa computes u1·G + u2·Q per signature: u1·G from a built-in table, u2·Q with 384
// point doublings and 96 additions, the inverse of s with a constant-time exponentiation, and
// constant-time table lookups throughout. Verification handles only public values, so none of
// that needs to be constant time; and Q is the same for every report of a chip. A Table holds
// j·16^i·Q for every 4-bit window i and digit j, so u2·Q costs 96 additions and no doubling;
// G gets the same kind of table. With the inverse computed by math/big, one verification costs
// about a third of crypto/ecdsa's (BenchmarkVerify; TestVerifyMatchesECDSA and FuzzVerify hold
// it to crypto/ecdsa's answers).
//
// The point arithmetic is filippo.io/nistec's (the exported copy of the standard library's
// complete, formally verified P-384 formulas); this package only arranges which points to add.
// Building a Table costs about as much as four verifications and holds 207 KiB: callers cache
// one per key they see repeatedly.
package p384

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"fmt"
	"math/big"
	"sync"

	"filippo.io/nistec"
)

const (
	scalarBytes = 48
	windows     = scalarBytes * 2 // 4-bit windows of a 384-bit scalar
)

// order is the order n of the P-384 group.
var order = elliptic.P384().Params().N

// Table is the precomputed multiples of one public key: t[i][j-1] = j·16^i·Q, j = 1..15.
type Table struct {
	t [windows][15]*nistec.P384Point
}

// ErrKey marks a public key that is not a valid P-384 point.
var ErrKey = errors.New("p384: not a P-384 public key")

// NewTable precomputes the multiples of pub.
func NewTable(pub *ecdsa.PublicKey) (*Table, error) {
	if pub == nil || pub.Curve != elliptic.P384() {
		return nil, ErrKey
	}
	// The uncompressed encoding, checked on the curve by SetBytes (and ecdh, which rejects
	// the point at infinity and coordinates out of range).
	ek, err := pub.ECDH()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	q, err := nistec.NewP384Point().SetBytes(ek.Bytes())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	return tableFor(q), nil
}

func tableFor(q *nistec.P384Point) *Table {
	t := new(Table)
	base := nistec.NewP384Point().Set(q)
	for i := range windows {
		t.t[i][0] = nistec.NewP384Point().Set(base)
		for j := 1; j < 15; j++ {
			t.t[i][j] = nistec.NewP384Point().Add(t.t[i][j-1], base)
		}
		// base = 16·base
		for range 4 {
			base.Double(base)
		}
	}
	return t
}

// generator is the table of G, built on first use.
var generator = sync.OnceValue(func() *Table { return tableFor(nistec.NewP384Point().SetGenerator()) })

// addMul adds k·P to acc, where t is P's table and k a 48-byte big-endian scalar.
func (t *Table) addMul(acc *nistec.P384Point, k *[scalarBytes]byte) {
	for i := range windows {
		b := k[scalarBytes-1-i/2]
		d := b & 0x0f
		if i%2 == 1 {
			d = b >> 4
		}
		if d != 0 {
			acc.Add(acc, t.t[i][d-1])
		}
	}
}

// Verify reports whether (r, s) is a valid ECDSA signature of digest (a SHA-384 hash; longer
// digests are truncated to the order's length, as crypto/ecdsa does) under the table's key.
func (t *Table) Verify(digest []byte, r, s *big.Int) bool {
	if r == nil || s == nil || r.Sign() <= 0 || s.Sign() <= 0 || r.Cmp(order) >= 0 || s.Cmp(order) >= 0 {
		return false
	}
	e := hashToInt(digest)
	w := new(big.Int).ModInverse(s, order)
	if w == nil {
		return false
	}
	u1 := new(big.Int).Mul(e, w)
	u1.Mod(u1, order)
	u2 := new(big.Int).Mul(r, w)
	u2.Mod(u2, order)
	var k1, k2 [scalarBytes]byte
	u1.FillBytes(k1[:])
	u2.FillBytes(k2[:])
	acc := nistec.NewP384Point() // the point at infinity
	generator().addMul(acc, &k1)
	t.addMul(acc, &k2)
	x, err := acc.BytesX() // fails for the point at infinity
	if err != nil {
		return false
	}
	v := new(big.Int).SetBytes(x)
	v.Mod(v, order)
	return v.Cmp(r) == 0
}

// hashToInt converts a digest to an integer, keeping its leftmost 384 bits (SEC 1, 4.1.4).
func hashToInt(digest []byte) *big.Int {
	if len(digest) > scalarBytes {
		digest = digest[:scalarBytes]
	}
	return new(big.Int).SetBytes(digest)
}
