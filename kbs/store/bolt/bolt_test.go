package bolt

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/sealpod/sealpod/kbs/store"
	"github.com/sealpod/sealpod/kbs/store/storetest"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, store.KeySize) }

func openTemp(t *testing.T) store.Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "kbs.db"), testKey(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) { storetest.Run(t, openTemp) }

func TestEncryptionAtRest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kbs.db")
	s, err := Open(path, testKey(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	canary := []byte("CANARY-c0ffee-plaintext-must-not-hit-disk")
	if err := s.Update(context.Background(), func(tx store.Tx) error { return tx.Put("workloads", "w1", canary) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, canary) || bytes.Contains(raw, canary[:16]) {
		t.Fatal("the raw store file contains the plaintext canary")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("store file mode %04o, want 0600", fi.Mode().Perm())
	}
	// Reopen with the right key: the value is there.
	s, err = Open(path, testKey(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.View(context.Background(), func(tx store.Tx) error {
		v, err := tx.Get("workloads", "w1")
		if err != nil || !bytes.Equal(v, canary) {
			t.Errorf("after reopen: %q, %v", v, err)
		}
		return nil
	})
	s.Close()
}

func TestWrongKeyFailsToOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kbs.db")
	s, err := Open(path, testKey(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(path, testKey(2), nil)
	if !errors.Is(err, store.ErrWrongKey) {
		t.Fatalf("Open with wrong key: %v, want ErrWrongKey", err)
	}
	if !strings.Contains(err.Error(), "wrong store key") || !strings.Contains(err.Error(), path) {
		t.Errorf("error %q should say 'wrong store key' and name the file", err)
	}
	if _, err := Open(path, testKey(1)[:5], nil); err == nil {
		t.Fatal("Open with a 5-byte key succeeded")
	}
}

// TestSwappedCiphertextRejected swaps two raw values inside the bolt file (what an attacker
// with write access to the disk could do) and checks both reads fail authentication.
func TestSwappedCiphertextRejected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kbs.db")
	s, err := Open(path, testKey(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.Put("workloads", "alice", []byte("alice-key")); err != nil {
			return err
		}
		return tx.Put("workloads", "mallory", []byte("mallory-key"))
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("workloads"))
		a := append([]byte(nil), b.Get([]byte("alice"))...)
		m := append([]byte(nil), b.Get([]byte("mallory"))...)
		if err := b.Put([]byte("alice"), m); err != nil {
			return err
		}
		return b.Put([]byte("mallory"), a)
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err = Open(path, testKey(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, k := range []string{"alice", "mallory"} {
		err := s.View(ctx, func(tx store.Tx) error { _, err := tx.Get("workloads", k); return err })
		if !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("Get %s after swap: %v, want ErrCorrupt", k, err)
		}
	}
	err = s.View(ctx, func(tx store.Tx) error { _, err := tx.List("workloads"); return err })
	if !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("List after swap: %v, want ErrCorrupt", err)
	}
}

func TestSecondOpenerIsLockedOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kbs.db")
	s, err := Open(path, testKey(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(path, testKey(1), &Options{LockTimeout: 100_000_000}); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second Open: %v, want a lock error", err)
	}
}
