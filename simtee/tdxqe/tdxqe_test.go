package tdxqe

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func newChain(t testing.TB) *Chain {
	t.Helper()
	c, err := NewChain(Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestKeyFile: the node's key file round-trips, and a file whose key, chain or order is not
// the one WriteKeyFile writes is refused.
func TestKeyFile(t *testing.T) {
	c := newChain(t)
	path := filepath.Join(t.TempDir(), "pck.pem")
	if err := c.WriteKeyFile(path); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(path)
	if err != nil {
		t.Fatalf("LoadSigner: %v", err)
	}
	var rd [64]byte
	q, err := s.Quote(QuoteOptions{ReportData: rd})
	if err != nil || len(q) == 0 {
		t.Fatalf("Quote: %v", err)
	}
	good, err := c.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewChain(Options{})
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := other.KeyPEM()
	keyOnly := good[:strings.Index(string(good), "-----BEGIN CERTIFICATE")]
	rejects := map[string][]byte{
		"empty":               nil,
		"key only":            keyOnly,
		"chain only":          c.ChainPEM(),
		"key of another node": append(otherKey[:strings.Index(string(otherKey), "-----BEGIN CERTIFICATE")], c.ChainPEM()...),
		"swapped chain":       append(append([]byte(nil), keyOnly...), append(c.RootPEM(), c.ChainPEM()[:len(c.ChainPEM())-len(c.RootPEM())]...)...),
		"too large":           make([]byte, 1<<20),
	}
	for name, data := range rejects {
		if _, err := ParseKeyFile(data); !errors.Is(err, ErrKeyFile) {
			t.Errorf("%s: ParseKeyFile = %v, want ErrKeyFile", name, err)
		}
	}
}
