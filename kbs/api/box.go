package api

import (
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/nacl/box"
)

// ErrOpenKey is returned when a sealed key cannot be opened with the given key pair.
var ErrOpenKey = errors.New("sealed key does not open with this TEE key pair")

// SealKey seals dataKey to the X25519 public key teePubKey with nacl box.SealAnonymous.
func SealKey(dataKey, teePubKey []byte) ([]byte, error) {
	if len(teePubKey) != TEEPubKeySize {
		return nil, fmt.Errorf("seal key: TEE public key is %d bytes, want %d", len(teePubKey), TEEPubKeySize)
	}
	var pub [32]byte
	copy(pub[:], teePubKey)
	return box.SealAnonymous(nil, dataKey, &pub, rand.Reader)
}

// OpenKey opens a key sealed by SealKey with the guest's key pair.
func OpenKey(sealed []byte, pub, priv *[32]byte) ([]byte, error) {
	out, ok := box.OpenAnonymous(nil, sealed, pub, priv)
	if !ok {
		return nil, ErrOpenKey
	}
	return out, nil
}
