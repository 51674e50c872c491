package api

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"testing"

	"golang.org/x/crypto/nacl/box"
)

// TestBoxCompatible checks that SealKey/OpenKey are NaCl anonymous boxes: what SealKey seals
// opens with x/crypto's box.OpenAnonymous and what box.SealAnonymous seals opens with
// OpenKey and OpenKeyWith.
func TestBoxCompatible(t *testing.T) {
	for i := range 20 {
		pub, priv, err := box.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		msg := make([]byte, i*7)
		rand.Read(msg)
		sealed, err := SealKey(msg, pub[:])
		if err != nil {
			t.Fatal(err)
		}
		if len(sealed) != len(msg)+SealedKeyOverhead || len(sealed) != len(msg)+box.AnonymousOverhead {
			t.Fatalf("sealed %d bytes for %d", len(sealed), len(msg))
		}
		got, ok := box.OpenAnonymous(nil, sealed, pub, priv)
		if !ok || !bytes.Equal(got, msg) {
			t.Fatalf("x/crypto box does not open SealKey's box (%d bytes)", len(msg))
		}
		theirs, err := box.SealAnonymous(nil, msg, pub, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		got, err = OpenKey(theirs, pub, priv)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("OpenKey does not open x/crypto's box: %v", err)
		}
		k, _ := ecdh.X25519().NewPrivateKey(priv[:])
		got, err = OpenKeyWith(theirs, pub[:], k)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("OpenKeyWith does not open x/crypto's box: %v", err)
		}
		// Bound to the recipient key: the nonce covers pk.
		other, _, _ := box.GenerateKey(rand.Reader)
		if _, err := OpenKeyWith(theirs, other[:], k); !errors.Is(err, ErrOpenKey) {
			t.Fatalf("opened with the wrong recipient public key: %v", err)
		}
	}
}

// A low-order TEE key would give an all-zero shared secret (a box anyone opens): refused.
func TestSealKeyLowOrder(t *testing.T) {
	lowOrder := [][]byte{
		make([]byte, 32),                       // 0
		append([]byte{1}, make([]byte, 31)...), // 1
		{0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00},
	}
	for _, p := range lowOrder {
		if _, err := SealKey(bytes.Repeat([]byte{7}, 32), p); !errors.Is(err, ErrBadTEEKey) {
			t.Errorf("SealKey to low-order point %x: %v, want ErrBadTEEKey", p, err)
		}
	}
	if _, err := SealKey(bytes.Repeat([]byte{7}, 32), make([]byte, 31)); err == nil {
		t.Error("SealKey accepted a 31-byte key")
	}
	if _, err := OpenKeyWith(make([]byte, SealedKeyOverhead-1), make([]byte, 32), nil); !errors.Is(err, ErrOpenKey) {
		t.Errorf("OpenKeyWith of a short box: %v", err)
	}
}

func BenchmarkSealKey(b *testing.B) {
	pub, _, _ := box.GenerateKey(rand.Reader)
	key := bytes.Repeat([]byte{7}, 32)
	b.Run("api.SealKey", func(b *testing.B) {
		for b.Loop() {
			if _, err := SealKey(key, pub[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("box.SealAnonymous", func(b *testing.B) {
		for b.Loop() {
			if _, err := box.SealAnonymous(nil, key, pub, rand.Reader); err != nil {
				b.Fatal(err)
			}
		}
	})
}
