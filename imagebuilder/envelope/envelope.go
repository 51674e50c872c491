// Package envelope implements the sealed envelope (docs/formats.md, "Sealed envelope").
//
// An envelope is a JSON document {"header":{...},"body":"<base64>"} in one canonical
// encoding. The header travels in clear; the body is the sealed spec encrypted with
// NaCl secretbox (XSalsa20-Poly1305) under a key derived with HKDF-SHA256 from the
// workload's 256-bit data key, with info = "sealpod envelope v1" ‖ SHA-256(header), so the
// header is bound to the ciphertext. Every Seal draws a fresh random 24-byte nonce.
//
// The envelope digest (SHA-256 of the whole envelope bytes) is the HOST_DATA/MRCONFIGID the
// key broker expects in the launch evidence.
package envelope

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"

	"golang.org/x/crypto/nacl/secretbox"

	"github.com/sealpod/sealpod/internal/lazyregexp"
	"github.com/sealpod/sealpod/internal/tee"
)

// Version is the only envelope version this code reads and writes.
const Version = 1

// CipherV1 names the construction of version 1.
const CipherV1 = "xsalsa20-poly1305+hkdf-sha256"

// KeySize is the size of a workload data key.
const KeySize = 32

// NonceSize is the secretbox nonce size.
const NonceSize = 24

// MaxSize bounds an envelope's encoded size; larger input is refused before parsing.
const MaxSize = 32 << 20

const kdfLabel = "sealpod envelope v1"

// Errors callers branch on.
var (
	// ErrUnsupportedVersion: the envelope is of a version this code does not know.
	ErrUnsupportedVersion = errors.New("unsupported envelope version")
	// ErrMalformed: the bytes are not a well-formed, canonical version-1 envelope.
	ErrMalformed = errors.New("malformed envelope")
	// ErrAuthentication: the body does not authenticate under this key and header
	// (wrong key, or the envelope was changed).
	ErrAuthentication = errors.New("envelope authentication failed")
)

// KBS names the key broker that holds the data key, and pins its TLS CA.
type KBS struct {
	URL string `json:"url"`
	// CASHA256 is the hex SHA-256 of the DER of the CA certificate the agent pins.
	CASHA256 string `json:"caSHA256"`
}

// Header is the clear part of an envelope.
type Header struct {
	Version  int      `json:"version"`
	Workload string   `json:"workload"`
	TEEs     []string `json:"tees"`
	KBS      KBS      `json:"kbs"`
	KeyID    string   `json:"keyID"`
	Cipher   string   `json:"cipher"`
	Nonce    []byte   `json:"nonce"`
}

type wire struct {
	Header Header `json:"header"`
	Body   []byte `json:"body"`
}

var (
	workloadRE = lazyregexp.New(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	hex64RE    = lazyregexp.New(`^[0-9a-f]{64}$`)
	keyIDRE    = lazyregexp.New(`^[0-9a-f]{16}$`)
)

// KeyID derives the public identifier of a data key (not secret: a truncated hash).
func KeyID(key []byte) string {
	h := sha256.New()
	h.Write([]byte("sealpod key id v1"))
	h.Write(key)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// NewKey returns a fresh random 256-bit data key.
func NewKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("new data key: %w", err)
	}
	return k, nil
}

// Validate checks every header field; errors name the field.
func (h *Header) Validate() error {
	if h.Version != Version {
		return fmt.Errorf("%w %d (this build reads version %d)", ErrUnsupportedVersion, h.Version, Version)
	}
	if len(h.Workload) > 253 || !workloadRE.MatchString(h.Workload) {
		return fmt.Errorf("%w: header.workload: %q is not a DNS-1123 name", ErrMalformed, h.Workload)
	}
	if len(h.TEEs) == 0 {
		return fmt.Errorf("%w: header.tees: empty", ErrMalformed)
	}
	for i, t := range h.TEEs {
		if err := tee.TEE(t).Validate(); err != nil {
			return fmt.Errorf("%w: header.tees[%d]: %w", ErrMalformed, i, err)
		}
	}
	u, err := url.Parse(h.KBS.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%w: header.kbs.url: %q is not an https URL", ErrMalformed, h.KBS.URL)
	}
	if !hex64RE.MatchString(h.KBS.CASHA256) {
		return fmt.Errorf("%w: header.kbs.caSHA256: want 64 lowercase hex digits", ErrMalformed)
	}
	if !keyIDRE.MatchString(h.KeyID) {
		return fmt.Errorf("%w: header.keyID: want 16 lowercase hex digits", ErrMalformed)
	}
	if h.Cipher != CipherV1 {
		return fmt.Errorf("%w: header.cipher: %q (want %q)", ErrMalformed, h.Cipher, CipherV1)
	}
	if len(h.Nonce) != NonceSize {
		return fmt.Errorf("%w: header.nonce: %d bytes (want %d)", ErrMalformed, len(h.Nonce), NonceSize)
	}
	return nil
}

func deriveKey(dataKey []byte, h *Header) (*[32]byte, error) {
	if len(dataKey) != KeySize {
		return nil, fmt.Errorf("data key: %d bytes (want %d)", len(dataKey), KeySize)
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(hb)
	k, err := hkdf.Key(sha256.New, dataKey, nil, kdfLabel+string(sum[:]), 32)
	if err != nil {
		return nil, err
	}
	var out [32]byte
	copy(out[:], k)
	return &out, nil
}

// Seal encrypts plaintext (a marshalled sealed spec) under dataKey. Version, cipher, key id
// and a fresh random nonce are set by Seal; the caller fills workload, TEEs and KBS.
func Seal(plaintext, dataKey []byte, h Header) ([]byte, error) {
	h.Version = Version
	h.Cipher = CipherV1
	h.KeyID = KeyID(dataKey)
	h.Nonce = make([]byte, NonceSize)
	if _, err := rand.Read(h.Nonce); err != nil {
		return nil, fmt.Errorf("seal envelope %s: nonce: %w", h.Workload, err)
	}
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("seal envelope %s: %w", h.Workload, err)
	}
	key, err := deriveKey(dataKey, &h)
	if err != nil {
		return nil, fmt.Errorf("seal envelope %s: %w", h.Workload, err)
	}
	var nonce [NonceSize]byte
	copy(nonce[:], h.Nonce)
	body := secretbox.Seal(nil, plaintext, &nonce, key)
	out, err := json.Marshal(wire{Header: h, Body: body})
	if err != nil {
		return nil, fmt.Errorf("seal envelope %s: %w", h.Workload, err)
	}
	if len(out) > MaxSize {
		return nil, fmt.Errorf("seal envelope %s: %d bytes exceeds the %d-byte limit", h.Workload, len(out), MaxSize)
	}
	return out, nil
}

// parse decodes and checks an envelope without decrypting it.
func parse(env []byte) (*wire, error) {
	if len(env) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d-byte limit", ErrMalformed, len(env), MaxSize)
	}
	// Read the version first so that a future format gets a clear message rather than a
	// field-level complaint.
	var probe struct {
		Header struct {
			Version *int `json:"version"`
		} `json:"header"`
	}
	if err := json.Unmarshal(env, &probe); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, describeJSONError(env, err))
	}
	if probe.Header.Version == nil {
		return nil, fmt.Errorf("%w: header.version: missing", ErrMalformed)
	}
	if *probe.Header.Version != Version {
		return nil, fmt.Errorf("%w %d (this build reads version %d)", ErrUnsupportedVersion, *probe.Header.Version, Version)
	}
	var w wire
	dec := json.NewDecoder(bytes.NewReader(env))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, describeJSONError(env, err))
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the envelope", ErrMalformed)
	}
	if err := w.Header.Validate(); err != nil {
		return nil, err
	}
	if len(w.Body) < secretbox.Overhead {
		return nil, fmt.Errorf("%w: body: %d bytes, shorter than the %d-byte authenticator", ErrMalformed, len(w.Body), secretbox.Overhead)
	}
	// Exactly one encoding is valid: any other spelling of the same values (case of keys,
	// white space, base64 padding bits, escapes) is refused, so the bytes that are hashed
	// into HOST_DATA are the bytes that are opened.
	canon, err := json.Marshal(&w)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !bytes.Equal(canon, env) {
		return nil, fmt.Errorf("%w: not in canonical encoding", ErrMalformed)
	}
	return &w, nil
}

func describeJSONError(env []byte, err error) string {
	var syn *json.SyntaxError
	if errors.Is(err, io.ErrUnexpectedEOF) || (errors.As(err, &syn) && syn.Offset >= int64(len(env))) {
		return fmt.Sprintf("truncated: the %d bytes end inside the JSON document", len(env))
	}
	if syn != nil {
		return fmt.Sprintf("invalid JSON at byte %d of %d: %v", syn.Offset, len(env), err)
	}
	return err.Error()
}

// ParseHeader returns the clear header of an envelope after checking its structure. It
// does not authenticate anything: only Open does.
func ParseHeader(env []byte) (*Header, error) {
	w, err := parse(env)
	if err != nil {
		return nil, err
	}
	return &w.Header, nil
}

// Open authenticates and decrypts an envelope, returning its header and plaintext.
func Open(env, dataKey []byte) (*Header, []byte, error) {
	w, err := parse(env)
	if err != nil {
		return nil, nil, err
	}
	if KeyID(dataKey) != w.Header.KeyID {
		return nil, nil, fmt.Errorf("open envelope %s: %w: key id %s does not match the header's %s", w.Header.Workload, ErrAuthentication, KeyID(dataKey), w.Header.KeyID)
	}
	key, err := deriveKey(dataKey, &w.Header)
	if err != nil {
		return nil, nil, fmt.Errorf("open envelope %s: %w", w.Header.Workload, err)
	}
	var nonce [NonceSize]byte
	copy(nonce[:], w.Header.Nonce)
	plain, ok := secretbox.Open(nil, w.Body, &nonce, key)
	if !ok {
		return nil, nil, fmt.Errorf("open envelope %s: %w", w.Header.Workload, ErrAuthentication)
	}
	return &w.Header, plain, nil
}
