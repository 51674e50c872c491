package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/store"
	"github.com/sealpod/sealpod/kbs/store/etcd"
	"github.com/sealpod/sealpod/kbs/store/etcd/etcdtest"
)

// TestVolumeSecretStaysPrivate: Put makes a 32-byte volume secret that GetForRelease returns
// and nothing public carries (Get, List, history, manifest); an update keeps it.
func TestVolumeSecretStaysPrivate(t *testing.T) {
	ctx := context.Background()
	reg := registry.New(openBolt(t), newSigner(t))
	if _, err := reg.Put(ctx, validWorkload("web"), "test"); err != nil {
		t.Fatal(err)
	}
	_, secret, err := reg.GetForRelease(ctx, "web")
	if err != nil || len(secret) != api.VolumeSecretSize || bytes.Equal(secret, make([]byte, api.VolumeSecretSize)) {
		t.Fatalf("volume secret %x, %v", secret, err)
	}
	upd := validWorkload("web")
	upd.DataKey = nil
	upd.SANs = []string{"web2.default.svc"}
	if _, err := reg.Put(ctx, upd, "test"); err != nil {
		t.Fatal(err)
	}
	_, again, err := reg.GetForRelease(ctx, "web")
	if err != nil || !bytes.Equal(again, secret) {
		t.Fatalf("secret after an update: changed=%v, %v", !bytes.Equal(again, secret), err)
	}
	w, _ := reg.Get(ctx, "web")
	ws, _ := reg.List(ctx)
	h, _ := reg.History(ctx)
	m, err := reg.Manifest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{"get": w, "list": ws, "history": h, "manifest": m} {
		b, _ := json.Marshal(v)
		if bytes.Contains(b, []byte("volumeSecret")) || bytes.Contains(b, secret) {
			t.Errorf("%s carries the volume secret: %s", name, b)
		}
	}
}

// TestVolumeGenerationsConcurrent: concurrent begin/commit of one volume through two
// registries sharing one store (replicas on etcd, or one bbolt file) never lose or repeat a
// generation: every generation up to the committed one was committed exactly in order (no
// gap), each goroutine's rounds advance it, and every refused commit is a conflict.
func TestVolumeGenerationsConcurrent(t *testing.T) {
	ctx := context.Background()
	signer := newSigner(t)
	stores := map[string]func(t *testing.T) []store.Store{
		"bolt": func(t *testing.T) []store.Store { s := openBolt(t); return []store.Store{s, s} },
		"etcd": func(t *testing.T) []store.Store {
			ep := etcdtest.Start(t)
			var out []store.Store
			for range 2 {
				st, err := etcd.Open(ctx, []string{ep}, "/kbs-volumes", crashStoreKey, nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				out = append(out, st)
			}
			return out
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			sts := open(t)
			regs := []*registry.Registry{registry.New(sts[0], signer), registry.New(sts[1], signer)}
			if _, err := regs[0].Put(ctx, validWorkload("db"), "test"); err != nil {
				t.Fatal(err)
			}
			w, err := regs[1].Get(ctx, "db")
			if err != nil {
				t.Fatal(err)
			}
			const vol, rounds = "prod/data-db-0", 10
			var mu sync.Mutex
			committed := map[uint64]bool{} // generations some commit returned for
			var wg sync.WaitGroup
			errs := make(chan error, 4*rounds)
			for i := range 4 {
				reg := regs[i%2]
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range rounds {
						c, p, err := reg.VolumeBegin(ctx, "db", w.Generation, vol)
						if err != nil || p != c+1 {
							errs <- err
							return
						}
						_, err = reg.VolumeCommit(ctx, "db", w.Generation, vol, p)
						switch {
						case err == nil:
							// Two racing begins get the same pending generation; the second
							// commit of it is a replay and succeeds without a change.
							mu.Lock()
							committed[p] = true
							mu.Unlock()
						case !errors.Is(err, registry.ErrVolumeConflict):
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			c, p, err := regs[0].VolumeBegin(ctx, "db", w.Generation, vol)
			if err != nil || c != uint64(len(committed)) || p != c+1 || c < rounds {
				t.Fatalf("committed %d pending %d after commits of %d distinct generations (%v)", c, p, len(committed), err)
			}
			for g := uint64(1); g <= c; g++ {
				if !committed[g] {
					t.Fatalf("generation %d was skipped (committed %d)", g, c)
				}
			}
		})
	}
}
