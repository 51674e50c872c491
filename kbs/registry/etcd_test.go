package registry_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

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
