// Package etcd is the replicated store.Store backend: state lives in an etcd cluster under a
// key prefix, so several key broker replicas can serve the same state. Values are encrypted
// with the store key exactly as in the bolt backend (store.Sealer).
//
// Transactions are optimistic: reads happen at one etcd revision, writes are buffered, and the
// commit is a single etcd Txn that compares the ModRevision of every key read (and of a
// per-bucket version key for every bucket listed) and applies the writes only if nothing
// changed; on conflict the transaction function runs again. This makes Update serialisable:
// concurrent registrations from two replicas never fork the history chain.
//
// Key layout: <prefix>/<bucket>/<key> for values, <prefix>/_v/<bucket> for bucket versions
// (bumped by every transaction that writes the bucket).
package etcd

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sealpod/sealpod/kbs/store"
)

// DefaultPrefix is used when no prefix is given.
const DefaultPrefix = "/sealpod-kbs"

// ErrConflict is returned when an Update kept conflicting with concurrent writers.
var ErrConflict = errors.New("etcd transaction conflict: too many retries")

const (
	maxAttempts     = 100
	versionBucket   = "_v"
	defaultDialWait = 5 * time.Second
)

// Options tune Open.
type Options struct {
	TLS         *tls.Config   // nil = plaintext (only for etcd on a trusted network / loopback)
	DialTimeout time.Duration // default 5s
	Username    string
	Password    string
}

// Store is an etcd-backed store.Store.
type Store struct {
	cli    *clientv3.Client
	prefix string
	sealer *store.Sealer
	id     string // random instance id written into bucket version keys
}

var _ store.Store = (*Store)(nil)

// Open connects to the etcd cluster at endpoints ("host:port" or URLs) and checks the store
// key against the key-check record under prefix (store.ErrWrongKey when it does not match).
func Open(ctx context.Context, endpoints []string, prefix string, key []byte, opts *Options) (*Store, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("open etcd store: no endpoints")
	}
	sealer, err := store.NewSealer(key)
	if err != nil {
		return nil, fmt.Errorf("open etcd store: %w", err)
	}
	prefix = strings.TrimRight(prefix, "/")
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasPrefix(prefix, "/") {
		prefix = "/" + prefix
	}
	if opts == nil {
		opts = &Options{}
	}
	dial := opts.DialTimeout
	if dial <= 0 {
		dial = defaultDialWait
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: dial,
		TLS:         opts.TLS,
		Username:    opts.Username,
		Password:    opts.Password,
		Logger:      zap.NewNop(),
		Context:     context.Background(),
	})
	if err != nil {
		return nil, fmt.Errorf("open etcd store %v: %w", endpoints, err)
	}
	var idb [8]byte
	if _, err := rand.Read(idb[:]); err != nil {
		cli.Close()
		return nil, fmt.Errorf("open etcd store: %w", err)
	}
	s := &Store{cli: cli, prefix: prefix, sealer: sealer, id: hex.EncodeToString(idb[:])}
	cctx, cancel := context.WithTimeout(ctx, dial)
	defer cancel()
	if err := store.EnsureKeyCheck(cctx, s); err != nil {
		cli.Close()
		return nil, fmt.Errorf("open etcd store %v%s: %w", endpoints, prefix, err)
	}
	return s, nil
}

// Close closes the client connection.
func (s *Store) Close() error { return s.cli.Close() }

func (s *Store) valueKey(bucket, key string) string { return s.prefix + "/" + bucket + "/" + key }
func (s *Store) bucketPrefix(bucket string) string  { return s.prefix + "/" + bucket + "/" }
func (s *Store) versionKey(bucket string) string {
	return s.prefix + "/" + versionBucket + "/" + bucket
}

func checkBucket(bucket string) error {
	if bucket == "" || strings.Contains(bucket, "/") || bucket == versionBucket {
		return fmt.Errorf("bucket %q: must be non-empty, without '/', and not %q", bucket, versionBucket)
	}
	return nil
}

// View runs fn against one consistent snapshot (a single etcd revision).
func (s *Store) View(ctx context.Context, fn func(tx store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return fn(&tx{s: s, ctx: ctx})
}

// Update runs fn optimistically and commits with one compare-and-swap Txn, retrying fn on
// conflict. When it returns nil the writes are committed by the etcd quorum.
func (s *Store) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		t := &tx{s: s, ctx: ctx, writable: true}
		if err := fn(t); err != nil {
			return err
		}
		ok, err := t.commit()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		// Conflict: back off with jitter, growing up to ~50ms.
		limit := int64(1+min(attempt, 50)) * int64(time.Millisecond)
		n, _ := rand.Int(rand.Reader, big.NewInt(limit))
		select {
		case <-time.After(time.Duration(n.Int64())):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return ErrConflict
}

type write struct {
	bucket, key string
	value       []byte // sealed; nil = delete
}

type tx struct {
	s        *Store
	ctx      context.Context
	writable bool

	rev     int64            // snapshot revision, 0 until the first read
	reads   map[string]int64 // full key -> ModRevision seen (0 = absent)
	listed  map[string]int64 // bucket -> ModRevision of its version key
	writes  map[string]*write
	order   []string // full keys in write order
	buckets map[string]bool
}

func (t *tx) get(key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	// The first read is linearizable; its header revision becomes the snapshot of the rest.
	if t.rev > 0 {
		opts = append(opts, clientv3.WithRev(t.rev))
	}
	resp, err := t.s.cli.Get(t.ctx, key, opts...)
	if err != nil {
		return nil, err
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	return resp, nil
}

func (t *tx) Get(bucket, key string) ([]byte, error) {
	if err := checkBucket(bucket); err != nil {
		return nil, err
	}
	fk := t.s.valueKey(bucket, key)
	if w, ok := t.writes[fk]; ok {
		if w.value == nil {
			return nil, store.ErrNotFound
		}
		return t.s.sealer.Open(bucket, key, w.value)
	}
	resp, err := t.get(fk)
	if err != nil {
		return nil, fmt.Errorf("etcd get %s/%s: %w", bucket, key, err)
	}
	if t.writable {
		if t.reads == nil {
			t.reads = map[string]int64{}
		}
		var mod int64
		if len(resp.Kvs) > 0 {
			mod = resp.Kvs[0].ModRevision
		}
		t.reads[fk] = mod
	}
	if len(resp.Kvs) == 0 {
		return nil, store.ErrNotFound
	}
	return t.s.sealer.Open(bucket, key, resp.Kvs[0].Value)
}

func (t *tx) List(bucket string) ([]store.KV, error) {
	if err := checkBucket(bucket); err != nil {
		return nil, err
	}
	bp := t.s.bucketPrefix(bucket)
	resp, err := t.get(bp, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("etcd list %s: %w", bucket, err)
	}
	if t.writable {
		vr, err := t.get(t.s.versionKey(bucket))
		if err != nil {
			return nil, fmt.Errorf("etcd list %s: %w", bucket, err)
		}
		var mod int64
		if len(vr.Kvs) > 0 {
			mod = vr.Kvs[0].ModRevision
		}
		if t.listed == nil {
			t.listed = map[string]int64{}
		}
		t.listed[bucket] = mod
	}
	merged := map[string][]byte{}
	for _, kv := range resp.Kvs {
		merged[strings.TrimPrefix(string(kv.Key), bp)] = kv.Value
	}
	for _, w := range t.writes {
		if w.bucket != bucket {
			continue
		}
		if w.value == nil {
			delete(merged, w.key)
		} else {
			merged[w.key] = w.value
		}
	}
	keys := make([]string, 0, len(merged))
	for k := range merged {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]store.KV, 0, len(keys))
	for _, k := range keys {
		pt, err := t.s.sealer.Open(bucket, k, merged[k])
		if err != nil {
			return nil, err
		}
		out = append(out, store.KV{Key: k, Value: pt})
	}
	return out, nil
}

func (t *tx) put(bucket, key string, sealed []byte) error {
	if !t.writable {
		return fmt.Errorf("write %s/%s: read-only transaction", bucket, key)
	}
	if err := checkBucket(bucket); err != nil {
		return err
	}
	if key == "" {
		return fmt.Errorf("write %s: empty key", bucket)
	}
	if t.writes == nil {
		t.writes = map[string]*write{}
		t.buckets = map[string]bool{}
	}
	fk := t.s.valueKey(bucket, key)
	if _, ok := t.writes[fk]; !ok {
		t.order = append(t.order, fk)
	}
	t.writes[fk] = &write{bucket: bucket, key: key, value: sealed}
	t.buckets[bucket] = true
	return nil
}

func (t *tx) Put(bucket, key string, value []byte) error {
	return t.put(bucket, key, t.s.sealer.Seal(bucket, key, value))
}

func (t *tx) Delete(bucket, key string) error { return t.put(bucket, key, nil) }

// commit applies the buffered writes if nothing read changed; false means conflict.
func (t *tx) commit() (bool, error) {
	if len(t.writes) == 0 {
		return true, nil
	}
	var cmps []clientv3.Cmp
	for fk, mod := range t.reads {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(fk), "=", mod))
	}
	for b, mod := range t.listed {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(t.s.versionKey(b)), "=", mod))
	}
	ops := make([]clientv3.Op, 0, len(t.order)+len(t.buckets))
	for _, fk := range t.order {
		w := t.writes[fk]
		if w.value == nil {
			ops = append(ops, clientv3.OpDelete(fk))
		} else {
			ops = append(ops, clientv3.OpPut(fk, string(w.value)))
		}
	}
	for b := range t.buckets {
		ops = append(ops, clientv3.OpPut(t.s.versionKey(b), t.s.id))
	}
	resp, err := t.s.cli.Txn(t.ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("etcd commit (%d writes): %w", len(ops), err)
	}
	return resp.Succeeded, nil
}
