package api

import (
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/blake2b"
	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/salsa20/salsa"
)

// ErrOpenKey is returned when a sealed key cannot be opened with the given key pair.
var ErrOpenKey = errors.New("sealed key does not open with this TEE key pair")

// ErrBadTEEKey is returned by SealKey for a TEE public key that is not a usable X25519 key: a
// low-order point, whose shared secret would be all zeros (and the sealed key readable by
// anyone).
var ErrBadTEEKey = errors.New("TEE public key is not a usable X25519 key")

// SealedKeyOverhead is what SealKey adds to the key: the ephemeral public key and the
// Poly1305 tag.
const SealedKeyOverhead = 32 + secretbox.Overhead

// The sealed format is NaCl's anonymous box (libsodium crypto_box_seal, x/crypto
// box.SealAnonymous):
//
//	epk ‖ XSalsa20-Poly1305(key = HSalsa20(X25519(esk, pk), 0), nonce = BLAKE2b-192(epk ‖ pk), msg)
//
// It is written here on crypto/ecdh because x/crypto's box computes X25519 public keys it
// already has (three scalar multiplications to seal where two suffice, two to open where
// one suffices with a kept *ecdh.PrivateKey), and its ScalarMult silently turns a low-order
// peer key into an all-zero shared secret where crypto/ecdh refuses it.
// TestBoxCompatible checks both directions against x/crypto's box.

var hsalsaZeros [16]byte

func boxKey(shared []byte) *[32]byte {
	var k [32]byte
	copy(k[:], shared)
	salsa.HSalsa20(&k, &hsalsaZeros, &k, &salsa.Sigma)
	return &k
}

func sealNonce(epk, pk []byte) *[24]byte {
	h, _ := blake2b.New(24, nil) // a 24-byte unkeyed BLAKE2b cannot fail
	h.Write(epk)
	h.Write(pk)
	var n [24]byte
	h.Sum(n[:0])
	return &n
}

// SealKey seals dataKey to the X25519 public key teePubKey (NaCl anonymous box).
func SealKey(dataKey, teePubKey []byte) ([]byte, error) {
	if len(teePubKey) != TEEPubKeySize {
		return nil, fmt.Errorf("seal key: TEE public key is %d bytes, want %d", len(teePubKey), TEEPubKeySize)
	}
	peer, err := ecdh.X25519().NewPublicKey(teePubKey)
	if err != nil {
		return nil, fmt.Errorf("seal key: %w: %v", ErrBadTEEKey, err)
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("seal key: ephemeral key: %w", err)
	}
	shared, err := eph.ECDH(peer)
	if err != nil {
		return nil, fmt.Errorf("seal key: %w: %v", ErrBadTEEKey, err)
	}
	epk := eph.PublicKey().Bytes()
	out := make([]byte, 0, SealedKeyOverhead+len(dataKey))
	out = append(out, epk...)
	return secretbox.Seal(out, dataKey, sealNonce(epk, teePubKey), boxKey(shared)), nil
}

// OpenKey opens a key sealed by SealKey with the guest's key pair (raw X25519 bytes).
func OpenKey(sealed []byte, pub, priv *[32]byte) ([]byte, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return nil, ErrOpenKey
	}
	return OpenKeyWith(sealed, pub[:], k)
}

// OpenKeyWith opens a key sealed by SealKey to pub with the guest's private key k (one X25519
// operation).
func OpenKeyWith(sealed, pub []byte, k *ecdh.PrivateKey) ([]byte, error) {
	if len(sealed) < SealedKeyOverhead || len(pub) != TEEPubKeySize {
		return nil, ErrOpenKey
	}
	epk, err := ecdh.X25519().NewPublicKey(sealed[:32])
	if err != nil {
		return nil, ErrOpenKey
	}
	shared, err := k.ECDH(epk)
	if err != nil {
		return nil, ErrOpenKey
	}
	out, ok := secretbox.Open(nil, sealed[32:], sealNonce(sealed[:32], pub), boxKey(shared))
	if !ok {
		return nil, ErrOpenKey
	}
	return out, nil
}
