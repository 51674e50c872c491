// Package simroots is the public half of Sealpod's simulated TEEs (the simtee component):
// the roots file that the key broker trusts, and only under --insecure-sim-roots — the fake
// ARK/ASK of `sim` evidence and, optionally, the fake Intel root of `sim-tdx` quotes. It holds no private key and signs nothing; the chain generator and the
// report signer are package simtee/amdsp, which the broker's verifier never needs.
package simroots

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/verify/trust"
)

// ProductLine is the AMD product line the sim chain imitates.
const ProductLine = "Milan"

// IntelRootCN is the common name of the fake Intel root of sim-tdx (simtee/tdxsim).
const IntelRootCN = "Intel SGX Root CA"

// Roots is a parsed --insecure-sim-roots file.
type Roots struct {
	ProductLine string
	ARK, ASK    *x509.Certificate
	// IntelRoot is the fake Intel SGX root of sim-tdx quotes, nil when the file has none
	// (then the broker accepts no sim-tdx evidence).
	IntelRoot *x509.Certificate
}

// ErrInvalid is wrapped by every roots-file parsing error.
var ErrInvalid = errors.New("invalid sim roots")

// Parse parses a roots file: ASK then ARK PEM (AMD KDS cert_chain format), optionally followed
// by the fake Intel root of sim-tdx (`sealpod-kbs sim-roots --tdx-key-out`). It checks that
// the ASK is signed by the ARK and that the ARK is self-signed, and derives the product line
// from the ARK's name; an Intel root must be a self-signed CA named IntelRootCN.
func Parse(data []byte) (*Roots, error) {
	amd, intel := splitAfter(data, 2)
	askDER, arkDER, err := kds.ParseProductCertChain(amd)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	ask, err := x509.ParseCertificate(askDER)
	if err != nil {
		return nil, fmt.Errorf("%w: ASK: %v", ErrInvalid, err)
	}
	ark, err := x509.ParseCertificate(arkDER)
	if err != nil {
		return nil, fmt.Errorf("%w: ARK: %v", ErrInvalid, err)
	}
	if err := ark.CheckSignatureFrom(ark); err != nil {
		return nil, fmt.Errorf("%w: ARK is not self-signed: %v", ErrInvalid, err)
	}
	if err := ask.CheckSignatureFrom(ark); err != nil {
		return nil, fmt.Errorf("%w: ASK is not signed by the ARK: %v", ErrInvalid, err)
	}
	line, ok := strings.CutPrefix(ark.Subject.CommonName, "ARK-")
	if !ok {
		return nil, fmt.Errorf("%w: ARK common name %q, want ARK-<product line>", ErrInvalid, ark.Subject.CommonName)
	}
	if _, err := kds.ParseProductLine(line); err != nil {
		return nil, fmt.Errorf("%w: ARK product line: %v", ErrInvalid, err)
	}
	r := &Roots{ProductLine: line, ARK: ark, ASK: ask}
	if len(intel) > 0 {
		if r.IntelRoot, err = parseIntelRoot(intel); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// splitAfter splits data after its n-th PEM block (data itself when it has fewer).
func splitAfter(data []byte, n int) (head, tail []byte) {
	rest := data
	for range n {
		b, r := pem.Decode(rest)
		if b == nil {
			return data, nil
		}
		rest = r
	}
	return data[:len(data)-len(rest)], rest
}

func parseIntelRoot(data []byte) (*x509.Certificate, error) {
	b, rest := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" || len(b.Headers) != 0 || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: after the ARK, want exactly one CERTIFICATE block (the sim-tdx Intel root)", ErrInvalid)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: Intel root: %v", ErrInvalid, err)
	}
	if c.Subject.CommonName != IntelRootCN || !c.IsCA {
		return nil, fmt.Errorf("%w: Intel root: common name %q (CA %v), want a CA named %q", ErrInvalid, c.Subject.CommonName, c.IsCA, IntelRootCN)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		return nil, fmt.Errorf("%w: Intel root is not self-signed: %v", ErrInvalid, err)
	}
	return c, nil
}

// TDXRoots returns the fake Intel root as go-tdx-guest's trusted roots, nil when there is none.
func (r *Roots) TDXRoots() *x509.CertPool {
	if r.IntelRoot == nil {
		return nil
	}
	p := x509.NewCertPool()
	p.AddCert(r.IntelRoot)
	return p
}

// Load reads and parses a roots file.
func Load(path string) (*Roots, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read sim roots %s: %w", path, err)
	}
	r, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("sim roots %s: %w", path, err)
	}
	return r, nil
}

// TrustedRoots returns the roots in go-sev-guest's verify.Options.TrustedRoots form.
func (r *Roots) TrustedRoots() map[string][]*trust.AMDRootCerts {
	return map[string][]*trust.AMDRootCerts{
		r.ProductLine: {{
			ProductLine:  r.ProductLine,
			ProductCerts: &trust.ProductCerts{Ark: r.ARK, Ask: r.ASK},
		}},
	}
}
