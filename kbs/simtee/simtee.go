// Package simtee is Sealpod's simulated AMD-SP: it creates a node-local fake ARK/ASK/VCEK
// chain that follows AMD's KDS certificate profile, writes the roots file the broker trusts
// under --insecure-sim-roots and the node's signing key file, and signs SEV-SNP-format
// attestation reports (ABI version 3) with the VCEK. The broker verifies these reports with the
// very same SNP verification code as real ones, only against the sim roots.
//
// Nothing here is a TEE: the "guest" memory is visible to the host. It exists so the whole
// attestation chain runs on machines without SEV-SNP.
package simtee

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"

	"github.com/sealpod/sealpod/internal/atomicfile"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/sealpod/sealpod/kbs/api"
)

// ProductLine is the AMD product line the sim chain imitates; ProductName the VCEK's product.
const (
	ProductLine = "Milan"
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

// Roots is a parsed --insecure-sim-roots file.
type Roots struct {
	ProductLine string
	ARK, ASK    *x509.Certificate
}

// ErrRoots is wrapped by every roots-file parsing error.
var ErrRoots = errors.New("invalid sim roots")

// ParseRoots parses a roots file (ASK then ARK PEM). It checks that the ASK is signed by the
// ARK and that the ARK is self-signed, and derives the product line from the ARK's name.
func ParseRoots(data []byte) (*Roots, error) {
	askDER, arkDER, err := kds.ParseProductCertChain(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRoots, err)
	}
	ask, err := x509.ParseCertificate(askDER)
	if err != nil {
		return nil, fmt.Errorf("%w: ASK: %v", ErrRoots, err)
	}
	ark, err := x509.ParseCertificate(arkDER)
	if err != nil {
		return nil, fmt.Errorf("%w: ARK: %v", ErrRoots, err)
	}
	if err := ark.CheckSignatureFrom(ark); err != nil {
		return nil, fmt.Errorf("%w: ARK is not self-signed: %v", ErrRoots, err)
	}
	if err := ask.CheckSignatureFrom(ark); err != nil {
		return nil, fmt.Errorf("%w: ASK is not signed by the ARK: %v", ErrRoots, err)
	}
	line, ok := strings.CutPrefix(ark.Subject.CommonName, "ARK-")
	if !ok {
		return nil, fmt.Errorf("%w: ARK common name %q, want ARK-<product line>", ErrRoots, ark.Subject.CommonName)
	}
	if _, err := kds.ParseProductLine(line); err != nil {
		return nil, fmt.Errorf("%w: ARK product line: %v", ErrRoots, err)
	}
	return &Roots{ProductLine: line, ARK: ark, ASK: ask}, nil
}

// LoadRoots reads and parses a roots file.
func LoadRoots(path string) (*Roots, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read sim roots %s: %w", path, err)
	}
	r, err := ParseRoots(data)
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

// Signer signs SNP-format attestation reports with a sim VCEK.
type Signer struct {
	key     *ecdsa.PrivateKey
	vcek    *x509.Certificate
	certTab []byte
	chipID  [abi.ChipIDSize]byte
	tcb     kds.TCBVersion
}

// NewSigner builds a signer from a chain.
func NewSigner(c *Chain) (*Signer, error) {
	return newSigner(c.VCEKKey, c.VCEK, c.ASK, c.ARK)
}

func guid(s string) [16]byte {
	var g [16]byte
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		panic("bad GUID constant " + s)
	}
	copy(g[:], b)
	return g
}

func newSigner(key *ecdsa.PrivateKey, vcek, ask, ark *x509.Certificate) (*Signer, error) {
	if !key.PublicKey.Equal(vcek.PublicKey) {
		return nil, errors.New("sim signer: VCEK certificate does not match the private key")
	}
	exts, err := kds.VcekCertificateExtensions(vcek)
	if err != nil {
		return nil, fmt.Errorf("sim signer: VCEK extensions: %w", err)
	}
	if len(exts.HWID) != abi.ChipIDSize {
		return nil, fmt.Errorf("sim signer: VCEK HWID is %d bytes, want %d", len(exts.HWID), abi.ChipIDSize)
	}
	s := &Signer{key: key, vcek: vcek, tcb: exts.TCBVersion}
	copy(s.chipID[:], exts.HWID)
	var table abi.CertTable
	add := func(g string, der []byte) {
		var e abi.CertTableEntry
		copy(e.GUID[:], func() []byte { x := guid(g); return x[:] }())
		e.RawCert = der
		table.Entries = append(table.Entries, e)
	}
	add(abi.VcekGUID, vcek.Raw)
	if ask != nil {
		add(abi.AskGUID, ask.Raw)
	}
	if ark != nil {
		add(abi.ArkGUID, ark.Raw)
	}
	s.certTab = table.Marshal()
	return s, nil
}

// LoadSigner reads a key file written by WriteFiles.
func LoadSigner(path string) (*Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read sim key %s: %w", path, err)
	}
	s, err := ParseSigner(data)
	if err != nil {
		return nil, fmt.Errorf("sim key %s: %w", path, err)
	}
	return s, nil
}

// ParseSigner parses a key file's contents.
func ParseSigner(data []byte) (*Signer, error) {
	var key *ecdsa.PrivateKey
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		switch b.Type {
		case pemVCEKKey:
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("VCEK key: %w", err)
			}
			ek, ok := k.(*ecdsa.PrivateKey)
			if !ok || ek.Curve != elliptic.P384() {
				return nil, errors.New("VCEK key: not an ECDSA P-384 key")
			}
			key = ek
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("certificate %d: %w", len(certs), err)
			}
			certs = append(certs, c)
		default:
			return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
		}
	}
	if key == nil || len(certs) != 3 {
		return nil, fmt.Errorf("want a VCEK key and 3 certificates (VCEK, ASK, ARK), got key=%v certificates=%d", key != nil, len(certs))
	}
	return newSigner(key, certs[0], certs[1], certs[2])
}

// ReportOptions are the guest-chosen and launch-bound values of one report.
type ReportOptions struct {
	ReportData  [64]byte
	Measurement [48]byte
	HostData    [32]byte
	Debug       bool
	GuestSVN    uint32
	VMPL        uint32
}

// Report returns a signed 1184-byte report (ABI version 3) and the certificate table
// (VCEK, ASK, ARK).
func (s *Signer) Report(o ReportOptions) (report, certTable []byte, err error) {
	r := make([]byte, abi.ReportSize)
	binary.LittleEndian.PutUint32(r[0x00:], 3)
	binary.LittleEndian.PutUint32(r[0x04:], o.GuestSVN)
	binary.LittleEndian.PutUint64(r[0x08:], abi.SnpPolicyToBytes(abi.SnpPolicy{SMT: true, Debug: o.Debug}))
	binary.LittleEndian.PutUint32(r[0x30:], o.VMPL)
	binary.LittleEndian.PutUint32(r[0x34:], abi.SignEcdsaP384Sha384)
	binary.LittleEndian.PutUint64(r[0x38:], uint64(s.tcb)) // CURRENT_TCB
	binary.LittleEndian.PutUint32(r[0x48:], abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.VcekReportSigner}))
	copy(r[0x50:0x90], o.ReportData[:])
	copy(r[0x90:0xC0], o.Measurement[:])
	copy(r[0xC0:0xE0], o.HostData[:])
	binary.LittleEndian.PutUint64(r[0x180:], uint64(s.tcb)) // REPORTED_TCB
	r[0x188], r[0x189], r[0x18A] = fmsFamily, fmsModel, fmsStepping
	copy(r[0x1A0:0x1E0], s.chipID[:])
	binary.LittleEndian.PutUint64(r[0x1E0:], uint64(s.tcb)) // COMMITTED_TCB
	r[0x1E8], r[0x1E9], r[0x1EA] = 1, 55, 1                 // current build, minor, major
	r[0x1EC], r[0x1ED], r[0x1EE] = 1, 55, 1                 // committed
	binary.LittleEndian.PutUint64(r[0x1F0:], uint64(s.tcb)) // LAUNCH_TCB
	if err := s.sign(r); err != nil {
		return nil, nil, err
	}
	return r, append([]byte(nil), s.certTab...), nil
}

func (s *Signer) sign(r []byte) error {
	digest := sha512.Sum384(abi.SignedComponent(r))
	R, S, err := ecdsa.Sign(rand.Reader, s.key, digest[:])
	if err != nil {
		return fmt.Errorf("sim sign report: %w", err)
	}
	if err := abi.SetSignature(R, S, r); err != nil {
		return fmt.Errorf("sim sign report: %w", err)
	}
	return nil
}

// Resign re-signs a (possibly modified) raw report in place; tests use it to build evidence
// with arbitrary field values and a valid signature.
func (s *Signer) Resign(report []byte) error {
	if len(report) != abi.ReportSize {
		return fmt.Errorf("sim resign: report is %d bytes, want %d", len(report), abi.ReportSize)
	}
	for i := 0x2A0; i < abi.ReportSize; i++ {
		report[i] = 0
	}
	return s.sign(report)
}

// Evidence builds the wire evidence for REPORT_DATA = api.ReportData(nonce, teePubKey).
func (s *Signer) Evidence(nonce, teePubKey []byte, measurement [48]byte, hostData [32]byte) (*api.Evidence, error) {
	rep, table, err := s.Report(ReportOptions{
		ReportData:  api.ReportData(nonce, teePubKey),
		Measurement: measurement,
		HostData:    hostData,
	})
	if err != nil {
		return nil, err
	}
	return &api.Evidence{SNP: &api.SNPEvidence{Report: rep, CertTable: table}}, nil
}

// VCEK returns the signer's VCEK certificate.
func (s *Signer) VCEK() *x509.Certificate { return s.vcek }

// TCB returns the TCB the signer reports.
func (s *Signer) TCB() kds.TCBParts { return kds.DecomposeTCBVersion(s.tcb) }

var _ crypto.Signer = (*ecdsa.PrivateKey)(nil)
