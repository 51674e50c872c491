package registry_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/store/etcd"
	"github.com/sealpod/sealpod/kbs/store/etcd/etcdtest"
)

// TestTwoReplicasOnEtcd runs two registries (as two KBS replicas) on one real etcd: a write
// through one is seen by the other, and concurrent Puts from both never fork the chain.
func TestTwoReplicasOnEtcd(t *testing.T) {
	ep := etcdtest.Start(t)
	ctx := context.Background()
	signer := newSigner(t)
	var regs []*registry.Registry
	for range 2 {
		st, err := etcd.Open(ctx, []string{ep}, "/kbs-replicas", crashStoreKey, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		regs = append(regs, registry.New(st, signer))
	}
	if _, err := regs[0].Put(ctx, validWorkload("seen"), "replica-0"); err != nil {
		t.Fatal(err)
	}
	got, err := regs[1].Get(ctx, "seen")
	if err != nil || got.Generation != 1 {
		t.Fatalf("replica 1 Get: %+v, %v", got, err)
	}
	const each = 15
	var wg sync.WaitGroup
	errs := make(chan error, 2*each)
	for r, reg := range regs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				// Both replicas also update the same workload: generations must not collide.
				if _, err := reg.Put(ctx, validWorkload(fmt.Sprintf("r%d-%d", r, i)), fmt.Sprintf("replica-%d", r)); err != nil {
					errs <- err
				}
				if _, err := reg.Put(ctx, validWorkload("shared"), fmt.Sprintf("replica-%d", r)); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for r, reg := range regs {
		hist, err := reg.History(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(hist) != 1+4*each {
			t.Fatalf("replica %d: %d history entries, want %d", r, len(hist), 1+4*each)
		}
		if _, err := registry.VerifyHistory(hist, signer.Public()); err != nil {
			t.Fatalf("replica %d: history forked or broken: %v", r, err)
		}
		w, err := reg.Get(ctx, "shared")
		if err != nil || w.Generation != 2*each {
			t.Fatalf("replica %d: shared generation %v, %v; want %d", r, w, err, 2*each)
		}
		m, err := reg.Manifest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := registry.VerifyManifest(m, signer.Public()); err != nil {
			t.Fatalf("replica %d manifest: %v", r, err)
		}
		if len(m.Manifest.Workloads) != 2+2*each {
			t.Fatalf("replica %d manifest lists %d workloads", r, len(m.Manifest.Workloads))
		}
	}
}

// TestEtcdRollbackRefused writes older sealed values straight into etcd (someone with etcd
// access but without the store key) while two replicas run: a put-back workload record is
// refused by both; a consistent rollback of record, head and history is caught by the
// replicas that saw the newer head (their in-memory anchor).
func TestEtcdRollbackRefused(t *testing.T) {
	ep := etcdtest.Start(t)
	ctx := context.Background()
	signer := newSigner(t)
	const prefix = "/kbs-rollback"
	var regs []*registry.Registry
	for range 2 {
		st, err := etcd.Open(ctx, []string{ep}, prefix, crashStoreKey, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		regs = append(regs, registry.New(st, signer))
	}
	raw, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	rawGet := func(k string) string {
		resp, err := raw.Get(ctx, prefix+"/"+k)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("raw get %s: %v", k, err)
		}
		return string(resp.Kvs[0].Value)
	}
	weak := validWorkload("app")
	weak.Measurements["snp"] = []string{strings.Repeat("ee", 48)}
	if _, err := regs[0].Put(ctx, weak, "admin:t"); err != nil {
		t.Fatal(err)
	}
	if _, err := regs[1].Get(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	oldRecord := rawGet(registry.BucketWorkloads + "/app")
	oldHead := rawGet(registry.BucketMeta + "/head")
	e, err := regs[0].Put(ctx, validWorkload("app"), "admin:t")
	if err != nil {
		t.Fatal(err)
	}
	for i, reg := range regs {
		if w, err := reg.Get(ctx, "app"); err != nil || w.Generation != e.Workload.Generation {
			t.Fatalf("replica %d before rollback: %+v, %v", i, w, err)
		}
	}

	// The record alone: refused by every replica.
	if _, err := raw.Put(ctx, prefix+"/"+registry.BucketWorkloads+"/app", oldRecord); err != nil {
		t.Fatal(err)
	}
	for i, reg := range regs {
		if w, err := reg.Get(ctx, "app"); !errors.Is(err, registry.ErrTampered) {
			t.Fatalf("replica %d, put-back record: Get = %+v, %v; want ErrTampered", i, w, err)
		}
	}

	// Record, head and history together (a consistent rollback): the running replicas saw
	// the newer head and refuse; only an anchor outside the store catches it after a restart.
	if _, err := raw.Put(ctx, prefix+"/"+registry.BucketMeta+"/head", oldHead); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Delete(ctx, prefix+"/"+registry.BucketHistory+"/"+fmt.Sprintf("%020d", e.Seq)); err != nil {
		t.Fatal(err)
	}
	for i, reg := range regs {
		if w, err := reg.Get(ctx, "app"); !errors.Is(err, registry.ErrRollback) {
			t.Fatalf("replica %d, consistent rollback: Get = %+v, %v; want ErrRollback", i, w, err)
		}
	}
}
