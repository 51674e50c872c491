package etcd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sealpod/sealpod/kbs/store"
	"github.com/sealpod/sealpod/kbs/store/etcd/etcdtest"
	"github.com/sealpod/sealpod/kbs/store/storetest"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, store.KeySize) }

var prefixN atomic.Int64

func TestConformance(t *testing.T) {
	ep := etcdtest.Start(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := Open(context.Background(), []string{ep}, fmt.Sprintf("/conf-%d", prefixN.Add(1)), testKey(1), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestTwoReplicas(t *testing.T) {
	ep := etcdtest.Start(t)
	ctx := context.Background()
	a, err := Open(ctx, []string{ep}, "/replicas", testKey(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(ctx, []string{ep}, "/replicas", testKey(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.Update(ctx, func(tx store.Tx) error { return tx.Put("bkt", "k", []byte("from-a")) }); err != nil {
		t.Fatal(err)
	}
	if err := b.View(ctx, func(tx store.Tx) error {
		v, err := tx.Get("bkt", "k")
		if err != nil || string(v) != "from-a" {
			return fmt.Errorf("replica b reads %q, %v", v, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Concurrent increments from both replicas lose no update (compare-and-swap + retry).
	const each = 25
	errs := make(chan error, 2)
	for _, s := range []store.Store{a, b} {
		go func() {
			for range each {
				if err := storetest.Increment(ctx, s, "ctr", "n"); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := storetest.ReadCounter(t, a, "ctr", "n"); n != 2*each {
		t.Fatalf("counter = %d, want %d", n, 2*each)
	}
}

func TestEncryptionAtRestAndWrongKey(t *testing.T) {
	ep := etcdtest.Start(t)
	ctx := context.Background()
	s, err := Open(ctx, []string{ep}, "/enc", testKey(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	canary := []byte("CANARY-etcd-plaintext")
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("workloads", "w", canary) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "/enc/workloads/w")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("raw get: %v %v", resp, err)
	}
	if bytes.Contains(resp.Kvs[0].Value, canary) {
		t.Fatal("etcd holds the plaintext canary")
	}
	if _, err := Open(ctx, []string{ep}, "/enc", testKey(2), nil); !errors.Is(err, store.ErrWrongKey) {
		t.Fatalf("Open with wrong key: %v, want ErrWrongKey", err)
	}
	// A value copied to another key does not open.
	if _, err := cli.Put(ctx, "/enc/workloads/x", string(resp.Kvs[0].Value)); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, []string{ep}, "/enc", testKey(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.View(ctx, func(tx store.Tx) error { _, err := tx.Get("workloads", "x"); return err })
	if !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("Get of a copied ciphertext: %v, want ErrCorrupt", err)
	}
}
