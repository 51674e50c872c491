// Package store is the key broker's persistent state: a small transactional key-value
// interface with an embedded (bbolt) and a replicated (etcd) implementation.
package store

import (
	"context"
	"errors"
)

// ErrNotFound is returned by Get when the key does not exist.
var ErrNotFound = errors.New("not found")

// KV is one key and its value.
type KV struct {
	Key   string
	Value []byte
}

// Tx is a serialisable read-write transaction. Values are opaque bytes; implementations
// encrypt them at rest.
type Tx interface {
	Get(bucket, key string) ([]byte, error) // ErrNotFound when absent
	Put(bucket, key string, value []byte) error
	Delete(bucket, key string) error
	// List returns every key of a bucket in ascending key order.
	List(bucket string) ([]KV, error)
}

// Store is the interface every backend implements.
type Store interface {
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(tx Tx) error) error
	// Update runs fn atomically; when it returns nil the writes are durable (fsynced /
	// committed by a quorum) before Update returns. Backends with optimistic concurrency
	// may call fn more than once, so fn must have no side effects outside tx.
	Update(ctx context.Context, fn func(tx Tx) error) error
	Close() error
}
