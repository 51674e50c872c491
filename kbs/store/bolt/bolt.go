// Package bolt is the embedded store.Store backend: one bbolt file, every value encrypted
// with the store key (see store.Sealer), every Update fsynced before it returns.
package bolt

import (
	"context"
	"errors"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/sealpod/sealpod/kbs/store"
)

// Store is a bbolt-backed store.Store.
type Store struct {
	db     *bbolt.DB
	sealer *store.Sealer
	path   string
}

var _ store.Store = (*Store)(nil)

// Options tune Open.
type Options struct {
	// LockTimeout bounds the wait for the file lock held by another process (default 5s).
	LockTimeout time.Duration
}

// Open opens (creating if needed, mode 0600) the bolt file at path with the store key. It
// fails with store.ErrWrongKey (wrapped) when key is not the key the store was created with.
func Open(path string, key []byte, opts *Options) (*Store, error) {
	sealer, err := store.NewSealer(key)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	timeout := 5 * time.Second
	if opts != nil && opts.LockTimeout > 0 {
		timeout = opts.LockTimeout
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: timeout, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: locked by another process (is another sealpod-kbs running?): %w", path, err)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{db: db, sealer: sealer, path: path}
	if err := store.EnsureKeyCheck(context.Background(), s); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

// Path returns the file path.
func (s *Store) Path() string { return s.path }

// View runs fn in a read-only transaction.
func (s *Store) View(ctx context.Context, fn func(tx store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(func(btx *bbolt.Tx) error { return fn(&tx{btx: btx, sealer: s.sealer}) })
}

// Update runs fn in a read-write transaction; the commit is fsynced before Update returns.
func (s *Store) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(btx *bbolt.Tx) error { return fn(&tx{btx: btx, sealer: s.sealer}) })
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

type tx struct {
	btx    *bbolt.Tx
	sealer *store.Sealer
}

func (t *tx) Get(bucket, key string) ([]byte, error) {
	b := t.btx.Bucket([]byte(bucket))
	if b == nil {
		return nil, store.ErrNotFound
	}
	v := b.Get([]byte(key))
	if v == nil {
		return nil, store.ErrNotFound
	}
	return t.sealer.Open(bucket, key, v)
}

func (t *tx) Put(bucket, key string, value []byte) error {
	if bucket == "" || key == "" {
		return fmt.Errorf("put %q/%q: bucket and key must not be empty", bucket, key)
	}
	b, err := t.btx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	if err := b.Put([]byte(key), t.sealer.Seal(bucket, key, value)); err != nil {
		return fmt.Errorf("put %s/%s: %w", bucket, key, err)
	}
	return nil
}

func (t *tx) Delete(bucket, key string) error {
	b := t.btx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	if err := b.Delete([]byte(key)); err != nil {
		return fmt.Errorf("delete %s/%s: %w", bucket, key, err)
	}
	return nil
}

func (t *tx) List(bucket string) ([]store.KV, error) {
	b := t.btx.Bucket([]byte(bucket))
	if b == nil {
		return nil, nil
	}
	var out []store.KV
	err := b.ForEach(func(k, v []byte) error {
		if v == nil { // nested bucket: not used by this store
			return nil
		}
		pt, err := t.sealer.Open(bucket, string(k), v)
		if err != nil {
			return err
		}
		out = append(out, store.KV{Key: string(k), Value: pt})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
