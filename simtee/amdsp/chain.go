// Package amdsp is the private half of Sealpod's simulated AMD-SP (the simtee component): it
// creates a node-local fake ARK/ASK/VCEK chain that follows AMD's KDS certificate profile,
// writes the roots file the broker trusts under --insecure-sim-roots (parsed by package
// simtee/simroots) and the node's signing key file, and signs SEV-SNP-format attestation
// reports (ABI version 3) with the VCEK. The broker verifies these reports with the very same
// SNP verification code as real ones, only against the sim roots.
//
// Nothing here is a TEE: the "guest" memory is visible to the host, which holds the signing
// key. It exists so the whole attestation chain runs on machines without SEV-SNP. The shim
// links it (it plays the hardware under `sim`); the agent and the broker's verifier do not.
package amdsp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/sealpod/sealpod/internal/atomicfile"
	"github.com/sealpod/sealpod/simtee/simroots"
)

// ProductLine is the AMD product line the sim chain imitates (the public roots' line);
// ProductName the VCEK's product.
const (
	ProductLine = simroots.ProductLine
	ProductName = "Milan-B0"
	// Milan B0 CPUID(1).EAX family/model/stepping as placed in a v3 report.
	fmsFamily   = 0x19
	fmsModel    = 0x01
	fmsStepping = 0x00

	pemVCEKKey = "SEALPOD SIM VCEK PRIVATE KEY"
)

// Options configure a new chain.
type Options struct {
	// RSABits is the ARK/ASK modulus size; AMD uses 4096 (the default).
	RSABits int
	// TCB is the TCB the VCEK is certified for and the signer reports.
	TCB kds.TCBParts
	// Validity of the certificates (default 25 years for ARK/ASK, 7 for the VCEK).
	NotBefore time.Time
}

// Chain is a freshly generated fake AMD chain. The ARK and ASK private keys are only needed
// to issue the VCEK and are not kept by WriteFiles.
type Chain struct {
	ARK, ASK, VCEK *x509.Certificate
	VCEKKey        *ecdsa.PrivateKey
	ChipID         [abi.ChipIDSize]byte
	TCB            kds.TCBParts
}

func amdName(cn, serial string) pkix.Name {
	return pkix.Name{
		Organization:       []string{"Advanced Micro Devices"},
		Country:            []string{"US"},
		OrganizationalUnit: []string{"Engineering"},
		Locality:           []string{"Santa Clara"},
		Province:           []string{"CA"},
		SerialNumber:       serial,
		CommonName:         cn,
	}
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
}

// vcekExtensions returns the KDS VCEK extensions (struct version, product name, TCB parts,
// HWID).
func vcekExtensions(tcb kds.TCBParts, hwid []byte) ([]pkix.Extension, error) {
	var exts []pkix.Extension
	add := func(oid asn1.ObjectIdentifier, v any, params string) error {
		b, err := asn1.MarshalWithParams(v, params)
		if err != nil {
			return fmt.Errorf("marshal VCEK extension %v: %w", oid, err)
		}
		exts = append(exts, pkix.Extension{Id: oid, Value: b})
		return nil
	}
	steps := []struct {
		oid    asn1.ObjectIdentifier
		v      any
		params string
	}{
		{kds.OidStructVersion, 0, ""},
		{kds.OidProductName1, ProductName, "ia5"},
		{kds.OidBlSpl, int(tcb.BlSpl), ""},
		{kds.OidTeeSpl, int(tcb.TeeSpl), ""},
		{kds.OidSnpSpl, int(tcb.SnpSpl), ""},
		{kds.OidSpl4, int(tcb.Spl4), ""},
		{kds.OidSpl5, int(tcb.Spl5), ""},
		{kds.OidSpl6, int(tcb.Spl6), ""},
		{kds.OidSpl7, int(tcb.Spl7), ""},
		{kds.OidUcodeSpl, int(tcb.UcodeSpl), ""},
		{kds.OidHwid, hwid, ""},
	}
	for _, s := range steps {
		if err := add(s.oid, s.v, s.params); err != nil {
			return nil, err
		}
	}
	return exts, nil
}

// NewChain generates ARK (self-signed RSA), ASK (RSA, signed by ARK) and VCEK (ECDSA P-384,
// signed by ASK) following the KDS profile for ProductLine, with a random chip id.
func NewChain(o Options) (*Chain, error) {
	bits := o.RSABits
	if bits == 0 {
		bits = 4096
	}
	nb := o.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-time.Hour)
	}
	if _, err := kds.ComposeTCBParts(o.TCB); err != nil {
		return nil, fmt.Errorf("sim chain TCB: %w", err)
	}
	arkKey, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("generate sim ARK key: %w", err)
	}
	askKey, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("generate sim ASK key: %w", err)
	}
	vcekKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate sim VCEK key: %w", err)
	}
	crl := kds.CrlLinkByRole(ProductLine, "ARK")

	arkSN, err := serial()
	if err != nil {
		return nil, err
	}
	arkTmpl := &x509.Certificate{
		Version:               3,
		SerialNumber:          arkSN,
		Subject:               amdName("ARK-"+ProductLine, fmt.Sprintf("%x", arkSN)),
		NotBefore:             nb,
		NotAfter:              nb.Add(25 * 365 * 24 * time.Hour),
		SignatureAlgorithm:    x509.SHA384WithRSAPSS,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		CRLDistributionPoints: []string{crl},
	}
	arkTmpl.Issuer = arkTmpl.Subject
	arkDER, err := x509.CreateCertificate(rand.Reader, arkTmpl, arkTmpl, &arkKey.PublicKey, arkKey)
	if err != nil {
		return nil, fmt.Errorf("create sim ARK certificate: %w", err)
	}
	ark, err := x509.ParseCertificate(arkDER)
	if err != nil {
		return nil, fmt.Errorf("parse sim ARK certificate: %w", err)
	}

	askSN, err := serial()
	if err != nil {
		return nil, err
	}
	askTmpl := &x509.Certificate{
		Version:               3,
		SerialNumber:          askSN,
		Subject:               amdName("SEV-"+ProductLine, fmt.Sprintf("%x", askSN)),
		NotBefore:             nb,
		NotAfter:              nb.Add(25 * 365 * 24 * time.Hour),
		SignatureAlgorithm:    x509.SHA384WithRSAPSS,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		CRLDistributionPoints: []string{crl},
	}
	askDER, err := x509.CreateCertificate(rand.Reader, askTmpl, ark, &askKey.PublicKey, arkKey)
	if err != nil {
		return nil, fmt.Errorf("create sim ASK certificate: %w", err)
	}
	ask, err := x509.ParseCertificate(askDER)
	if err != nil {
		return nil, fmt.Errorf("parse sim ASK certificate: %w", err)
	}

	var chip [abi.ChipIDSize]byte
	if _, err := rand.Read(chip[:]); err != nil {
		return nil, err
	}
	exts, err := vcekExtensions(o.TCB, chip[:])
	if err != nil {
		return nil, err
	}
	vcekSN, err := serial()
	if err != nil {
		return nil, err
	}
	vcekTmpl := &x509.Certificate{
		Version:            3,
		SerialNumber:       vcekSN,
		Subject:            amdName("SEV-VCEK", fmt.Sprintf("%x", vcekSN)),
		NotBefore:          nb,
		NotAfter:           nb.Add(7 * 365 * 24 * time.Hour),
		SignatureAlgorithm: x509.SHA384WithRSAPSS,
		ExtraExtensions:    exts,
	}
	vcekDER, err := x509.CreateCertificate(rand.Reader, vcekTmpl, ask, &vcekKey.PublicKey, askKey)
	if err != nil {
		return nil, fmt.Errorf("create sim VCEK certificate: %w", err)
	}
	vcek, err := x509.ParseCertificate(vcekDER)
	if err != nil {
		return nil, fmt.Errorf("parse sim VCEK certificate: %w", err)
	}
	return &Chain{ARK: ark, ASK: ask, VCEK: vcek, VCEKKey: vcekKey, ChipID: chip, TCB: o.TCB}, nil
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// RootsPEM is the --insecure-sim-roots file: ASK then ARK, PEM (AMD KDS cert_chain format).
func (c *Chain) RootsPEM() []byte { return append(pemCert(c.ASK), pemCert(c.ARK)...) }

// KeyPEM is the node's signing key file: the VCEK private key (PKCS#8) followed by the VCEK,
// ASK and ARK certificates.
func (c *Chain) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.VCEKKey)
	if err != nil {
		return nil, fmt.Errorf("marshal sim VCEK key: %w", err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: pemVCEKKey, Bytes: der})
	out = append(out, pemCert(c.VCEK)...)
	out = append(out, pemCert(c.ASK)...)
	return append(out, pemCert(c.ARK)...), nil
}

// Roots returns the chain's public roots, as the broker would load them from RootsPEM.
func (c *Chain) Roots() *simroots.Roots {
	return &simroots.Roots{ProductLine: ProductLine, ARK: c.ARK, ASK: c.ASK}
}

// WriteFiles writes the roots file (0644) and the signing key file (0600).
func (c *Chain) WriteFiles(rootsPath, keyPath string) error {
	keyPEM, err := c.KeyPEM()
	if err != nil {
		return err
	}
	if err := atomicfile.Write(rootsPath, c.RootsPEM(), 0o644); err != nil {
		return err
	}
	return atomicfile.Write(keyPath, keyPEM, 0o600)
}
