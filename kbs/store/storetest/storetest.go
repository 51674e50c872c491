// Package storetest is the conformance suite every store.Store backend runs in its tests.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/sealpod/sealpod/kbs/store"
)

// Run runs the conformance suite; open returns a fresh, empty store for each subtest.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	t.Run("RoundTrip", func(t *testing.T) {
		st := open(t)
		vals := map[string][]byte{"a": []byte("one"), "b": {}, "c": bytes.Repeat([]byte{0xff}, 4096)}
		if err := st.Update(ctx, func(tx store.Tx) error {
			for k, v := range vals {
				if err := tx.Put("bkt", k, v); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatalf("Update: %v", err)
		}
		if err := st.View(ctx, func(tx store.Tx) error {
			for k, v := range vals {
				got, err := tx.Get("bkt", k)
				if err != nil {
					return fmt.Errorf("Get %s: %w", k, err)
				}
				if !bytes.Equal(got, v) {
					return fmt.Errorf("Get %s = %q, want %q", k, got, v)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		st := open(t)
		err := st.View(ctx, func(tx store.Tx) error {
			_, err := tx.Get("nobucket", "x")
			return err
		})
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get in missing bucket: %v, want ErrNotFound", err)
		}
		mustPut(t, st, "bkt", "x", []byte("1"))
		err = st.View(ctx, func(tx store.Tx) error {
			_, err := tx.Get("bkt", "y")
			return err
		})
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get missing key: %v, want ErrNotFound", err)
		}
	})
	t.Run("ListOrderAndDelete", func(t *testing.T) {
		st := open(t)
		for _, k := range []string{"c", "a", "b", "aa"} {
			mustPut(t, st, "bkt", k, []byte("v-"+k))
		}
		mustPut(t, st, "other", "z", []byte("z"))
		if err := st.Update(ctx, func(tx store.Tx) error { return tx.Delete("bkt", "b") }); err != nil {
			t.Fatal(err)
		}
		var keys []string
		if err := st.View(ctx, func(tx store.Tx) error {
			kvs, err := tx.List("bkt")
			for _, kv := range kvs {
				keys = append(keys, kv.Key)
				if string(kv.Value) != "v-"+kv.Key {
					return fmt.Errorf("value of %s = %q", kv.Key, kv.Value)
				}
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(keys) != "[a aa c]" {
			t.Fatalf("List = %v, want [a aa c]", keys)
		}
		if err := st.View(ctx, func(tx store.Tx) error {
			kvs, err := tx.List("empty-bucket")
			if len(kvs) != 0 {
				return fmt.Errorf("List of missing bucket = %v", kvs)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("ReadYourWritesAndRollback", func(t *testing.T) {
		st := open(t)
		mustPut(t, st, "bkt", "keep", []byte("old"))
		boom := errors.New("boom")
		err := st.Update(ctx, func(tx store.Tx) error {
			if err := tx.Put("bkt", "keep", []byte("new")); err != nil {
				return err
			}
			if err := tx.Put("bkt", "added", []byte("x")); err != nil {
				return err
			}
			got, err := tx.Get("bkt", "keep")
			if err != nil || string(got) != "new" {
				return fmt.Errorf("read own write: %q, %v", got, err)
			}
			kvs, err := tx.List("bkt")
			if err != nil || len(kvs) != 2 {
				return fmt.Errorf("list own writes: %v, %v", kvs, err)
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Update error = %v, want boom", err)
		}
		_ = st.View(ctx, func(tx store.Tx) error {
			got, err := tx.Get("bkt", "keep")
			if err != nil || string(got) != "old" {
				t.Errorf("after rollback keep = %q, %v; want old", got, err)
			}
			if _, err := tx.Get("bkt", "added"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("after rollback added: %v, want ErrNotFound", err)
			}
			return nil
		})
	})
	t.Run("ViewIsReadOnly", func(t *testing.T) {
		st := open(t)
		err := st.View(ctx, func(tx store.Tx) error { return tx.Put("bkt", "k", []byte("v")) })
		if err == nil {
			t.Fatal("Put in View succeeded")
		}
	})
	t.Run("CancelledContext", func(t *testing.T) {
		st := open(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := st.Update(cctx, func(tx store.Tx) error { return tx.Put("bkt", "k", []byte("v")) }); !errors.Is(err, context.Canceled) {
			t.Fatalf("Update with cancelled ctx: %v", err)
		}
	})
	t.Run("ConcurrentIncrements", func(t *testing.T) {
		// Serialisability: concurrent read-modify-write of one counter loses no update.
		st := open(t)
		const workers, each = 4, 10
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if err := Increment(ctx, st, "ctr", "n"); err != nil {
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
		if n := ReadCounter(t, st, "ctr", "n"); n != workers*each {
			t.Fatalf("counter = %d, want %d", n, workers*each)
		}
	})
}

// Increment adds one to a decimal counter in one Update.
func Increment(ctx context.Context, st store.Store, bucket, key string) error {
	return st.Update(ctx, func(tx store.Tx) error {
		n := 0
		v, err := tx.Get(bucket, key)
		if err == nil {
			if _, err := fmt.Sscanf(string(v), "%d", &n); err != nil {
				return err
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return tx.Put(bucket, key, []byte(fmt.Sprint(n+1)))
	})
}

// ReadCounter reads a counter written by Increment.
func ReadCounter(t *testing.T, st store.Store, bucket, key string) int {
	t.Helper()
	n := 0
	if err := st.View(context.Background(), func(tx store.Tx) error {
		v, err := tx.Get(bucket, key)
		if err != nil {
			return err
		}
		_, err = fmt.Sscanf(string(v), "%d", &n)
		return err
	}); err != nil {
		t.Fatalf("read counter %s/%s: %v", bucket, key, err)
	}
	return n
}

func mustPut(t *testing.T, st store.Store, bucket, key string, v []byte) {
	t.Helper()
	if err := st.Update(context.Background(), func(tx store.Tx) error { return tx.Put(bucket, key, v) }); err != nil {
		t.Fatalf("Put %s/%s: %v", bucket, key, err)
	}
}
