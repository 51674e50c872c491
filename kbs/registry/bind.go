package registry

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/store"
)

// Records bound to the signed history.
//
// The store seals every value to its bucket and key, but someone who can write the store
// (the bolt file, etcd) without the store key can still delete values or put back older
// sealed ones. The registry therefore trusts a workload record only when it is exactly the
// workload of the latest history entry for its id: it keeps an index built from the history
// chain (every entry's hash, link and signature verified), advanced entry by entry as the
// stored head moves, and compares each record read with it (SHA-256 of the record's public
// JSON, which carries its generation and update time). A put-back record of an older
// generation, of a removed workload or of a registration before a removal does not match
// and is refused with ErrTampered.
//
// The index also remembers the last head it verified. A stored head that is older than it,
// or that does not extend it, is a rollback of the whole store and is refused with
// ErrRollback. That anchor lives in the broker process: a consistent rollback of the whole
// store (records, history and head together) made while no broker runs is not detectable
// from inside the store; `sealctl verify` keeps the head it last saw as the anchor outside it
// (docs/kbs.md).

var (
	// ErrTampered means a stored workload record does not match the signed history.
	ErrTampered = errors.New("store record does not match the signed history (put back or altered without the store key?)")
	// ErrRollback means the stored history head is older than, or forks from, a head this
	// broker verified before.
	ErrRollback = errors.New("store history rolled back")
)

// indexEntry is what the verified history says about one workload id.
type indexEntry struct {
	seq     uint64   // the latest entry for the id
	gen     uint64   // generation of the latest put (kept after a removal)
	removed bool     // the latest entry is a removal
	sum     [32]byte // recordSum of the latest put's workload
}

// chainIndex is the registry's verified view of the history.
type chainIndex struct {
	mu      sync.RWMutex
	pub     crypto.PublicKey
	loaded  bool
	head    ChainHead
	headRaw []byte                // stored encoding of head (fast path: same bytes, same head)
	byID    map[string]indexEntry // replaced, never changed, when the index advances
	hashes  [][32]byte            // hashes[i] = hash of entry i+1
}

// recordSum is the SHA-256 of a workload's public canonical JSON: what its history entry holds.
func recordSum(w *Workload) ([32]byte, error) {
	p := w.Public()
	b, err := api.CanonicalJSON(&p)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// errStale means a transaction read a head older than the index (a snapshot taken before a
// concurrent write): the caller runs it again.
var errStale = errors.New("history snapshot older than the verified head")

// verifiedSeq is the head the index verified; a transaction started later must see at least it.
func (x *chainIndex) verifiedSeq() uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.head.Seq
}

// view returns the verified index for the transaction's stored head, advancing it over new
// history entries first. floor is verifiedSeq from before the transaction started: a stored
// head below it is a rollback. A head between floor and the index's is an older snapshot:
// view then returns the newer index and stale = true (a record that does not match it may
// only be old, so the caller retries).
func (x *chainIndex) view(tx store.Tx, floor uint64) (map[string]indexEntry, bool, error) {
	raw, err := tx.Get(BucketMeta, metaHeadKey)
	if errors.Is(err, store.ErrNotFound) {
		raw, err = nil, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read history head: %w", err)
	}
	x.mu.RLock()
	if x.loaded && bytes.Equal(raw, x.headRaw) {
		m := x.byID
		x.mu.RUnlock()
		return m, false, nil
	}
	x.mu.RUnlock()
	return x.sync(tx, floor)
}

// sync advances the index to the transaction's stored head, verifying every new entry.
func (x *chainIndex) sync(tx store.Tx, floor uint64) (map[string]indexEntry, bool, error) {
	head, raw, err := readHeadRaw(tx)
	if err != nil {
		return nil, false, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.loaded && bytes.Equal(raw, x.headRaw) {
		return x.byID, false, nil
	}
	from := ChainHead{Seq: 0, Hash: ZeroHash}
	if x.loaded {
		from = x.head
	}
	if head.Seq < from.Seq || (head.Seq == from.Seq && head.Hash != from.Hash) {
		if head.Seq >= floor && (head.Seq == 0 || hex.EncodeToString(x.hashes[head.Seq-1][:]) == head.Hash) && head.Seq < from.Seq {
			return x.byID, true, nil
		}
		return nil, false, fmt.Errorf("%w: the stored head is #%d %s, this broker verified #%d %s before", ErrRollback, head.Seq, head.Hash, from.Seq, from.Hash)
	}
	var entries []HistoryEntry
	if from.Seq == 0 {
		if entries, err = readHistory(tx); err != nil {
			return nil, false, err
		}
		if uint64(len(entries)) > head.Seq {
			entries = entries[:head.Seq]
		}
	} else {
		for seq := from.Seq + 1; seq <= head.Seq; seq++ {
			b, err := tx.Get(BucketHistory, historyKey(seq))
			if err != nil {
				return nil, false, fmt.Errorf("%w: history entry %d: %w", ErrTampered, seq, err)
			}
			var e HistoryEntry
			if err := json.Unmarshal(b, &e); err != nil {
				return nil, false, fmt.Errorf("decode history entry %d: %w", seq, err)
			}
			entries = append(entries, e)
		}
	}
	byID := make(map[string]indexEntry, len(x.byID)+len(entries))
	for k, v := range x.byID {
		byID[k] = v
	}
	hashes := x.hashes
	at := from
	for i := range entries {
		e := &entries[i]
		if err := api.VerifyHistoryLink(e, at, x.pub); err != nil {
			return nil, false, fmt.Errorf("%w: %w", ErrTampered, err)
		}
		ie := byID[e.WorkloadID]
		ie.seq = e.Seq
		if e.Op == OpPut {
			if ie.sum, err = recordSum(e.Workload); err != nil {
				return nil, false, fmt.Errorf("hash history entry %d: %w", e.Seq, err)
			}
			ie.gen, ie.removed = max(ie.gen, e.Workload.Generation), false
		} else {
			ie.removed = true
		}
		byID[e.WorkloadID] = ie
		// VerifyHistoryLink matched e.Hash against a computed hash; this guards that invariant.
		hb, herr := hex.DecodeString(e.Hash)
		if herr != nil || len(hb) != 32 {
			return nil, false, fmt.Errorf("%w: history entry %d: hash is not 32 hex-encoded bytes", ErrTampered, e.Seq)
		}
		hashes = append(hashes, [32]byte(hb))
		at = ChainHead{Seq: e.Seq, Hash: e.Hash}
	}
	if at != head {
		return nil, false, fmt.Errorf("%w: the history ends at #%d %s, the stored head is #%d %s", ErrTampered, at.Seq, at.Hash, head.Seq, head.Hash)
	}
	x.byID, x.hashes, x.head, x.headRaw, x.loaded = byID, hashes, head, append([]byte(nil), raw...), true
	return byID, false, nil
}

// checkRecord compares a workload record read from the store with the verified history.
func checkRecord(id string, w *Workload, sum [32]byte, byID map[string]indexEntry) error {
	ie, known := byID[id]
	switch {
	case !known:
		return fmt.Errorf("workload %s: %w: the history never registered it", id, ErrTampered)
	case ie.removed:
		return fmt.Errorf("workload %s: %w: the history removed it at #%d", id, ErrTampered, ie.seq)
	case sum != ie.sum:
		return fmt.Errorf("workload %s: %w: the record (generation %d) is not the one history entry #%d registered (generation %d)", id, ErrTampered, w.Generation, ie.seq, ie.gen)
	}
	return nil
}

// readHeadRaw returns the stored head and its encoding (nil for an empty history).
func readHeadRaw(tx store.Tx) (ChainHead, []byte, error) {
	b, err := tx.Get(BucketMeta, metaHeadKey)
	if errors.Is(err, store.ErrNotFound) {
		return ChainHead{Seq: 0, Hash: ZeroHash}, nil, nil
	}
	if err != nil {
		return ChainHead{}, nil, fmt.Errorf("read history head: %w", err)
	}
	var h ChainHead
	if err := json.Unmarshal(b, &h); err != nil {
		return ChainHead{}, nil, fmt.Errorf("decode history head: %w", err)
	}
	return h, b, nil
}
