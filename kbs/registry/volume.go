package registry

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/store"
)

// Volume secrets and volume generations (issue 15, docs/kbs.md "Encrypted volumes").
//
// The volume secret lives in the workload's record (record.VolumeSecret). The generations
// of a workload's volumes live in one record of BucketVolumes under the workload id:
// {"epoch", "volumes": {"<namespace>/<claim>": {"committed", "pending"}}}. The epoch is a
// digest of the volume secret, so generations are tied to the registration whose secret
// the guest keys its volumes with: a removal deletes both (Remove), and a generations record
// of another registration put back into the store is refused (ErrTampered).

// BucketVolumes holds the volume generations: workload id -> JSON volumeRecord.
const BucketVolumes = "volume-generations"

// Volume errors; the server branches on them.
var (
	// ErrVolumeConflict: a commit of a generation that is not the pending one.
	ErrVolumeConflict = errors.New("volume generation conflict")
	// ErrVolumeLimit: a begin of a new volume when the workload has api.MaxVolumesPerWorkload.
	ErrVolumeLimit = errors.New("volume limit reached")
	// ErrNoVolumeSecret: the workload was registered before volume support and not updated since.
	ErrNoVolumeSecret = errors.New("workload has no volume secret")
	// ErrWorkloadChanged: the workload's generation is not the one the caller was attested against.
	ErrWorkloadChanged = errors.New("workload changed since attestation")
)

type volumeRecord struct {
	Epoch   string               `json:"epoch"`
	Volumes map[string]volumeGen `json:"volumes"`
}

type volumeGen struct {
	Committed uint64 `json:"committed"`
	Pending   uint64 `json:"pending,omitempty"` // 0: nothing pending; else Committed+1
}

// newVolumeSecret returns a fresh random volume secret.
func newVolumeSecret() ([]byte, error) {
	b := make([]byte, api.VolumeSecretSize)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("generate volume secret: %w", err)
	}
	return b, nil
}

// volumeEpoch names the registration a volume secret belongs to without revealing it.
func volumeEpoch(secret []byte) string {
	h := sha256.New()
	h.Write([]byte("sealpod-kbs-volume-epoch-v1\n"))
	h.Write(secret)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// volumeAnchor remembers, per (workload, volume), the highest committed generation this
// process has seen for the current epoch: a generations record put back into the store (an
// older sealed copy, or a deleted one) while the broker runs is refused with ErrRollback.
type volumeAnchor struct {
	mu sync.Mutex
	m  map[string]anchorEntry // id + "\x00" + volume
}

type anchorEntry struct {
	epoch     string
	committed uint64
}

// floor returns what the anchor holds for (id, volume). It is taken before a transaction
// starts: every generation it records was committed before, so any snapshot the transaction
// reads must hold at least it (a later one may be higher: other replicas commit too).
func (a *volumeAnchor) floor(id, volume string) anchorEntry {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.m[id+"\x00"+volume]
}

func (e anchorEntry) check(id, volume, epoch string, committed uint64) error {
	if e.epoch == epoch && committed < e.committed {
		return fmt.Errorf("workload %s volume %s: %w: the store says committed generation %d, this broker saw %d committed",
			id, volume, ErrRollback, committed, e.committed)
	}
	return nil
}

func (a *volumeAnchor) advance(id, volume, epoch string, committed uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[string]anchorEntry{}
	}
	k := id + "\x00" + volume
	if e, ok := a.m[k]; !ok || e.epoch != epoch || e.committed < committed {
		a.m[k] = anchorEntry{epoch: epoch, committed: committed}
	}
}

// volumeTx runs fn on the generations of volume for workload id in one store transaction,
// after checking that the workload record is the one the history registered, that its
// generation is gen (the token's) and that it has a volume secret. fn changes g; the record
// is written when fn reports a change.
func (r *Registry) volumeTx(ctx context.Context, id string, gen uint64, volume string, fn func(g *volumeGen, known bool, count int) (bool, error)) (volumeGen, error) {
	if err := ValidateID(id); err != nil {
		return volumeGen{}, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if err := api.ValidateVolumeIdentity(volume); err != nil {
		return volumeGen{}, err
	}
	var out volumeGen
	var epoch string
	floor := r.vols.floor(id, volume)
	update := func(f func(tx store.Tx) error) error { return r.st.Update(ctx, f) }
	err := r.withIndex(update, func(tx store.Tx, byID map[string]indexEntry) error {
		rec, sum, err := readWorkload(tx, id)
		if err != nil {
			return err
		}
		if err := checkRecord(id, &rec.Workload, sum, byID); err != nil {
			return err
		}
		if rec.Generation != gen {
			return fmt.Errorf("workload %s: %w (generation %d, attested against %d)", id, ErrWorkloadChanged, rec.Generation, gen)
		}
		if len(rec.VolumeSecret) != api.VolumeSecretSize {
			return fmt.Errorf("workload %s: %w (registered before volume support: update its registration to generate one)", id, ErrNoVolumeSecret)
		}
		epoch = volumeEpoch(rec.VolumeSecret)
		clear(rec.VolumeSecret)
		vr := volumeRecord{Epoch: epoch, Volumes: map[string]volumeGen{}}
		b, err := tx.Get(BucketVolumes, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return fmt.Errorf("read volume generations of workload %s: %w", id, err)
		default:
			if err := json.Unmarshal(b, &vr); err != nil {
				return fmt.Errorf("decode volume generations of workload %s: %w", id, err)
			}
			if vr.Epoch != epoch {
				return fmt.Errorf("workload %s: %w: its volume generations belong to another registration (epoch %s, want %s)", id, ErrTampered, vr.Epoch, epoch)
			}
			if vr.Volumes == nil {
				vr.Volumes = map[string]volumeGen{}
			}
		}
		g, known := vr.Volumes[volume]
		if err := floor.check(id, volume, epoch, g.Committed); err != nil {
			return err
		}
		changed, err := fn(&g, known, len(vr.Volumes))
		if err != nil {
			return err
		}
		out = g
		if !changed {
			return nil
		}
		vr.Volumes[volume] = g
		if b, err = json.Marshal(vr); err != nil {
			return fmt.Errorf("encode volume generations of workload %s: %w", id, err)
		}
		if err := tx.Put(BucketVolumes, id, b); err != nil {
			return fmt.Errorf("write volume generations of workload %s: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return volumeGen{}, err
	}
	r.vols.advance(id, volume, epoch, out.Committed)
	return out, nil
}

// VolumeBegin returns the committed and the pending generation of volume ("<namespace>/<claim>")
// for workload id, whose generation must be gen. A volume not seen before starts at committed
// 0; the pending generation is committed+1 and stays the same until it is committed, so a
// repeated begin returns the same answer. A workload keeps at most api.MaxVolumesPerWorkload
// volumes (ErrVolumeLimit). The change is durable when VolumeBegin returns.
func (r *Registry) VolumeBegin(ctx context.Context, id string, gen uint64, volume string) (committed, pending uint64, err error) {
	g, err := r.volumeTx(ctx, id, gen, volume, func(g *volumeGen, known bool, count int) (bool, error) {
		if !known && count >= api.MaxVolumesPerWorkload {
			return false, fmt.Errorf("workload %s volume %s: %w: the workload has %d volumes, at most %d are kept (remove and register the workload again to start over)",
				id, volume, ErrVolumeLimit, count, api.MaxVolumesPerWorkload)
		}
		if g.Pending != 0 {
			return false, nil
		}
		if g.Committed == math.MaxUint64 {
			return false, fmt.Errorf("workload %s volume %s: %w: committed generation %d cannot grow", id, volume, ErrVolumeConflict, g.Committed)
		}
		g.Pending = g.Committed + 1
		return true, nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("volume begin: %w", err)
	}
	return g.Committed, g.Pending, nil
}

// VolumeCommit commits generation next of volume for workload id (generation gen): next must
// be the pending generation VolumeBegin returned; committing the generation that is already
// committed with nothing pending is a replay and changes nothing. Anything else is
// ErrVolumeConflict.
func (r *Registry) VolumeCommit(ctx context.Context, id string, gen uint64, volume string, next uint64) (committed uint64, err error) {
	g, err := r.volumeTx(ctx, id, gen, volume, func(g *volumeGen, known bool, _ int) (bool, error) {
		switch {
		case !known:
			return false, fmt.Errorf("workload %s volume %s: %w: generation %d: nothing is pending (call begin first)", id, volume, ErrVolumeConflict, next)
		case g.Pending != 0 && next == g.Pending:
			g.Committed, g.Pending = next, 0
			return true, nil
		case g.Pending == 0 && next == g.Committed:
			return false, nil // the commit that already succeeded, again
		case g.Pending == 0:
			return false, fmt.Errorf("workload %s volume %s: %w: generation %d: nothing is pending, committed is %d (call begin first)", id, volume, ErrVolumeConflict, next, g.Committed)
		}
		return false, fmt.Errorf("workload %s volume %s: %w: generation %d is not the pending generation %d (committed %d)", id, volume, ErrVolumeConflict, next, g.Pending, g.Committed)
	})
	if err != nil {
		return 0, fmt.Errorf("volume commit: %w", err)
	}
	return g.Committed, nil
}
