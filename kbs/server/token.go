package server

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// tokenPrefix versions the token format: "sp1." base64url(claims JSON) "." base64url(signature).
const tokenPrefix = "sp1."

// Token errors; callers branch on them.
var (
	ErrTokenMalformed = errors.New("token malformed")
	ErrTokenSignature = errors.New("token signature invalid")
	ErrTokenExpired   = errors.New("token expired")
)

// Claims are what an attestation token asserts. It is signed with the broker's state key, so
// any replica that loads the same state directory verifies it.
type Claims struct {
	Version    int    `json:"v"`
	SessionID  string `json:"sid"`
	Workload   string `json:"wl"`
	TEE        string `json:"tee"` // "sim" is spelled out
	PubKeyHash string `json:"pkh"` // hex SHA-256 of the 32-byte X25519 TEE public key
	Generation uint64 `json:"gen"` // workload generation the evidence was appraised against
	Measure    string `json:"meas"`
	IssuedAt   int64  `json:"iat"`
	ExpiresAt  int64  `json:"exp"`
}

// PubKeyHash returns the hex SHA-256 of a TEE public key as carried in tokens.
func PubKeyHash(pub []byte) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:])
}

type tokenSigner struct {
	key crypto.Signer
	pub crypto.PublicKey
}

func newTokenSigner(k crypto.Signer) (*tokenSigner, error) {
	switch k.Public().(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("token signer: unsupported key type %T (want ECDSA or Ed25519)", k.Public())
	}
	return &tokenSigner{key: k, pub: k.Public()}, nil
}

func tokenDigest(payload string) []byte {
	h := sha256.Sum256([]byte("sealpod-kbs-token-v1\n" + payload))
	return h[:]
}

func (t *tokenSigner) sign(c Claims) (string, error) {
	c.Version = 1
	body, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("marshal token claims: %w", err)
	}
	payload := base64.RawURLEncoding.EncodeToString(body)
	var sig []byte
	switch t.pub.(type) {
	case ed25519.PublicKey:
		sig, err = t.key.Sign(rand.Reader, tokenDigest(payload), crypto.Hash(0))
	default:
		sig, err = t.key.Sign(rand.Reader, tokenDigest(payload), crypto.SHA256)
	}
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tokenPrefix + payload + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// verify checks the signature and expiry and returns the claims.
func (t *tokenSigner) verify(tok string, now time.Time) (*Claims, error) {
	rest, ok := strings.CutPrefix(tok, tokenPrefix)
	if !ok || len(tok) > 4096 {
		return nil, ErrTokenMalformed
	}
	payload, sigB64, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, ErrTokenMalformed
	}
	sig, err := base64.RawURLEncoding.DecodeString(sigB64)
	if err != nil {
		return nil, ErrTokenMalformed
	}
	d := tokenDigest(payload)
	switch pub := t.pub.(type) {
	case ed25519.PublicKey:
		if !ed25519.Verify(pub, d, sig) {
			return nil, ErrTokenSignature
		}
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, d, sig) {
			return nil, ErrTokenSignature
		}
	default:
		return nil, ErrTokenSignature
	}
	body, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil, ErrTokenMalformed
	}
	var c Claims
	if err := json.Unmarshal(body, &c); err != nil || c.Version != 1 {
		return nil, ErrTokenMalformed
	}
	if now.Unix() >= c.ExpiresAt {
		return nil, fmt.Errorf("%w at %s", ErrTokenExpired, time.Unix(c.ExpiresAt, 0).UTC().Format(time.RFC3339))
	}
	return &c, nil
}
