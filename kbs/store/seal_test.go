package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSealerRoundTripAndBinding(t *testing.T) {
	key := bytes.Repeat([]byte{7}, KeySize)
	s, err := NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	ct := s.Seal("b", "k", []byte("secret"))
	if bytes.Contains(ct, []byte("secret")) {
		t.Fatal("ciphertext contains the plaintext")
	}
	pt, err := s.Open("b", "k", ct)
	if err != nil || string(pt) != "secret" {
		t.Fatalf("Open = %q, %v", pt, err)
	}
	other, _ := NewSealer(bytes.Repeat([]byte{8}, KeySize))
	flipped := append([]byte(nil), ct...)
	flipped[len(flipped)-1] ^= 1
	for name, tc := range map[string]struct {
		s      *Sealer
		bucket string
		key    string
		ct     []byte
	}{
		"other key name":   {s, "b", "k2", ct},
		"other bucket":     {s, "b2", "k", ct},
		"bucket/key shift": {s, "bk", "", ct},
		"other store key":  {other, "b", "k", ct},
		"bit flip":         {s, "b", "k", flipped},
		"truncated":        {s, "b", "k", ct[:Overhead-1]},
		"bad version":      {s, "b", "k", append([]byte{9}, ct[1:]...)},
	} {
		if _, err := tc.s.Open(tc.bucket, tc.key, tc.ct); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Open error = %v, want ErrCorrupt", name, err)
		}
	}
	if _, err := NewSealer(key[:16]); err == nil {
		t.Error("NewSealer accepted a 16-byte key")
	}
}

func TestReadKeyFile(t *testing.T) {
	dir := t.TempDir()
	hexKey := bytes.Repeat([]byte("ab"), KeySize)
	tests := []struct {
		name    string
		data    []byte
		mode    os.FileMode
		wantErr bool
	}{
		{"hex", append(hexKey, '\n'), 0o600, false},
		{"raw", bytes.Repeat([]byte{1}, KeySize), 0o600, false},
		{"short", []byte("abcd"), 0o600, true},
		{"world readable", append(hexKey, '\n'), 0o644, true},
	}
	for _, tc := range tests {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, tc.data, tc.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, tc.mode)
		k, err := ReadKeyFile(p)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: err = %v, wantErr %v", tc.name, err, tc.wantErr)
		}
		if err == nil && len(k) != KeySize {
			t.Errorf("%s: key length %d", tc.name, len(k))
		}
	}
}

// FuzzSealerOpen feeds arbitrary stored values to the decoder: it must never panic and never
// accept anything but a value sealed for the same bucket and key.
func FuzzSealerOpen(f *testing.F) {
	s, _ := NewSealer(bytes.Repeat([]byte{3}, KeySize))
	f.Add("b", "k", s.Seal("b", "k", []byte("v")))
	f.Add("b", "k", []byte{})
	f.Add("workloads", "x", []byte{1, 2, 3})
	f.Add("b", "k", bytes.Repeat([]byte{1}, Overhead))
	f.Fuzz(func(t *testing.T, bucket, key string, data []byte) {
		pt, err := s.Open(bucket, key, data)
		if err == nil {
			// Only a genuine ciphertext opens; re-sealing must round-trip.
			again, err := s.Open(bucket, key, s.Seal(bucket, key, pt))
			if err != nil || !bytes.Equal(again, pt) {
				t.Fatalf("round trip failed: %v", err)
			}
		} else if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error %v is not ErrCorrupt", err)
		}
	})
}
