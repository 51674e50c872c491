package registry

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
)

// signDigest signs a history hash or manifest digest (kbs/api defines what is signed and
// verifies it; only the broker signs).
func signDigest(signer crypto.Signer, d []byte) ([]byte, error) {
	switch signer.Public().(type) {
	case *ecdsa.PublicKey:
		return signer.Sign(rand.Reader, d, crypto.SHA256)
	case ed25519.PublicKey:
		return signer.Sign(rand.Reader, d, crypto.Hash(0))
	default:
		return nil, fmt.Errorf("unsupported signing key type %T (want ECDSA or Ed25519)", signer.Public())
	}
}
