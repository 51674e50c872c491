package registry

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/store"
)

// Store buckets used by the registry.
const (
	BucketWorkloads = "workloads"     // id -> JSON record: Workload with DataKey and volume secret (encrypted at rest by the store)
	BucketHistory   = "history"       // %020d seq -> JSON HistoryEntry
	BucketMeta      = "registry-meta" // "head" -> JSON ChainHead
	metaHeadKey     = "head"
)

// Registry stores workloads and their history in a store.Store. It keeps no state of its
// own, so several registries (KBS replicas) can share one replicated store.
type Registry struct {
	st     store.Store
	signer crypto.Signer
	now    func() time.Time
	cache  decodeCache
	idx    *chainIndex  // the verified history every record read is compared with (bind.go)
	vols   volumeAnchor // committed volume generations seen (volume.go)
}

// decodeCache maps the SHA-256 of a stored workload's JSON to the decoded workload. Every Get
// still reads the store (so an update by another replica is seen at once); only the JSON
// decoding of a value that was decoded before is skipped (~17 µs of the broker's three reads
// per attestation flow). Identical bytes decode to identical workloads, so it is never stale.
type decodeCache struct {
	mu sync.Mutex
	m  map[[32]byte]decoded
}

type decoded struct {
	w      *Workload
	secret []byte   // the record's volume secret
	sum    [32]byte // recordSum(w)
}

// record is what BucketWorkloads holds for a workload: the workload with its data key, and
// its volume secret (issue 15), which no kbs/api type carries, so that no admin answer,
// history entry or manifest can hold it. The secret is sealed by the store with the rest of
// the record and bound to the history through the record (checkRecord), as the data key is.
type record struct {
	Workload
	VolumeSecret []byte `json:"volumeSecret,omitempty"` // api.VolumeSecretSize bytes; nil for a workload registered before volume support
}

// maxDecodeCache bounds the cache; it is emptied when full.
const maxDecodeCache = 1024

func (c *decodeCache) decode(id string, b []byte) (*Workload, []byte, [32]byte, error) {
	k := sha256.Sum256(b)
	c.mu.Lock()
	d, ok := c.m[k]
	c.mu.Unlock()
	if !ok {
		var rec record
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, nil, [32]byte{}, fmt.Errorf("decode workload %s: %w", id, err)
		}
		d.w, d.secret = &rec.Workload, rec.VolumeSecret
		var err error
		if d.sum, err = recordSum(d.w); err != nil {
			return nil, nil, [32]byte{}, fmt.Errorf("hash workload %s: %w", id, err)
		}
		c.mu.Lock()
		if c.m == nil || len(c.m) >= maxDecodeCache {
			c.m = make(map[[32]byte]decoded)
		}
		c.m[k] = d
		c.mu.Unlock()
	}
	// Callers own what Get returns.
	cp := d.w.Clone()
	return &cp, bytes.Clone(d.secret), d.sum, nil
}

// New returns a registry over st; signer signs history entries and manifests (ECDSA or Ed25519).
func New(st store.Store, signer crypto.Signer) *Registry {
	return &Registry{st: st, signer: signer, now: time.Now, idx: &chainIndex{pub: signer.Public()}}
}

// PublicKey returns the broker public key that verifies history entries and manifests.
func (r *Registry) PublicKey() crypto.PublicKey { return r.signer.Public() }

func historyKey(seq uint64) string { return fmt.Sprintf("%020d", seq) }

func readHead(tx store.Tx) (ChainHead, error) {
	b, err := tx.Get(BucketMeta, metaHeadKey)
	if errors.Is(err, store.ErrNotFound) {
		return ChainHead{Seq: 0, Hash: ZeroHash}, nil
	}
	if err != nil {
		return ChainHead{}, fmt.Errorf("read history head: %w", err)
	}
	var h ChainHead
	if err := json.Unmarshal(b, &h); err != nil {
		return ChainHead{}, fmt.Errorf("decode history head: %w", err)
	}
	return h, nil
}

func readWorkload(tx store.Tx, id string) (*record, [32]byte, error) {
	b, err := tx.Get(BucketWorkloads, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, [32]byte{}, fmt.Errorf("workload %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("read workload %s: %w", id, err)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, [32]byte{}, fmt.Errorf("decode workload %s: %w", id, err)
	}
	sum, err := recordSum(&rec.Workload)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("hash workload %s: %w", id, err)
	}
	return &rec, sum, nil
}

// maxStaleRetries bounds the re-runs of a transaction that read an older snapshot than the
// verified history (concurrent writers).
const maxStaleRetries = 8

// withIndex runs fn (inside run, a store View or Update) with the verified history index of
// the transaction's snapshot, re-running it when the snapshot was older than the index.
func (r *Registry) withIndex(run func(fn func(tx store.Tx) error) error, fn func(tx store.Tx, byID map[string]indexEntry) error) error {
	for attempt := 0; ; attempt++ {
		floor := r.idx.verifiedSeq()
		stale := false
		err := run(func(tx store.Tx) error {
			byID, st, err := r.idx.view(tx, floor)
			if err != nil {
				return err
			}
			stale = st
			return fn(tx, byID)
		})
		if err != nil && stale && attempt < maxStaleRetries {
			continue
		}
		return err
	}
}

// appendHistory signs and writes the next history entry and moves the head, inside tx.
func (r *Registry) appendHistory(tx store.Tx, e *HistoryEntry) error {
	head, err := readHead(tx)
	if err != nil {
		return err
	}
	e.Seq = head.Seq + 1
	e.Prev = head.Hash
	if e.Hash, err = e.ComputeHash(); err != nil {
		return err
	}
	h, _ := hex.DecodeString(e.Hash)
	if e.Signature, err = signDigest(r.signer, h); err != nil {
		return fmt.Errorf("sign history entry %d: %w", e.Seq, err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode history entry %d: %w", e.Seq, err)
	}
	if err := tx.Put(BucketHistory, historyKey(e.Seq), b); err != nil {
		return fmt.Errorf("write history entry %d: %w", e.Seq, err)
	}
	hb, _ := json.Marshal(ChainHead{Seq: e.Seq, Hash: e.Hash})
	if err := tx.Put(BucketMeta, metaHeadKey, hb); err != nil {
		return fmt.Errorf("write history head: %w", err)
	}
	return nil
}

// Put adds or replaces a workload and appends the history entry in the same transaction.
// Generation and UpdatedAt are set by the registry. An update with an empty DataKey keeps the
// stored key. The volume secret is the registry's: a first registration (also the first after
// a removal) gets 32 fresh random bytes, an update keeps the stored secret (a record without
// one, written before volume support, gets one). The returned entry is durable when Put
// returns nil.
func (r *Registry) Put(ctx context.Context, w Workload, actor string) (HistoryEntry, error) {
	if err := ValidateID(w.ID); err != nil {
		return HistoryEntry{}, err
	}
	w = w.Clone()
	var out HistoryEntry
	update := func(fn func(tx store.Tx) error) error { return r.st.Update(ctx, fn) }
	err := r.withIndex(update, func(tx store.Tx, byID map[string]indexEntry) error {
		nw := w.Clone()
		var secret []byte
		old, sum, err := readWorkload(tx, nw.ID)
		switch {
		case err == nil:
			// The stored keys are kept only from the record the history registered last.
			if err := checkRecord(nw.ID, &old.Workload, sum, byID); err != nil {
				return err
			}
			if len(nw.DataKey) == 0 {
				nw.DataKey = old.DataKey
			}
			secret = old.VolumeSecret
		case errors.Is(err, ErrNotFound):
		default:
			return err
		}
		if len(secret) != api.VolumeSecretSize {
			if secret, err = newVolumeSecret(); err != nil {
				return err
			}
		}
		// Generations never repeat for an id, not even after a removal: tokens are bound to
		// (workload, generation), so one serves a single registration.
		nw.Generation = byID[nw.ID].gen + 1
		nw.UpdatedAt = r.now().UTC().Round(0)
		if err := nw.Validate(); err != nil {
			return err
		}
		b, err := json.Marshal(record{Workload: nw, VolumeSecret: secret})
		clear(secret)
		if err != nil {
			return fmt.Errorf("encode workload %s: %w", nw.ID, err)
		}
		if err := tx.Put(BucketWorkloads, nw.ID, b); err != nil {
			return fmt.Errorf("write workload %s: %w", nw.ID, err)
		}
		pub := nw.Public()
		e := HistoryEntry{Time: nw.UpdatedAt, Actor: actor, Op: OpPut, WorkloadID: nw.ID, Workload: &pub}
		if err := r.appendHistory(tx, &e); err != nil {
			return err
		}
		out = e
		return nil
	})
	if err != nil {
		// Validation errors are returned as they are so callers can branch on them.
		var fe *FieldError
		if errors.As(err, &fe) {
			return HistoryEntry{}, fe
		}
		return HistoryEntry{}, fmt.Errorf("put workload %s: %w", w.ID, err)
	}
	return out, nil
}

// Get returns the workload including its DataKey (for the key-release path); ErrNotFound
// (wrapped) when absent.
func (r *Registry) Get(ctx context.Context, id string) (*Workload, error) {
	w, secret, err := r.GetForRelease(ctx, id)
	clear(secret)
	return w, err
}

// GetForRelease is Get plus the workload's volume secret (nil for a workload registered
// before volume support that was not updated since): what the attest answer releases.
func (r *Registry) GetForRelease(ctx context.Context, id string) (*Workload, []byte, error) {
	if err := ValidateID(id); err != nil {
		// No workload can have an invalid id: it is both invalid and not found.
		return nil, nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var w *Workload
	var secret []byte
	view := func(fn func(tx store.Tx) error) error { return r.st.View(ctx, fn) }
	err := r.withIndex(view, func(tx store.Tx, byID map[string]indexEntry) error {
		w, secret = nil, nil
		b, err := tx.Get(BucketWorkloads, id)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("workload %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("read workload %s: %w", id, err)
		}
		got, sec, sum, err := r.cache.decode(id, b)
		if err != nil {
			return err
		}
		if err := checkRecord(id, got, sum, byID); err != nil {
			return err
		}
		w, secret = got, sec
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return w, secret, nil
}

// List returns every workload, including data keys, sorted by ID. Use Workload.Public before
// exposing them.
func (r *Registry) List(ctx context.Context) ([]Workload, error) {
	var out []Workload
	view := func(fn func(tx store.Tx) error) error { return r.st.View(ctx, fn) }
	err := r.withIndex(view, func(tx store.Tx, byID map[string]indexEntry) error {
		var err error
		out, err = listChecked(tx, byID)
		return err
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// listChecked reads every workload record and compares each with the verified history.
func listChecked(tx store.Tx, byID map[string]indexEntry) ([]Workload, error) {
	kvs, err := tx.List(BucketWorkloads)
	if err != nil {
		return nil, fmt.Errorf("list workloads: %w", err)
	}
	out := make([]Workload, 0, len(kvs))
	for _, kv := range kvs {
		var w Workload
		if err := json.Unmarshal(kv.Value, &w); err != nil {
			return nil, fmt.Errorf("decode workload %s: %w", kv.Key, err)
		}
		sum, err := recordSum(&w)
		if err != nil {
			return nil, fmt.Errorf("hash workload %s: %w", kv.Key, err)
		}
		if err := checkRecord(kv.Key, &w, sum, byID); err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, nil
}

// Remove deletes a workload and appends the history entry in the same transaction.
func (r *Registry) Remove(ctx context.Context, id, actor string) (HistoryEntry, error) {
	if err := ValidateID(id); err != nil {
		return HistoryEntry{}, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var out HistoryEntry
	update := func(fn func(tx store.Tx) error) error { return r.st.Update(ctx, fn) }
	err := r.withIndex(update, func(tx store.Tx, byID map[string]indexEntry) error {
		old, sum, err := readWorkload(tx, id)
		if err != nil {
			return err
		}
		clear(old.VolumeSecret)
		if err := checkRecord(id, &old.Workload, sum, byID); err != nil {
			return err
		}
		// The volume secret goes with the record: the workload's encrypted volumes cannot be
		// opened any more (a later registration of the id gets a new secret), so their
		// generations go too.
		if err := tx.Delete(BucketWorkloads, id); err != nil {
			return fmt.Errorf("delete workload %s: %w", id, err)
		}
		if err := tx.Delete(BucketVolumes, id); err != nil {
			return fmt.Errorf("delete volume generations of workload %s: %w", id, err)
		}
		e := HistoryEntry{Time: r.now().UTC().Round(0), Actor: actor, Op: OpRemove, WorkloadID: id}
		if err := r.appendHistory(tx, &e); err != nil {
			return err
		}
		out = e
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return HistoryEntry{}, err
		}
		return HistoryEntry{}, fmt.Errorf("remove workload %s: %w", id, err)
	}
	return out, nil
}

// History returns every history entry in ascending Seq order.
func (r *Registry) History(ctx context.Context) ([]HistoryEntry, error) {
	var out []HistoryEntry
	err := r.st.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = readHistory(tx)
		return err
	})
	return out, err
}

func readHistory(tx store.Tx) ([]HistoryEntry, error) {
	kvs, err := tx.List(BucketHistory)
	if err != nil {
		return nil, fmt.Errorf("list history: %w", err)
	}
	out := make([]HistoryEntry, 0, len(kvs))
	for _, kv := range kvs {
		var e HistoryEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, fmt.Errorf("decode history entry %s: %w", kv.Key, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// Head returns the current chain head.
func (r *Registry) Head(ctx context.Context) (ChainHead, error) {
	var h ChainHead
	err := r.st.View(ctx, func(tx store.Tx) error {
		var err error
		h, err = readHead(tx)
		return err
	})
	return h, err
}

// Manifest returns the current workloads (without keys), the history and its head, signed,
// all read from one consistent snapshot.
func (r *Registry) Manifest(ctx context.Context) (*SignedManifest, error) {
	alg, err := api.SignatureAlgorithm(r.signer.Public())
	if err != nil {
		return nil, err
	}
	pubDER, err := MarshalPublicKey(r.signer.Public())
	if err != nil {
		return nil, fmt.Errorf("encode broker public key: %w", err)
	}
	m := Manifest{Version: ManifestVersion, IssuedAt: r.now().UTC().Round(0), Workloads: []Workload{}}
	view := func(fn func(tx store.Tx) error) error { return r.st.View(ctx, fn) }
	err = r.withIndex(view, func(tx store.Tx, byID map[string]indexEntry) error {
		ws, err := listChecked(tx, byID)
		if err != nil {
			return err
		}
		m.Workloads = m.Workloads[:0]
		for i := range ws {
			m.Workloads = append(m.Workloads, ws[i].Public())
		}
		if m.History, err = readHistory(tx); err != nil {
			return err
		}
		m.Head, err = readHead(tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("build manifest: %w", err)
	}
	sort.Slice(m.Workloads, func(i, j int) bool { return m.Workloads[i].ID < m.Workloads[j].ID })
	d, err := m.Digest()
	if err != nil {
		return nil, err
	}
	sig, err := signDigest(r.signer, d)
	if err != nil {
		return nil, fmt.Errorf("sign manifest: %w", err)
	}
	return &SignedManifest{Manifest: m, Algorithm: alg, PublicKey: pubDER, Signature: sig}, nil
}
