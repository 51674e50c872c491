// Package tdxqe is the signing half of Sealpod's simulated TDX (`sim-tdx`, the simtee
// component): a node-local fake Intel PCK certificate chain (Intel SGX Root CA → Intel SGX
// PCK Platform CA → Intel SGX PCK Certificate with the SGX extensions), the node's key file,
// and a signer that plays TDX module and quoting enclave, producing real TDX version 4 quotes
// (header, TD quote body, an ECDSA P-256 attestation key bound by a QE report that the PCK key
// signs, certification data type 6 carrying the PCK chain as type 5) that go-tdx-guest's
// verifier accepts under the fake root. Package simtee/tdxsim serves them to the guest;
// `sealpod-kbs sim-roots` makes the chain (so this package imports no guest or agent code).
//
// INSECURE BY CONSTRUCTION: the host holds the PCK and attestation keys and can read and
// write the "TD"'s memory; a sim-tdx quote proves nothing about confidentiality. It exists so
// that CI and demos run the key broker's real TDX verifier (the MRCONFIGID binding, the RTMR
// policy) end to end on machines without TDX. The broker trusts the fake root only under
// --insecure-sim-roots, and only for workloads registered for sim-tdx. The agent and the
// broker's verifier never link this package.
package tdxqe

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"

	"github.com/google/go-tdx-guest/pcs"
	"github.com/sealpod/sealpod/internal/atomicfile"
)

// Certificate common names go-tdx-guest's verifier requires of the PCK chain.
const (
	RootCN       = "Intel SGX Root CA"
	PlatformCACN = "Intel SGX PCK Platform CA"
	PCKCN        = "Intel SGX PCK Certificate"
)

// pemPCKKey is the PEM type of the PCK private key in the node's key file.
const pemPCKKey = "SEALPOD SIM TDX PCK PRIVATE KEY"

// Fixed platform identity the fake PCK certificate carries (values of the SGX extensions).
var (
	simFMSPC = []byte{0x5e, 0xa0, 0x6f, 0x00, 0x00, 0x00}
	simPCEID = []byte{0x00, 0x00}
	// simCPUSVN are the 16 SGX TCB components; simPCESVN the PCE SVN.
	simCPUSVN = []byte{3, 3, 2, 2, 4, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0}
)

const simPCESVN = 13

// Options configure a new chain.
type Options struct {
	// NotBefore is the start of every certificate's validity (default: now − 1 h). The root
	// and the platform CA are valid 25 years, the PCK certificate 7.
	NotBefore time.Time
}

// Chain is a freshly generated fake Intel PCK chain. The root and platform CA keys are only
// needed to issue the PCK certificate and are not kept.
type Chain struct {
	Root, PlatformCA, PCK *x509.Certificate
	PCKKey                *ecdsa.PrivateKey
}

func intelName(cn string) pkix.Name {
	return pkix.Name{CommonName: cn, Organization: []string{"Intel Corporation"}, Locality: []string{"Santa Clara"},
		Province: []string{"CA"}, Country: []string{"US"}}
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
}

// sgxExtension returns the DER of the SGX extension (OID 1.2.840.113741.1.13.1) of a PCK
// certificate: PPID, TCB (16 SGX TCB components, PCESVN, CPUSVN), PCE-ID, FMSPC and SGX type,
// the layout go-tdx-guest's pcs.PckCertificateExtensions parses.
func sgxExtension(ppid []byte) ([]byte, error) {
	type octets struct {
		ID    asn1.ObjectIdentifier
		Value []byte
	}
	type integer struct {
		ID    asn1.ObjectIdentifier
		Value int
	}
	type enumerated struct {
		ID    asn1.ObjectIdentifier
		Value asn1.Enumerated
	}
	var tcb []any
	for i, c := range simCPUSVN {
		tcb = append(tcb, integer{append(append(asn1.ObjectIdentifier(nil), pcs.OidTCB...), i+1), int(c)})
	}
	tcb = append(tcb, integer{pcs.OidPCESvn, simPCESVN}, octets{pcs.OidCPUSvn, simCPUSVN})
	tcbDER, err := asn1.Marshal(tcb)
	if err != nil {
		return nil, err
	}
	type tcbEntry struct {
		ID    asn1.ObjectIdentifier
		Value asn1.RawValue
	}
	sgxType := asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 5}
	return asn1.Marshal([]any{
		octets{pcs.OidPPID, ppid},
		tcbEntry{pcs.OidTCB, asn1.RawValue{FullBytes: tcbDER}},
		octets{pcs.OidPCEID, simPCEID},
		octets{pcs.OidFMSPC, simFMSPC},
		enumerated{sgxType, 0}, // Standard
	})
}

// NewChain generates a fake Intel chain: P-256 keys, ECDSA-SHA256 signatures and the names,
// extensions and key usages go-tdx-guest's verifier checks.
func NewChain(o Options) (*Chain, error) {
	nb := o.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-time.Hour)
	}
	key := func() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }
	rootKey, err := key()
	if err != nil {
		return nil, err
	}
	caKey, err := key()
	if err != nil {
		return nil, err
	}
	pckKey, err := key()
	if err != nil {
		return nil, err
	}
	issue := func(what string, tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) (*x509.Certificate, error) {
		sn, err := serial()
		if err != nil {
			return nil, err
		}
		tmpl.SerialNumber = sn
		tmpl.SignatureAlgorithm = x509.ECDSAWithSHA256
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			return nil, fmt.Errorf("create sim-tdx %s certificate: %w", what, err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("parse sim-tdx %s certificate: %w", what, err)
		}
		return c, nil
	}
	const year = 365 * 24 * time.Hour
	root, err := issue("root", &x509.Certificate{Subject: intelName(RootCN), NotBefore: nb, NotAfter: nb.Add(25 * year),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		CRLDistributionPoints: []string{"https://sealpod.invalid/sim-tdx/root.crl"}}, nil, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	ca, err := issue("platform CA", &x509.Certificate{Subject: intelName(PlatformCACN), NotBefore: nb, NotAfter: nb.Add(25 * year),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		CRLDistributionPoints: []string{"https://sealpod.invalid/sim-tdx/root.crl"}}, root, &caKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	ppid := make([]byte, 16)
	if _, err := rand.Read(ppid); err != nil {
		return nil, err
	}
	ext, err := sgxExtension(ppid)
	if err != nil {
		return nil, fmt.Errorf("sim-tdx PCK SGX extension: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&pckKey.PublicKey)
	if err != nil {
		return nil, err
	}
	skid := sha256.Sum256(pub)
	// Six extensions, as Intel's PCK certificates and go-tdx-guest expect: authority and
	// subject key ids, CRL distribution points, key usage, basic constraints, SGX extension.
	pck, err := issue("PCK", &x509.Certificate{Subject: intelName(PCKCN), NotBefore: nb, NotAfter: nb.Add(7 * year),
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		SubjectKeyId: skid[:20], CRLDistributionPoints: []string{"https://sealpod.invalid/sim-tdx/pckcrl"},
		ExtraExtensions: []pkix.Extension{{Id: pcs.OidSgxExtension, Value: ext}}}, ca, &pckKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	if _, err := pcs.PckCertificateExtensions(pck); err != nil {
		return nil, fmt.Errorf("sim-tdx PCK certificate: %w", err)
	}
	return &Chain{Root: root, PlatformCA: ca, PCK: pck, PCKKey: pckKey}, nil
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// RootPEM is the fake Intel root, PEM: what `sealpod-kbs sim-roots` appends to the roots file
// of --insecure-sim-roots (package simtee/simroots parses it).
func (c *Chain) RootPEM() []byte { return pemCert(c.Root) }

// ChainPEM is the PCK certificate chain as a quote carries it: PCK, platform CA, root.
func (c *Chain) ChainPEM() []byte {
	return append(append(pemCert(c.PCK), pemCert(c.PlatformCA)...), pemCert(c.Root)...)
}

// Roots returns the root as the broker's verifier trusts it (tdx.Config.TrustedRoots).
func (c *Chain) Roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Root)
	return p
}

// KeyPEM is the node's signing key file: the PCK private key (PKCS#8) followed by ChainPEM.
func (c *Chain) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.PCKKey)
	if err != nil {
		return nil, fmt.Errorf("marshal sim-tdx PCK key: %w", err)
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: pemPCKKey, Bytes: der}), c.ChainPEM()...), nil
}

// WriteKeyFile writes KeyPEM to path (0600, atomically).
func (c *Chain) WriteKeyFile(path string) error {
	b, err := c.KeyPEM()
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// maxKeyFile bounds the key file LoadSigner reads.
const maxKeyFile = 64 << 10

// ErrKeyFile is wrapped by every key-file error.
var ErrKeyFile = errors.New("invalid sim-tdx key file")

// ParseKeyFile parses a key file written by WriteKeyFile: the PCK key, then the PCK, platform
// CA and root certificates, each signed by the next and the root self-signed, the PCK
// certificate for the key.
func ParseKeyFile(data []byte) (*Chain, error) {
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrKeyFile, len(data), maxKeyFile)
	}
	var blocks []*pem.Block
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		blocks = append(blocks, b)
	}
	if len(blocks) != 4 || blocks[0].Type != pemPCKKey {
		return nil, fmt.Errorf("%w: want a %q block and three certificates", ErrKeyFile, pemPCKKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(blocks[0].Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: PCK key: %v", ErrKeyFile, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: PCK key is %T, want ECDSA P-256", ErrKeyFile, k)
	}
	var certs [3]*x509.Certificate
	for i, b := range blocks[1:] {
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: block %d is %q, want CERTIFICATE", ErrKeyFile, i+2, b.Type)
		}
		if certs[i], err = x509.ParseCertificate(b.Bytes); err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %v", ErrKeyFile, i+1, err)
		}
	}
	c := &Chain{PCK: certs[0], PlatformCA: certs[1], Root: certs[2], PCKKey: key}
	if !key.PublicKey.Equal(c.PCK.PublicKey) {
		return nil, fmt.Errorf("%w: the PCK certificate is not for the key", ErrKeyFile)
	}
	for _, l := range []struct {
		what          string
		child, parent *x509.Certificate
	}{{"PCK", c.PCK, c.PlatformCA}, {"platform CA", c.PlatformCA, c.Root}, {"root", c.Root, c.Root}} {
		if err := l.child.CheckSignatureFrom(l.parent); err != nil {
			return nil, fmt.Errorf("%w: %s certificate: %v", ErrKeyFile, l.what, err)
		}
	}
	return c, nil
}

// LoadSigner reads the node's key file (`sealpod-kbs sim-roots --tdx-key-out`) and returns a
// signer with a fresh attestation key.
func LoadSigner(path string) (*Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sim-tdx key %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("sim-tdx key %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxKeyFile {
		return nil, fmt.Errorf("sim-tdx key %s: %w: want a regular file of at most %d bytes", path, ErrKeyFile, maxKeyFile)
	}
	data := make([]byte, fi.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("sim-tdx key %s: %w", path, err)
	}
	c, err := ParseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("sim-tdx key %s: %w", path, err)
	}
	return NewSigner(c)
}
