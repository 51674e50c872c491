package registry_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/store/bolt"
)

// rawBolt reads and writes a closed bolt store file directly, as someone who can write the
// file but lacks the store key: sealed values can only be copied, deleted or put back.
type rawBolt struct{ path string }

func (r rawBolt) get(t *testing.T, bucket, key string) []byte {
	t.Helper()
	var v []byte
	r.do(t, func(tx *bbolt.Tx) error {
		if b := tx.Bucket([]byte(bucket)); b != nil {
			v = append([]byte(nil), b.Get([]byte(key))...)
		}
		return nil
	})
	if v == nil {
		t.Fatalf("raw %s/%s: absent", bucket, key)
	}
	return v
}

// put writes sealed bytes back (nil deletes the key).
func (r rawBolt) put(t *testing.T, bucket, key string, v []byte) {
	t.Helper()
	r.do(t, func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return err
		}
		if v == nil {
			return b.Delete([]byte(key))
		}
		return b.Put([]byte(key), v)
	})
}

func (r rawBolt) do(t *testing.T, fn func(tx *bbolt.Tx) error) {
	t.Helper()
	db, err := bbolt.Open(r.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// TestStoreRollbackRefused puts an older sealed workload record back into the store file (a
// weaker policy, a removed workload, the registration before a removal) and restarts the
// broker: the record no longer matches the signed history, so Get, List and the manifest
// refuse it instead of releasing its key.
func TestStoreRollbackRefused(t *testing.T) {
	weak := func(w *registry.Workload) { w.Measurements["snp"] = []string{strings.Repeat("ee", 48)} }
	tests := []struct {
		name  string
		after func(ctx context.Context, reg *registry.Registry) error // changes made after the snapshot
	}{
		{name: "unchanged", after: func(context.Context, *registry.Registry) error { return nil }},
		{name: "older policy", after: func(ctx context.Context, reg *registry.Registry) error {
			w := validWorkload("app")
			_, err := reg.Put(ctx, w, "admin:t")
			return err
		}},
		{name: "removed workload", after: func(ctx context.Context, reg *registry.Registry) error {
			_, err := reg.Remove(ctx, "app", "admin:t")
			return err
		}},
		{name: "registration before removal", after: func(ctx context.Context, reg *registry.Registry) error {
			if _, err := reg.Remove(ctx, "app", "admin:t"); err != nil {
				return err
			}
			_, err := reg.Put(ctx, validWorkload("app"), "admin:t")
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "kbs.db")
			signer := newSigner(t)
			st, err := bolt.Open(path, crashStoreKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			reg := registry.New(st, signer)
			w := validWorkload("app")
			weak(&w)
			for _, v := range []registry.Workload{validWorkload("other"), w} {
				if _, err := reg.Put(ctx, v, "admin:t"); err != nil {
					t.Fatal(err)
				}
			}
			st.Close()
			raw := rawBolt{path}
			old := raw.get(t, registry.BucketWorkloads, "app")

			st, err = bolt.Open(path, crashStoreKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.after(ctx, registry.New(st, signer)); err != nil {
				t.Fatal(err)
			}
			st.Close()
			raw.put(t, registry.BucketWorkloads, "app", old)

			st, err = bolt.Open(path, crashStoreKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			reg = registry.New(st, signer)
			got, err := reg.Get(ctx, "app")
			_, lerr := reg.List(ctx)
			_, merr := reg.Manifest(ctx)
			if tc.name == "unchanged" {
				if err != nil || lerr != nil || merr != nil || got.Measurements["snp"][0] != w.Measurements["snp"][0] {
					t.Fatalf("untouched store: Get %v, List %v, Manifest %v", err, lerr, merr)
				}
				return
			}
			if !errors.Is(err, registry.ErrTampered) || !strings.Contains(err.Error(), "history") {
				t.Fatalf("Get of a put-back record = %+v, %v; want ErrTampered naming the history", got, err)
			}
			if got != nil {
				t.Fatal("Get returned a workload with its error")
			}
			for name, e := range map[string]error{"List": lerr, "Manifest": merr} {
				if !errors.Is(e, registry.ErrTampered) {
					t.Errorf("%s with a put-back record = %v, want ErrTampered", name, e)
				}
			}
			// The other workload is still served.
			if _, err := reg.Get(ctx, "other"); err != nil {
				t.Errorf("Get(other) = %v", err)
			}
		})
	}
}
