// Package simroots is the public half of Sealpod's simulated AMD-SP (the simtee component):
// the fake ARK/ASK roots file that the key broker trusts for `sim` evidence, and only under
// --insecure-sim-roots. It holds no private key and signs nothing; the chain generator and the
// report signer are package simtee/amdsp, which the broker's verifier never needs.
package simroots

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/verify/trust"
)

// ProductLine is the AMD product line the sim chain imitates.
const ProductLine = "Milan"

// Roots is a parsed --insecure-sim-roots file.
type Roots struct {
	ProductLine string
	ARK, ASK    *x509.Certificate
}

// ErrInvalid is wrapped by every roots-file parsing error.
var ErrInvalid = errors.New("invalid sim roots")

// Parse parses a roots file (ASK then ARK PEM, AMD KDS cert_chain format). It checks that the
// ASK is signed by the ARK and that the ARK is self-signed, and derives the product line from
// the ARK's name.
func Parse(data []byte) (*Roots, error) {
	askDER, arkDER, err := kds.ParseProductCertChain(data)
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
	return &Roots{ProductLine: line, ARK: ark, ASK: ask}, nil
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
