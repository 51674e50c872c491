package simroots_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"

	"github.com/sealpod/sealpod/simtee/amdsp"
	"github.com/sealpod/sealpod/simtee/simroots"
	"github.com/sealpod/sealpod/simtee/tdxqe"
)

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func TestParse(t *testing.T) {
	a, err := amdsp.NewChain(amdsp.Options{RSABits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	b, err := amdsp.NewChain(amdsp.Options{RSABits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	r, err := simroots.Parse(a.RootsPEM())
	if err != nil {
		t.Fatalf("Parse(chain roots): %v", err)
	}
	if r.ProductLine != simroots.ProductLine || !r.ARK.Equal(a.ARK) || !r.ASK.Equal(a.ASK) {
		t.Fatalf("roots %+v do not match the chain", r)
	}
	if tr := r.TrustedRoots()[simroots.ProductLine]; len(tr) != 1 || !tr[0].ProductCerts.Ark.Equal(a.ARK) {
		t.Fatalf("TrustedRoots: %+v", tr)
	}
	rejects := map[string][]byte{
		"empty":            nil,
		"ARK only":         pemCert(a.ARK),
		"swapped order":    append(pemCert(a.ARK), pemCert(a.ASK)...),
		"ASK of other ARK": append(pemCert(a.ASK), pemCert(b.ARK)...),
		"trailing":         append(a.RootsPEM(), []byte("x")...),
	}
	for name, data := range rejects {
		t.Run(name, func(t *testing.T) {
			if _, err := simroots.Parse(data); !errors.Is(err, simroots.ErrInvalid) {
				t.Fatalf("Parse error %v, want ErrInvalid", err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	c, err := amdsp.NewChain(amdsp.Options{RSABits: 2048})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(c.RootsPEM())
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := simroots.Parse(data)
		if err == nil && !bytes.Contains(data, []byte("CERTIFICATE")) {
			t.Fatalf("parsed roots %v from non-PEM input", r)
		}
	})
}

// TestParseIntelRoot: a roots file may end with the fake Intel root of sim-tdx, and with
// nothing else after the ARK.
func TestParseIntelRoot(t *testing.T) {
	a, err := amdsp.NewChain(amdsp.Options{RSABits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	intel, err := tdxqe.NewChain(tdxqe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := simroots.Parse(append(a.RootsPEM(), intel.RootPEM()...))
	if err != nil {
		t.Fatalf("Parse(AMD roots + Intel root): %v", err)
	}
	if r.IntelRoot == nil || !r.IntelRoot.Equal(intel.Root) || r.TDXRoots() == nil {
		t.Fatalf("Intel root not parsed: %+v", r)
	}
	if r, err := simroots.Parse(a.RootsPEM()); err != nil || r.IntelRoot != nil || r.TDXRoots() != nil {
		t.Fatalf("AMD roots only: %+v, %v", r, err)
	}
	rejects := map[string][]byte{
		"ASK as Intel root":       append(a.RootsPEM(), pemCert(a.ASK)...),
		"Intel PCK as root":       append(a.RootsPEM(), pemCert(intel.PCK)...),
		"two Intel roots":         append(append(a.RootsPEM(), intel.RootPEM()...), intel.RootPEM()...),
		"Intel root then garbage": append(append(a.RootsPEM(), intel.RootPEM()...), "garbage"...),
		"garbage after the ARK":   append(a.RootsPEM(), "garbage"...),
	}
	for name, data := range rejects {
		if _, err := simroots.Parse(data); !errors.Is(err, simroots.ErrInvalid) {
			t.Errorf("%s: Parse = %v, want ErrInvalid", name, err)
		}
	}
}
