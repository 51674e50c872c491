package server

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"time"
)

// Token format (version 2):
//
//	"sp2." base64url(claims JSON) "." base64url(HMAC-SHA256(tokenKey, "sealpod-kbs-token-v2\n" ‖ payload))
//
// Tokens are bearer credentials that only the broker itself (any replica loading the same
// state directory) ever checks, so they are MACed, not signed: a MAC costs about a
// microsecond where an ECDSA P-256 signature plus two verifications cost ~250 µs per flow.
// The 32-byte token key is derived from the state's signing key with HKDF-SHA256 (see
// DeriveTokenKey), so every replica with the same state directory derives the same key and
// nothing new is stored. Version-1 tokens (ECDSA/Ed25519-signed "sp1.") are no longer
// accepted; tokens live minutes, so an upgrade only makes in-flight guests attest again.
const (
	tokenPrefix  = "sp2."
	tokenDomain  = "sealpod-kbs-token-v2\n"
	tokenKeySize = 32
	maxTokenLen  = 4096
)

// Token errors; callers branch on them.
var (
	ErrTokenMalformed = errors.New("token malformed")
	ErrTokenSignature = errors.New("token signature invalid")
	ErrTokenExpired   = errors.New("token expired")
)

// Claims are what an attestation token asserts. It is MACed with a key derived from the
// broker's state signing key, so any replica that loads the same state directory verifies it.
type Claims struct {
	Version    int    `json:"v"`
	SessionID  string `json:"sid"`
	Workload   string `json:"wl"`
	TEE        string `json:"tee"` // "sim" is spelled out
	PubKeyHash string `json:"pkh"` // hex SHA-256 of the 32-byte X25519 TEE public key
	Generation uint64 `json:"gen"` // workload generation the evidence was appraised against
	Measure    string `json:"meas"`
	// Released: the attest answer carried the key and the certificate (the two-request
	// flow); the deprecated key and certificate requests refuse such a token.
	Released  bool  `json:"rel,omitempty"`
	IssuedAt  int64 `json:"iat"`
	ExpiresAt int64 `json:"exp"`
}

// claimsVersion is Claims.Version of the current token format.
const claimsVersion = 2

// PubKeyHash returns the hex SHA-256 of a TEE public key as carried in tokens.
func PubKeyHash(pub []byte) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:])
}

// DeriveTokenKey derives the 32-byte token MAC key from the state's signing key:
// HKDF-SHA256(ikm = the private key (ECDSA: the scalar, big-endian, curve-size; Ed25519: the
// seed), salt = "sealpod-kbs-token-mac-v1", info = "sealpod-kbs-token-v2"). A signer whose
// private key cannot be read (an HSM) is refused: give Config.TokenKey instead.
func DeriveTokenKey(k crypto.Signer) ([]byte, error) {
	var ikm []byte
	switch key := k.(type) {
	case *ecdsa.PrivateKey:
		b, err := key.Bytes()
		if err != nil {
			return nil, fmt.Errorf("token key: read ECDSA signing key: %w", err)
		}
		ikm = b
	case ed25519.PrivateKey:
		ikm = key.Seed()
	default:
		return nil, fmt.Errorf("token key: cannot derive from a signer of type %T (want *ecdsa.PrivateKey or ed25519.PrivateKey, or set Config.TokenKey)", k)
	}
	return hkdf.Key(sha256.New, ikm, []byte("sealpod-kbs-token-mac-v1"), "sealpod-kbs-token-v2", tokenKeySize)
}

type tokenSigner struct {
	key  []byte
	pool sync.Pool // of hash.Hash (HMAC-SHA256 under key)
}

func newTokenSigner(key []byte) (*tokenSigner, error) {
	if len(key) != tokenKeySize {
		return nil, fmt.Errorf("token key: %d bytes, want %d", len(key), tokenKeySize)
	}
	t := &tokenSigner{key: append([]byte(nil), key...)}
	t.pool.New = func() any { return hmac.New(sha256.New, t.key) }
	return t, nil
}

func (t *tokenSigner) mac(payload string) []byte {
	h := t.pool.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(tokenDomain))
	h.Write([]byte(payload))
	sum := h.Sum(make([]byte, 0, sha256.Size))
	t.pool.Put(h)
	return sum
}

func (t *tokenSigner) sign(c Claims) (string, error) {
	c.Version = claimsVersion
	body, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("marshal token claims: %w", err)
	}
	payload := base64.RawURLEncoding.EncodeToString(body)
	return tokenPrefix + payload + "." + base64.RawURLEncoding.EncodeToString(t.mac(payload)), nil
}

// verify checks the MAC (in constant time) and the expiry and returns the claims.
func (t *tokenSigner) verify(tok string, now time.Time) (*Claims, error) {
	rest, ok := strings.CutPrefix(tok, tokenPrefix)
	if !ok || len(tok) > maxTokenLen {
		return nil, ErrTokenMalformed
	}
	payload, sigB64, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, ErrTokenMalformed
	}
	// Strict: one MAC has exactly one spelling (no ignored trailing bits).
	sig, err := base64.RawURLEncoding.Strict().DecodeString(sigB64)
	if err != nil || len(sig) != sha256.Size {
		return nil, ErrTokenMalformed
	}
	if !hmac.Equal(t.mac(payload), sig) {
		return nil, ErrTokenSignature
	}
	body, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil, ErrTokenMalformed
	}
	var c Claims
	if err := json.Unmarshal(body, &c); err != nil || c.Version != claimsVersion {
		return nil, ErrTokenMalformed
	}
	if now.Unix() >= c.ExpiresAt {
		return nil, fmt.Errorf("%w at %s", ErrTokenExpired, time.Unix(c.ExpiresAt, 0).UTC().Format(time.RFC3339))
	}
	return &c, nil
}
