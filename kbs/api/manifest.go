package api

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The signed manifest served at GET /kbs/v1/manifest and read by `sealctl verify`
// (docs/kbs.md, "Manifest"): the broker's current workloads and the hash-chained, signed
// history of every change. The broker produces it (kbs/registry); this file defines its
// format and checks it offline.

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

// History operations.
const (
	OpPut    = "put"
	OpRemove = "remove"
)

// ZeroHash is the Prev of the first history entry.
var ZeroHash = strings.Repeat("0", 64)

// ErrVerify is matched (errors.Is) by every signature, hash-chain or manifest verification failure.
var ErrVerify = errors.New("verification failed")

func verifyErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrVerify, fmt.Sprintf(format, args...))
}

// HistoryEntry is one registration, update or removal. Entries form a hash chain: Hash =
// hex SHA-256("sealpod-kbs-history-v1\n" || canonical JSON of the entry without Hash and
// Signature), Prev = Hash of the previous entry (ZeroHash for Seq 1), Signature = the broker's
// signature over the 32 hash bytes.
type HistoryEntry struct {
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`
	Actor      string    `json:"actor"`
	Op         string    `json:"op"` // put | remove
	WorkloadID string    `json:"workloadId"`
	Workload   *Workload `json:"workload,omitempty"` // public view (no DataKey) after a put
	Prev       string    `json:"prev"`
	Hash       string    `json:"hash"`
	Signature  []byte    `json:"signature"`
}

// historyBody is the hashed part of a HistoryEntry (field order is part of the format).
type historyBody struct {
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`
	Actor      string    `json:"actor"`
	Op         string    `json:"op"`
	WorkloadID string    `json:"workloadId"`
	Workload   *Workload `json:"workload,omitempty"`
	Prev       string    `json:"prev"`
}

// ComputeHash returns the entry's chain hash (hex), ignoring its Hash and Signature fields.
func (e *HistoryEntry) ComputeHash() (string, error) {
	d, err := digest(historyDomain, historyBody{e.Seq, e.Time, e.Actor, e.Op, e.WorkloadID, e.Workload, e.Prev})
	if err != nil {
		return "", fmt.Errorf("hash history entry %d: %w", e.Seq, err)
	}
	return hex.EncodeToString(d), nil
}

// ChainHead identifies the latest history entry (Seq 0 and ZeroHash for an empty history).
type ChainHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// Manifest is the public state of the broker: every current workload (without data keys),
// the full history and its head.
type Manifest struct {
	Version   int            `json:"version"` // 1
	IssuedAt  time.Time      `json:"issuedAt"`
	Workloads []Workload     `json:"workloads"` // sorted by ID, DataKey never set
	History   []HistoryEntry `json:"history"`   // ascending Seq from 1
	Head      ChainHead      `json:"head"`
}

// ManifestVersion is the only Manifest.Version this package produces and accepts.
const ManifestVersion = 1

// Digest returns what the manifest signature covers:
// SHA-256("sealpod-kbs-manifest-v1\n" || canonical JSON of m).
func (m *Manifest) Digest() ([]byte, error) {
	d, err := digest(manifestDomain, m)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return d, nil
}

// SignedManifest is what GET /kbs/v1/manifest returns. Signature is over
// SHA-256("sealpod-kbs-manifest-v1\n" || canonical JSON of Manifest); PublicKey is the
// broker's PKIX DER public key (the same key signs every history entry).
type SignedManifest struct {
	Manifest  Manifest `json:"manifest"`
	Algorithm string   `json:"algorithm"` // ECDSA-SHA256 | Ed25519
	PublicKey []byte   `json:"publicKey"`
	Signature []byte   `json:"signature"`
}

// ParsePublicKey returns the embedded broker public key. Trust it only after comparing it
// with a key (or fingerprint) obtained out of band.
func (m *SignedManifest) ParsePublicKey() (crypto.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(m.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("manifest publicKey: %w", err)
	}
	return pub, nil
}

// CanonicalJSON is the canonical encoding that hashes and signatures cover: encoding/json of
// the Go struct (fields in declared order, map keys sorted, times RFC 3339 with nanoseconds,
// []byte base64), HTML characters not escaped, compact, no trailing newline.
func CanonicalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func digest(domain string, v any) ([]byte, error) {
	b, err := CanonicalJSON(v)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write([]byte(domain))
	h.Write(b)
	return h.Sum(nil), nil
}

// SignatureAlgorithm names the signature algorithm for a broker public key.
func SignatureAlgorithm(pub crypto.PublicKey) (string, error) {
	switch pub.(type) {
	case *ecdsa.PublicKey:
		return AlgECDSASHA256, nil
	case ed25519.PublicKey:
		return AlgEd25519, nil
	default:
		return "", fmt.Errorf("unsupported signing key type %T (want ECDSA or Ed25519)", pub)
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

// VerifyHistory checks a complete history (Seq 1..n): every hash, every link and every
// signature under pub. It returns the head.
func VerifyHistory(entries []HistoryEntry, pub crypto.PublicKey) (ChainHead, error) {
	if pub == nil {
		return ChainHead{}, verifyErr("no public key given")
	}
	head := ChainHead{Seq: 0, Hash: ZeroHash}
	for i := range entries {
		e := &entries[i]
		if e.Seq != head.Seq+1 {
			return ChainHead{}, verifyErr("history entry %d: seq %d, want %d", i, e.Seq, head.Seq+1)
		}
		if e.Prev != head.Hash {
			return ChainHead{}, verifyErr("history entry %d: prev %q does not match the hash of entry %d", e.Seq, e.Prev, head.Seq)
		}
		switch e.Op {
		case OpPut:
			if e.Workload == nil || e.Workload.ID != e.WorkloadID {
				return ChainHead{}, verifyErr("history entry %d: put without a matching workload", e.Seq)
			}
			if len(e.Workload.DataKey) != 0 {
				return ChainHead{}, verifyErr("history entry %d: contains a data key", e.Seq)
			}
		case OpRemove:
			if e.Workload != nil {
				return ChainHead{}, verifyErr("history entry %d: remove carries a workload", e.Seq)
			}
		default:
			return ChainHead{}, verifyErr("history entry %d: unknown op %q", e.Seq, e.Op)
		}
		h, err := e.ComputeHash()
		if err != nil {
			return ChainHead{}, err
		}
		if h != e.Hash {
			return ChainHead{}, verifyErr("history entry %d: hash mismatch (entry altered)", e.Seq)
		}
		hb, _ := hex.DecodeString(h)
		if !verifyDigest(pub, hb, e.Signature) {
			return ChainHead{}, verifyErr("history entry %d: bad signature", e.Seq)
		}
		head = ChainHead{Seq: e.Seq, Hash: e.Hash}
	}
	return head, nil
}

// VerifyHistoryLink checks one history entry as the successor of prev under pub: its seq and
// link, the shape of its op, its hash and its signature (the per-entry part of VerifyHistory,
// for a reader that advances over a history entry by entry).
func VerifyHistoryLink(e *HistoryEntry, prev ChainHead, pub crypto.PublicKey) error {
	if e.Seq != prev.Seq+1 || e.Prev != prev.Hash {
		return verifyErr("history entry %d does not follow #%d %s", e.Seq, prev.Seq, prev.Hash)
	}
	switch {
	case e.Op == OpPut && e.Workload != nil && e.Workload.ID == e.WorkloadID:
	case e.Op == OpRemove && e.Workload == nil:
	default:
		return verifyErr("history entry %d: malformed %q entry", e.Seq, e.Op)
	}
	h, err := e.ComputeHash()
	if err != nil {
		return err
	}
	hb, _ := hex.DecodeString(h)
	if h != e.Hash || !verifyDigest(pub, hb, e.Signature) {
		return verifyErr("history entry %d: hash or signature does not verify", e.Seq)
	}
	return nil
}

// VerifyManifest checks a signed manifest offline against the broker public key pub (obtained
// out of band): the embedded key equals pub, the signature covers the canonical manifest, the
// history chain verifies and ends at Head, and replaying the history gives exactly Workloads.
func VerifyManifest(m *SignedManifest, pub crypto.PublicKey) error {
	if m == nil {
		return verifyErr("no manifest")
	}
	if pub == nil {
		return verifyErr("no public key given")
	}
	if m.Manifest.Version != ManifestVersion {
		return verifyErr("manifest version %d, want %d", m.Manifest.Version, ManifestVersion)
	}
	want, err := MarshalPublicKey(pub)
	if err != nil {
		return fmt.Errorf("encode expected public key: %w", err)
	}
	if !bytes.Equal(want, m.PublicKey) {
		return verifyErr("manifest publicKey is not the expected broker key")
	}
	alg, err := SignatureAlgorithm(pub)
	if err != nil {
		return err
	}
	if m.Algorithm != alg {
		return verifyErr("manifest algorithm %q, want %q", m.Algorithm, alg)
	}
	d, err := m.Manifest.Digest()
	if err != nil {
		return err
	}
	if !verifyDigest(pub, d, m.Signature) {
		return verifyErr("manifest signature does not verify")
	}
	head, err := VerifyHistory(m.Manifest.History, pub)
	if err != nil {
		return err
	}
	if head != m.Manifest.Head {
		return verifyErr("manifest head %d/%s does not match the history (%d/%s)", m.Manifest.Head.Seq, m.Manifest.Head.Hash, head.Seq, head.Hash)
	}
	state := map[string]*Workload{}
	for i := range m.Manifest.History {
		e := &m.Manifest.History[i]
		if e.Op == OpPut {
			state[e.WorkloadID] = e.Workload
		} else {
			delete(state, e.WorkloadID)
		}
	}
	if len(state) != len(m.Manifest.Workloads) {
		return verifyErr("manifest lists %d workloads, history gives %d", len(m.Manifest.Workloads), len(state))
	}
	for i := range m.Manifest.Workloads {
		w := &m.Manifest.Workloads[i]
		if i > 0 && m.Manifest.Workloads[i-1].ID >= w.ID {
			return verifyErr("manifest workloads not sorted by id at %q", w.ID)
		}
		hw, ok := state[w.ID]
		if !ok {
			return verifyErr("workload %s is not in the history", w.ID)
		}
		a, err1 := CanonicalJSON(w)
		b, err2 := CanonicalJSON(hw)
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			return verifyErr("workload %s differs from its last history entry", w.ID)
		}
	}
	return nil
}
