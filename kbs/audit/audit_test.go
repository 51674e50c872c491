package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/store"
	"github.com/sealpod/sealpod/kbs/store/bolt"
	"github.com/sealpod/sealpod/kbs/store/etcd"
	"github.com/sealpod/sealpod/kbs/store/etcd/etcdtest"
)

func openBolt(t testing.TB) store.Store {
	s, err := bolt.Open(filepath.Join(t.TempDir(), "kbs.db"), bytes.Repeat([]byte{1}, store.KeySize), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestAppendValidation(t *testing.T) {
	l := audit.New(openBolt(t))
	ctx := context.Background()
	for _, e := range []audit.Event{
		{Kind: "bogus", Result: audit.ResultOK},
		{Kind: audit.KindKey, Result: "maybe"},
		{Kind: audit.KindKey, Result: audit.ResultOK, Reason: string(make([]byte, 2000))},
		{Kind: audit.KindKey, Result: audit.ResultOK, Time: time.Unix(-5, 0)},
	} {
		if err := l.Append(ctx, e); !errors.Is(err, audit.ErrInvalid) {
			t.Errorf("Append(%+v) = %v, want ErrInvalid", e.Kind, err)
		}
	}
}

func TestListSinceAndLimit(t *testing.T) {
	l := audit.New(openBolt(t))
	ctx := context.Background()
	base := time.Date(2026, 1, 2, 10, 30, 0, 0, time.UTC)
	// 30 events spread over 3 hours (3 hour buckets), appended out of order.
	for i := 29; i >= 0; i-- {
		e := audit.Event{Time: base.Add(time.Duration(i) * 6 * time.Minute), Kind: audit.KindAttest, Workload: fmt.Sprintf("w%02d", i), Result: audit.ResultOK}
		if err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	all, err := l.List(ctx, time.Time{}, 0)
	if err != nil || len(all) != 30 {
		t.Fatalf("List all = %d, %v", len(all), err)
	}
	for i := range all {
		if all[i].Workload != fmt.Sprintf("w%02d", i) {
			t.Fatalf("event %d = %s: not in time order", i, all[i].Workload)
		}
	}
	last5, _ := l.List(ctx, time.Time{}, 5)
	if len(last5) != 5 || last5[0].Workload != "w25" || last5[4].Workload != "w29" {
		t.Fatalf("List limit 5 = %v", last5)
	}
	since, _ := l.List(ctx, base.Add(100*time.Minute), 0) // events 17..29 (i*6 >= 100 -> i >= 17)
	if len(since) != 13 || since[0].Workload != "w17" {
		t.Fatalf("List since = %d events, first %v", len(since), since)
	}
}

func TestConcurrentAppendsAllDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kbs.db")
	key := bytes.Repeat([]byte{1}, store.KeySize)
	st, err := bolt.Open(path, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := audit.New(st)
	ctx := context.Background()
	const workers, each = 16, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := l.Append(ctx, audit.Event{Kind: audit.KindKey, Workload: fmt.Sprintf("%d-%d", w, i), Result: audit.ResultOK}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st.Close()
	st, err = bolt.Open(path, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	evs, err := audit.New(st).List(ctx, time.Time{}, audit.MaxListLimit)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range evs {
		seen[e.Workload] = true
	}
	if len(evs) != workers*each || len(seen) != workers*each {
		t.Fatalf("%d events (%d distinct) after reopen, want %d", len(evs), len(seen), workers*each)
	}
}

func TestAppendOnEtcdFromTwoReplicas(t *testing.T) {
	ep := etcdtest.Start(t)
	ctx := context.Background()
	key := bytes.Repeat([]byte{2}, store.KeySize)
	var logs []*audit.Log
	for range 2 {
		st, err := etcd.Open(ctx, []string{ep}, "/audit", key, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		logs = append(logs, audit.New(st))
	}
	var wg sync.WaitGroup
	for r, l := range logs {
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 40 {
					if err := l.Append(ctx, audit.Event{Kind: audit.KindAuth, Workload: fmt.Sprintf("%d-%d-%d", r, g, i), Result: audit.ResultOK}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	evs, err := logs[1].List(ctx, time.Time{}, audit.MaxListLimit)
	if err != nil || len(evs) != 2*4*40 {
		t.Fatalf("List = %d events, %v; want %d", len(evs), err, 2*4*40)
	}
}

// BenchmarkAuditAppend measures durable appends from parallel callers on bbolt (group commit).
// The target is >= 3,000 appends/s, i.e. <= 333,333 ns/op.
func BenchmarkAuditAppend(b *testing.B) {
	l := audit.New(openBolt(b))
	ctx := context.Background()
	b.SetParallelism(16) // 16 x GOMAXPROCS concurrent callers, like a busy broker
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Append(ctx, audit.Event{Kind: audit.KindKey, Workload: "bench", TEE: "snp", Result: audit.ResultOK, Remote: "127.0.0.1:1234"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
}
