package p384

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"math/big"
	"testing"

	"filippo.io/nistec"
)

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sign(t testing.TB, k *ecdsa.PrivateKey, msg []byte) (digest []byte, r, s *big.Int) {
	t.Helper()
	h := sha512.Sum384(msg)
	r, s, err := ecdsa.Sign(rand.Reader, k, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return h[:], r, s
}

// TestVerifyMatchesECDSA holds Table.Verify to crypto/ecdsa.Verify on valid signatures and on
// every way of breaking one.
func TestVerifyMatchesECDSA(t *testing.T) {
	key, other := newKey(t), newKey(t)
	tab, err := NewTable(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	n := new(big.Int).Set(order)
	one := big.NewInt(1)
	for i := range 50 {
		msg := []byte{byte(i), 'r', 'e', 'p', 'o', 'r', 't'}
		digest, r, s := sign(t, key, msg)
		_, ro, so := sign(t, other, msg)
		flipped := append([]byte(nil), digest...)
		flipped[i%len(flipped)] ^= 1 << (i % 8)
		cases := []struct {
			name   string
			digest []byte
			r, s   *big.Int
		}{
			{"valid", digest, r, s},
			{"other key's signature", digest, ro, so},
			{"changed digest", flipped, r, s},
			{"r+1", digest, new(big.Int).Add(r, one), s},
			{"s+1", digest, r, new(big.Int).Add(s, one)},
			{"-s mod n (also valid in ECDSA)", digest, r, new(big.Int).Sub(n, s)},
			{"r+n", digest, new(big.Int).Add(r, n), s},
			{"s+n", digest, r, new(big.Int).Add(s, n)},
			{"r=0", digest, new(big.Int), s},
			{"s=0", digest, r, new(big.Int)},
			{"r=n", digest, n, s},
			{"negative r", digest, new(big.Int).Neg(r), s},
			{"short digest", digest[:20], r, s},
			{"long digest", append(append([]byte(nil), digest...), 1, 2, 3), r, s},
		}
		for _, tc := range cases {
			want := ecdsa.Verify(&key.PublicKey, tc.digest, tc.r, tc.s)
			if got := tab.Verify(tc.digest, tc.r, tc.s); got != want {
				t.Fatalf("signature %d, %s: Table.Verify = %v, crypto/ecdsa.Verify = %v", i, tc.name, got, want)
			}
			if tc.name == "valid" && !want {
				t.Fatalf("signature %d: crypto/ecdsa rejects a fresh signature", i)
			}
		}
	}
}

// TestVerifyEdgeScalars covers u1 = 0 (digest 0) and u2 scalars with every window digit, where a
// table indexing slip would show.
func TestVerifyEdgeScalars(t *testing.T) {
	key := newKey(t)
	tab, err := NewTable(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, 48)
	r, s, err := ecdsa.Sign(rand.Reader, key, zero)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.Verify(&key.PublicKey, zero, r, s) || !tab.Verify(zero, r, s) {
		t.Fatal("signature of the zero digest: want valid in both")
	}
	// k·G for k with all digits 1..15 in turn, through addMul against nistec's ScalarBaseMult.
	for d := byte(0); d < 16; d++ {
		var k [scalarBytes]byte
		for i := range k {
			k[i] = d<<4 | (15 - d)
		}
		acc := nistec.NewP384Point()
		generator().addMul(acc, &k)
		want, err := nistec.NewP384Point().ScalarBaseMult(k[:])
		if err != nil {
			t.Fatal(err)
		}
		if string(acc.Bytes()) != string(want.Bytes()) {
			t.Fatalf("digit pattern %x: table multiplication differs from ScalarBaseMult", d)
		}
	}
}

func TestNewTableRejects(t *testing.T) {
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	// An invalid key can only be made from raw coordinates (deprecated for exactly that reason).
	offCurve := &ecdsa.PublicKey{Curve: elliptic.P384(), X: new(big.Int).Add(key.X, big.NewInt(1)), Y: key.Y} //nolint:staticcheck // SA1019: building an off-curve key on purpose
	for name, pub := range map[string]*ecdsa.PublicKey{"nil": nil, "P-256 key": &p256.PublicKey, "point off the curve": offCurve} {
		if _, err := NewTable(pub); err == nil {
			t.Errorf("%s: NewTable accepted it", name)
		}
	}
}

// FuzzVerify: Table.Verify and crypto/ecdsa.Verify agree on arbitrary digests and (r, s).
func FuzzVerify(f *testing.F) {
	key := newKey(f)
	tab, err := NewTable(&key.PublicKey)
	if err != nil {
		f.Fatal(err)
	}
	digest, r, s := sign(f, key, []byte("seed"))
	f.Add(digest, r.Bytes(), s.Bytes())
	f.Add([]byte{}, []byte{1}, []byte{1})
	f.Fuzz(func(t *testing.T, digest, rb, sb []byte) {
		if len(rb) > 60 || len(sb) > 60 {
			return
		}
		r, s := new(big.Int).SetBytes(rb), new(big.Int).SetBytes(sb)
		if got, want := tab.Verify(digest, r, s), ecdsa.Verify(&key.PublicKey, digest, r, s); got != want {
			t.Fatalf("Table.Verify = %v, crypto/ecdsa.Verify = %v", got, want)
		}
	})
}

// BenchmarkVerify compares one verification with a table against crypto/ecdsa.Verify (the
// broker's floor, docs/kbs.md "Performance"); the ratio is printed as ecdsa-ns/table-ns.
func BenchmarkVerify(b *testing.B) {
	key := newKey(b)
	tab, err := NewTable(&key.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	digest, r, s := sign(b, key, []byte("report"))
	b.Run("table", func(b *testing.B) {
		for b.Loop() {
			if !tab.Verify(digest, r, s) {
				b.Fatal("rejected")
			}
		}
	})
	b.Run("crypto-ecdsa", func(b *testing.B) {
		for b.Loop() {
			if !ecdsa.Verify(&key.PublicKey, digest, r, s) {
				b.Fatal("rejected")
			}
		}
	})
	b.Run("new-table", func(b *testing.B) {
		for b.Loop() {
			if _, err := NewTable(&key.PublicKey); err != nil {
				b.Fatal(err)
			}
		}
	})
}
