package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
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

// TestCommitInterval: transactions start at least the commit interval apart (so a busy period
// of length T makes at most T/interval+1 commits), every acknowledged event is stored, and
// interval 0 still works (each commit starts when the previous ends).
func TestCommitInterval(t *testing.T) {
	for _, interval := range []time.Duration{0, 20 * time.Millisecond} {
		t.Run(interval.String(), func(t *testing.T) {
			l := audit.New(openBolt(t))
			l.SetCommitInterval(interval)
			ctx := context.Background()
			const workers, each = 20, 5
			var wg sync.WaitGroup
			start := time.Now()
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						if err := l.Append(ctx, audit.Event{Kind: audit.KindAuth, Workload: fmt.Sprintf("%d-%d", w, i), Result: audit.ResultOK}); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			commits, events := l.Stats()
			if events != workers*each {
				t.Fatalf("%d events committed, want %d", events, workers*each)
			}
			if interval > 0 {
				if max := uint64(elapsed/interval) + 1; commits > max {
					t.Fatalf("%d commits in %v with interval %v (at most %d possible)", commits, elapsed, interval, max)
				}
			}
			evs, err := l.List(ctx, time.Time{}, audit.MaxListLimit)
			if err != nil || len(evs) != workers*each {
				t.Fatalf("List: %d events, %v", len(evs), err)
			}
		})
	}
}

// gateStore blocks every Update until its gate is opened (or fails it with err).
type gateStore struct {
	store.Store
	gate chan struct{}
	err  error
}

func (g *gateStore) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	<-g.gate
	if g.err != nil {
		return g.err
	}
	return g.Store.Update(ctx, fn)
}

// TestEnqueue: Enqueue does not wait for the commit; an event enqueued before an Append is
// durable once that Append returns; commit errors of enqueued events reach the error handler;
// a malformed event is refused at once.
func TestEnqueue(t *testing.T) {
	ctx := context.Background()
	g := &gateStore{Store: openBolt(t), gate: make(chan struct{})}
	l := audit.New(g)
	l.SetCommitInterval(0)
	// The store is blocked: Enqueue must still return.
	if err := l.Enqueue(ctx, audit.Event{Kind: audit.KindAuth, Workload: "queued", Result: audit.ResultOK}); err != nil {
		t.Fatal(err)
	}
	if err := l.Enqueue(ctx, audit.Event{Kind: "bogus", Result: audit.ResultOK}); !errors.Is(err, audit.ErrInvalid) {
		t.Fatalf("malformed event: %v", err)
	}
	close(g.gate)
	if err := l.Append(ctx, audit.Event{Kind: audit.KindKey, Workload: "waited", Result: audit.ResultOK}); err != nil {
		t.Fatal(err)
	}
	evs, err := l.List(ctx, time.Time{}, 10)
	if err != nil || len(evs) != 2 || evs[0].Workload != "queued" || evs[1].Workload != "waited" {
		t.Fatalf("after Append: %+v %v", evs, err)
	}
	// List (through Flush) shows what was enqueued before it, without an Append.
	if err := l.Enqueue(ctx, audit.Event{Kind: audit.KindAuth, Workload: "flushed", Result: audit.ResultDenied}); err != nil {
		t.Fatal(err)
	}
	evs, err = l.List(ctx, time.Time{}, 10)
	if err != nil || len(evs) != 3 || evs[2].Workload != "flushed" {
		t.Fatalf("List after Enqueue: %+v %v", evs, err)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatalf("Flush of an idle log: %v", err)
	}

	failing := &gateStore{Store: openBolt(t), gate: make(chan struct{}), err: errors.New("disk gone")}
	close(failing.gate)
	lf := audit.New(failing)
	got := make(chan int, 1)
	lf.SetErrorHandler(func(err error, n int) {
		if strings.Contains(err.Error(), "disk gone") {
			got <- n
		}
	})
	if err := lf.Enqueue(ctx, audit.Event{Kind: audit.KindAuth, Result: audit.ResultDenied}); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-got:
		if n != 1 {
			t.Fatalf("error handler: %d events, want 1", n)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("commit error of an enqueued event never reached the error handler")
	}
	if err := lf.Append(ctx, audit.Event{Kind: audit.KindKey, Result: audit.ResultOK}); err == nil || !strings.Contains(err.Error(), "disk gone") {
		t.Fatalf("Append on a failing store: %v", err)
	}
}

// TestEnqueueBackpressure: with MaxQueued events waiting, Enqueue waits for its commit.
func TestEnqueueBackpressure(t *testing.T) {
	ctx := context.Background()
	g := &gateStore{Store: openBolt(t), gate: make(chan struct{})}
	l := audit.New(g)
	// The committer holds up to one batch in the blocked Update; the rest queue up until
	// MaxQueued, after which an Enqueue waits (here: until its deadline).
	waited := -1
	for i := range audit.MaxQueued + 200 {
		tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		err := l.Enqueue(tctx, audit.Event{Kind: audit.KindAuth, Workload: fmt.Sprint(i), Result: audit.ResultOK})
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			waited = i
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if waited < audit.MaxQueued {
		t.Fatalf("Enqueue waited at event %d, want it to queue at least %d without waiting", waited, audit.MaxQueued)
	}
	close(g.gate)
	if err := l.Enqueue(ctx, audit.Event{Kind: audit.KindAuth, Result: audit.ResultOK}); err != nil {
		t.Fatal(err)
	}
}
