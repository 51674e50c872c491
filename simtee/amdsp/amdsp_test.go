package amdsp

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	sevverify "github.com/google/go-sev-guest/verify"
	"github.com/sealpod/sealpod/simtee/simroots"
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
	r, err := simroots.Load(roots)
	if err != nil {
		t.Fatal(err)
	}
	want := c.Roots()
	if r.ProductLine != want.ProductLine || !r.ARK.Equal(want.ARK) || !r.ASK.Equal(want.ASK) {
		t.Fatalf("roots %+v do not match the chain's %+v", r, want)
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
