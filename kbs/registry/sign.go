package registry

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
)

// Signature algorithms named in SignedManifest.Algorithm.
const (
	AlgECDSASHA256 = "ECDSA-SHA256" // ASN.1 DER ECDSA signature over the 32-byte digest
	AlgEd25519     = "Ed25519"      // Ed25519 signature over the 32-byte digest as message
)

// Domain-separation prefixes: every signed digest is SHA-256(prefix || canonical JSON).
const (
	historyDomain  = "sealpod-kbs-history-v1\n"
	manifestDomain = "sealpod-kbs-manifest-v1\n"
)

// ErrVerify is matched (errors.Is) by every signature, hash-chain or manifest verification failure.
var ErrVerify = errors.New("verification failed")

func verifyErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrVerify, fmt.Sprintf(format, args...))
}

// canonical is the canonical encoding: encoding/json of the Go struct (fields in declared
// order, map keys sorted, times RFC 3339 with nanoseconds, []byte base64), compact.
func canonical(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func digest(domain string, v any) ([]byte, error) {
	b, err := canonical(v)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write([]byte(domain))
	h.Write(b)
	return h.Sum(nil), nil
}

// algorithmOf names the signature algorithm for a public key.
func algorithmOf(pub crypto.PublicKey) (string, error) {
	switch pub.(type) {
	case *ecdsa.PublicKey:
		return AlgECDSASHA256, nil
	case ed25519.PublicKey:
		return AlgEd25519, nil
	default:
		return "", fmt.Errorf("unsupported signing key type %T (want ECDSA or Ed25519)", pub)
	}
}

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

func verifyDigest(pub crypto.PublicKey, d, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, d, sig)
	case ed25519.PublicKey:
		return len(k) == ed25519.PublicKeySize && ed25519.Verify(k, d, sig)
	default:
		return false
	}
}

// MarshalPublicKey returns the PKIX DER encoding used in SignedManifest.PublicKey.
func MarshalPublicKey(pub crypto.PublicKey) ([]byte, error) {
	return x509.MarshalPKIXPublicKey(pub)
}
