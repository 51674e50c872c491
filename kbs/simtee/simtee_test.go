package simtee

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	sevverify "github.com/google/go-sev-guest/verify"
)

func TestChainFilesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	c, err := NewChain(Options{RSABits: 2048, TCB: kds.TCBParts{SnpSpl: 5}})
	if err != nil {
		t.Fatal(err)
	}
	roots, key := filepath.Join(dir, "roots.pem"), filepath.Join(dir, "key.pem")
	if err := c.WriteFiles(roots, key); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
	r, err := LoadRoots(roots)
	if err != nil {
		t.Fatal(err)
	}
	if r.ProductLine != ProductLine || !r.ARK.Equal(c.ARK) || !r.ASK.Equal(c.ASK) {
		t.Fatalf("roots %+v do not match the chain", r)
	}
	s, err := LoadSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	if s.TCB() != c.TCB {
		t.Fatalf("signer TCB %+v, want %+v", s.TCB(), c.TCB)
	}
	rep, _, err := s.Report(ReportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep) != abi.ReportSize {
		t.Fatalf("report %d bytes", len(rep))
	}
	if err := sevverify.SnpReportSignature(rep, c.VCEK); err != nil {
		t.Fatalf("report signature: %v", err)
	}
	rep[0x90] ^= 1
	if err := sevverify.SnpReportSignature(rep, c.VCEK); err == nil {
		t.Fatal("modified report still verifies")
	}
	if err := s.Resign(rep); err != nil {
		t.Fatal(err)
	}
	if err := sevverify.SnpReportSignature(rep, c.VCEK); err != nil {
		t.Fatalf("resigned report: %v", err)
	}
}

func TestParseRootsRejects(t *testing.T) {
	a, err := NewChain(Options{RSABits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewChain(Options{RSABits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string][]byte{
		"empty":            nil,
		"ARK only":         pemCert(a.ARK),
		"swapped order":    append(pemCert(a.ARK), pemCert(a.ASK)...),
		"ASK of other ARK": append(pemCert(a.ASK), pemCert(b.ARK)...),
		"trailing":         append(a.RootsPEM(), []byte("x")...),
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseRoots(data); !errors.Is(err, ErrRoots) {
				t.Fatalf("ParseRoots error %v, want ErrRoots", err)
			}
		})
	}
}

func FuzzParseRoots(f *testing.F) {
	c, err := NewChain(Options{RSABits: 2048})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(c.RootsPEM())
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRoots(data)
		if err == nil && !bytes.Contains(data, []byte("CERTIFICATE")) {
			t.Fatalf("parsed roots %v from non-PEM input", r)
		}
	})
}
