// Package audit is the key broker's append-only audit log (authentications, attestations,
// key releases, certificates, administration), stored in the broker's store.Store.
//
// Appends from concurrent callers are group-committed: while one transaction is being made
// durable, later events queue up and go into the next transaction together (one committer
// goroutine per busy period; transactions start at least SetCommitInterval apart), so the log
// sustains thousands of appends per second on one fsync'ing disk. Append returns only after
// the transaction holding its event is committed (fsynced on bbolt).
package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/store"
)

// Event kinds.
const (
	KindAuth        = api.AuditKindAuth
	KindAttest      = api.AuditKindAttest
	KindKey         = api.AuditKindKey
	KindCertificate = api.AuditKindCertificate
	KindRelease     = api.AuditKindRelease
	KindAdmin       = api.AuditKindAdmin
	KindVolume      = api.AuditKindVolume
)

// Event results.
const (
	ResultOK     = api.AuditResultOK
	ResultDenied = api.AuditResultDenied
	ResultError  = api.AuditResultError
)

// Limits.
const (
	DefaultListLimit = 1000
	MaxListLimit     = 100000
	maxBatch         = 100 // etcd allows 128 operations per transaction by default
	commitTimeout    = 30 * time.Second
	// DefaultCommitInterval is the minimum time between the starts of two audit transactions.
	DefaultCommitInterval = 2 * time.Millisecond
)

// Store layout: one bucket per UTC hour ("audit-2006010215"), keys
// "%020d-<instance>-%016x" (UnixNano, random per-Log instance id, counter), values JSON Event;
// bucket BucketIndex lists the hour buckets that exist with their JSON bytes and event count
// (retention.go); BucketRetention holds the anchor of what retention exported and dropped.
const (
	BucketIndex  = "audit-index"
	bucketPrefix = "audit-"
	hourLayout   = "2006010215"
)

// ErrInvalid is matched by errors.Is for a malformed event.
var ErrInvalid = api.ErrInvalidAuditEvent

// Event is one audit record: the wire type api.AuditEvent (the admin API returns it as is),
// checked by its Validate method.
type Event = api.AuditEvent

type request struct {
	key, bucket, hour string
	value             []byte
	done              chan error // buffered: the committer never blocks on it
	async             bool       // nobody waits on done; errors go to onError
	marker            bool       // a Flush: no event, done once everything before it committed
}

// Log is the audit log. It is safe for concurrent use.
type Log struct {
	st       store.Store
	instance string
	counter  atomic.Uint64

	mu         sync.Mutex
	pending    []*request
	committing bool
	interval   time.Duration // minimum time between commit starts
	onError    func(err error, n int)
	lastCommit time.Time // start of the latest commit

	commits, committed atomic.Uint64
}

// Stats returns the number of transactions committed and of events they held (for metrics
// and benchmarks: events/commits is the mean group-commit batch).
func (l *Log) Stats() (commits, events uint64) { return l.commits.Load(), l.committed.Load() }

// New returns a log over st.
func New(st store.Store) *Log {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("audit: read random instance id: %v", err))
	}
	return &Log{st: st, instance: hex.EncodeToString(b[:]), interval: DefaultCommitInterval}
}

// SetCommitInterval sets the minimum time between the starts of two audit transactions
// (default DefaultCommitInterval; 0 = commit as soon as the previous commit ends). Events
// arriving in between wait and go into the next transaction together: on a disk whose fsync
// is fast, this keeps a busy broker from spending its CPU on many small fsynced transactions
// (each costs ~150 µs of CPU on the development VM, mostly in fdatasync). It bounds the extra
// latency of an Append by the interval; an Append still returns only once its event is durable.
func (l *Log) SetCommitInterval(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.interval = max(d, 0)
}

// Append records e durably (it returns after the transaction holding e committed). A zero
// Time is set to now; times are stored in UTC.
func (l *Log) Append(ctx context.Context, e Event) error {
	r, err := l.enqueue(e, false)
	if err != nil {
		return err
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		// The event may still be committed; the caller only stops waiting.
		return fmt.Errorf("append audit event: %w", ctx.Err())
	}
}

// MaxQueued is the number of waiting events above which Enqueue waits for its event like
// Append (backpressure against a flood of requests whose events are not waited for).
const MaxQueued = 10000

// Enqueue queues e for the next transaction and returns without waiting for it to commit.
// Events commit in queue order, so e is durable at the latest when an event appended after it
// is (unless e's own transaction failed: that error goes to the handler set with
// SetErrorHandler). With more than MaxQueued events waiting it waits like Append. Only a
// malformed event is an immediate error.
func (l *Log) Enqueue(ctx context.Context, e Event) error {
	r, err := l.enqueue(e, true)
	if err != nil {
		return err
	}
	if r.async {
		return nil
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("append audit event: %w", ctx.Err())
	}
}

// Flush waits until every event appended or enqueued before the call has been committed (or
// its transaction failed; that error went to its Append or to the error handler).
func (l *Log) Flush(ctx context.Context) error {
	r := &request{marker: true, done: make(chan error, 1)}
	l.mu.Lock()
	if !l.committing {
		l.mu.Unlock()
		return nil // nothing queued or in flight
	}
	l.pending = append(l.pending, r)
	l.mu.Unlock()
	select {
	case err := <-r.done:
		// err is the failed transaction's error, already returned to its Appends or passed to
		// the error handler (see above); Flush reports only that the queue has drained.
		_ = err
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush audit log: %w", ctx.Err())
	}
}

// SetErrorHandler sets the function that receives commit errors of enqueued events (n: how
// many enqueued events the failed transaction held). Nil (default) drops them.
func (l *Log) SetErrorHandler(f func(err error, n int)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onError = f
}

func (l *Log) enqueue(e Event, async bool) (*request, error) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC().Round(0)
	if err := e.Validate(); err != nil {
		return nil, err
	}
	v, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode audit event: %w", err)
	}
	hour := e.Time.Format(hourLayout)
	r := &request{
		key:    fmt.Sprintf("%020d-%s-%016x", e.Time.UnixNano(), l.instance, l.counter.Add(1)),
		bucket: bucketPrefix + hour,
		hour:   hour,
		value:  v,
		done:   make(chan error, 1),
	}
	l.mu.Lock()
	r.async = async && len(l.pending) < MaxQueued
	l.pending = append(l.pending, r)
	if !l.committing {
		// Start a committer for this busy period; it exits when the queue is empty, so no
		// caller waits for more than its own batch and no goroutine outlives the load.
		l.committing = true
		go l.drain()
	}
	l.mu.Unlock()
	return r, nil
}

// drain commits queued events in batches of at most maxBatch until the queue is empty, starting
// transactions at least l.interval apart.
func (l *Log) drain() {
	for {
		l.mu.Lock()
		if wait := l.interval - time.Since(l.lastCommit); wait > 0 && len(l.pending) < maxBatch {
			l.mu.Unlock()
			time.Sleep(wait)
			l.mu.Lock()
		}
		if len(l.pending) == 0 {
			l.pending = nil
			l.committing = false
			l.mu.Unlock()
			return
		}
		n := min(len(l.pending), maxBatch)
		batch := l.pending[:n:n]
		l.pending = l.pending[n:]
		l.lastCommit = time.Now()
		l.mu.Unlock()
		err := l.commit(batch)
		async := 0
		for _, b := range batch {
			b.done <- err
			if b.async {
				async++
			}
		}
		if err != nil && async > 0 {
			l.mu.Lock()
			onError := l.onError
			l.mu.Unlock()
			if onError != nil {
				onError(err, async)
			}
		}
	}
}

func (l *Log) commit(batch []*request) error {
	events := 0
	for _, r := range batch {
		if !r.marker {
			events++
		}
	}
	if events == 0 {
		return nil // only Flush markers: everything before them is committed
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	err := l.st.Update(ctx, func(tx store.Tx) error {
		hours := map[string]hourStats{}
		for _, r := range batch {
			if r.marker {
				continue
			}
			if err := tx.Put(r.bucket, r.key, r.value); err != nil {
				return err
			}
			s := hours[r.hour]
			s.bytes += int64(len(r.value))
			s.events++
			hours[r.hour] = s
		}
		for h, add := range hours {
			// The index counts each hour's bytes and events (retention bounds them).
			var s hourStats
			if b, err := tx.Get(BucketIndex, h); err == nil {
				s = decodeStats(b)
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			s.bytes += add.bytes
			s.events += add.events
			if err := tx.Put(BucketIndex, h, s.encode()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("append %d audit events: %w", events, err)
	}
	l.commits.Add(1)
	l.committed.Add(uint64(events))
	return nil
}

// List returns the newest events with Time >= since, at most limit of them (limit <= 0 means
// DefaultListLimit; capped at MaxListLimit), in ascending time order. It first waits for the
// events this Log has queued (Flush), so it shows every event appended or enqueued before it.
func (l *Log) List(ctx context.Context, since time.Time, limit int) ([]Event, error) {
	// Read what was enqueued before the call, too.
	if err := l.Flush(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	since = since.UTC()
	sinceHour := since.Truncate(time.Hour).Format(hourLayout)
	if since.IsZero() {
		sinceHour = ""
	}
	var out []Event
	err := l.st.View(ctx, func(tx store.Tx) error {
		hours, err := tx.List(BucketIndex)
		if err != nil {
			return fmt.Errorf("list audit index: %w", err)
		}
		// Newest hour first, until limit events are collected.
		for i := len(hours) - 1; i >= 0 && len(out) < limit; i-- {
			h := hours[i].Key
			if h < sinceHour {
				break
			}
			kvs, err := tx.List(bucketPrefix + h)
			if err != nil {
				return fmt.Errorf("list audit bucket %s: %w", h, err)
			}
			for j := len(kvs) - 1; j >= 0 && len(out) < limit; j-- {
				var e Event
				if err := json.Unmarshal(kvs[j].Value, &e); err != nil {
					return fmt.Errorf("decode audit event %s: %w", kvs[j].Key, err)
				}
				if e.Time.Before(since) {
					continue
				}
				out = append(out, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}
