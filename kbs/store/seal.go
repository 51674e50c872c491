package store

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"
)

// KeySize is the size of the store key (XChaCha20-Poly1305).
const KeySize = chacha20poly1305.KeySize

// Value encryption format, shared by every backend:
//
//	sealed = 0x01 || nonce (24 bytes, random) || XChaCha20-Poly1305(key, nonce, value, ad)
//	ad     = "sealpod-kbs-store-v1" || u32be(len(bucket)) || bucket || u32be(len(key)) || key
//
// The associated data binds each value to its bucket and key, so a ciphertext copied to
// another key (or bucket) fails to open.
const (
	sealVersion = 0x01
	adDomain    = "sealpod-kbs-store-v1"
	// Overhead is the number of bytes a sealed value adds to its plaintext.
	Overhead = 1 + chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead
)

// Errors of value decryption and store opening.
var (
	// ErrCorrupt means a stored value failed authentication: tampered, swapped between keys,
	// truncated, or sealed under another key.
	ErrCorrupt = errors.New("store value corrupt or tampered")
	// ErrWrongKey means the store key does not open the store's key-check record.
	ErrWrongKey = errors.New("wrong store key: it does not decrypt this store")
)

// Reserved bucket and key of the key-check record (see EnsureKeyCheck).
const (
	MetaBucket  = "_meta"
	keyCheckKey = "keycheck"
	keyCheckVal = "sealpod-kbs-store-keycheck-v1"
)

// Sealer encrypts and authenticates values at rest.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer returns a sealer for a KeySize-byte key.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("store key: %d bytes, want %d", len(key), KeySize)
	}
	a, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("store key: %w", err)
	}
	return &Sealer{aead: a}, nil
}

func associatedData(bucket, key string) []byte {
	ad := make([]byte, 0, len(adDomain)+8+len(bucket)+len(key))
	ad = append(ad, adDomain...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(bucket)))
	ad = append(ad, bucket...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(key)))
	ad = append(ad, key...)
	return ad
}

// Seal encrypts value for (bucket, key).
func (s *Sealer) Seal(bucket, key string, value []byte) []byte {
	out := make([]byte, 1+chacha20poly1305.NonceSizeX, Overhead+len(value))
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		panic(fmt.Sprintf("store: read random nonce: %v", err))
	}
	return s.aead.Seal(out, out[1:], value, associatedData(bucket, key))
}

// Open decrypts a value sealed for (bucket, key); ErrCorrupt (wrapped, naming the bucket and
// key) when it does not authenticate.
func (s *Sealer) Open(bucket, key string, sealed []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%s/%s: %w (%d bytes, shorter than the %d-byte envelope)", bucket, key, ErrCorrupt, len(sealed), Overhead)
	}
	if sealed[0] != sealVersion {
		return nil, fmt.Errorf("%s/%s: %w (unknown format version %d)", bucket, key, ErrCorrupt, sealed[0])
	}
	nonce := sealed[1 : 1+chacha20poly1305.NonceSizeX]
	pt, err := s.aead.Open(nil, nonce, sealed[1+chacha20poly1305.NonceSizeX:], associatedData(bucket, key))
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", bucket, key, ErrCorrupt)
	}
	return pt, nil
}

// GenerateKey returns a new random store key.
func GenerateKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate store key: %w", err)
	}
	return k, nil
}

// ReadKeyFile reads a store key file: 64 hex characters (optionally followed by a newline) or
// exactly KeySize raw bytes. It refuses files readable by group or others.
func ReadKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("store key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("store key file %s: mode %04o is accessible by group/others (want 0600)", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("store key file: %w", err)
	}
	if len(b) == KeySize {
		return b, nil
	}
	s := strings.TrimSpace(string(b))
	k, err := hex.DecodeString(s)
	if err != nil || len(k) != KeySize {
		return nil, fmt.Errorf("store key file %s: want %d hex characters or %d raw bytes", path, 2*KeySize, KeySize)
	}
	return k, nil
}

// EnsureKeyCheck verifies that the store opens with its key: it reads the key-check record
// and returns ErrWrongKey when it does not decrypt; a new (empty) store gets the record.
// Backends call it when they open.
func EnsureKeyCheck(ctx context.Context, st Store) error {
	err := st.Update(ctx, func(tx Tx) error {
		v, err := tx.Get(MetaBucket, keyCheckKey)
		switch {
		case errors.Is(err, ErrNotFound):
			return tx.Put(MetaBucket, keyCheckKey, []byte(keyCheckVal))
		case errors.Is(err, ErrCorrupt):
			return ErrWrongKey
		case err != nil:
			return err
		case string(v) != keyCheckVal:
			return ErrWrongKey
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check store key: %w", err)
	}
	return nil
}
