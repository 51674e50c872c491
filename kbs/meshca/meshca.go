// Package meshca is the workload (mesh) certificate authority of the key broker: a root and
// an intermediate created at `sealpod-kbs init`; the broker issues leaf certificates, signed
// by the intermediate, only to attested guests and only with the SANs the owner registered.
package meshca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"

	"github.com/sealpod/sealpod/kbs/registry"
)

// Validity bounds for leaf certificates.
const (
	DefaultValidity = 24 * time.Hour
	MinValidity     = 5 * time.Minute
	MaxValidity     = 397 * 24 * time.Hour
	// clockSkew backdates NotBefore so that guests with a slightly late clock accept the leaf.
	clockSkew = 5 * time.Minute

	maxCommonName = 64

	DefaultRootValidity         = 10 * 365 * 24 * time.Hour
	DefaultIntermediateValidity = 3 * 365 * 24 * time.Hour
)

// Errors callers can branch on.
var (
	ErrBadCSR     = errors.New("bad certificate signing request")
	ErrBadRequest = errors.New("bad certificate request")
)

// CA issues workload certificates with its intermediate key.
type CA struct {
	root         *x509.Certificate
	intermediate *x509.Certificate
	key          crypto.Signer
	rootPEM      []byte
	bundlePEM    []byte
	now          func() time.Time
}

// Material is the PEM output of Generate, written to disk by the setup package. The root key
// is not needed to run the CA (Load takes only the intermediate key); keep it offline.
type Material struct {
	RootCertPEM         []byte
	RootKeyPEM          []byte
	IntermediateCertPEM []byte
	IntermediateKeyPEM  []byte
}

// Generate creates a new ECDSA P-256 root and an intermediate signed by it. name goes into
// the subjects ("<name> Root CA", "<name> Intermediate CA").
func Generate(name string, rootValidity, intermediateValidity time.Duration) (*Material, error) {
	if rootValidity <= 0 {
		rootValidity = DefaultRootValidity
	}
	if intermediateValidity <= 0 {
		intermediateValidity = DefaultIntermediateValidity
	}
	if intermediateValidity > rootValidity {
		return nil, fmt.Errorf("mesh CA: intermediate validity %s exceeds root validity %s", intermediateValidity, rootValidity)
	}
	now := time.Now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("mesh CA: generate root key: %w", err)
	}
	rootTmpl := &x509.Certificate{
		SerialNumber:          mustSerial(),
		Subject:               pkix.Name{CommonName: name + " Root CA", Organization: []string{"Sealpod"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(rootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("mesh CA: create root certificate: %w", err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	intKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("mesh CA: generate intermediate key: %w", err)
	}
	intTmpl := &x509.Certificate{
		SerialNumber:          mustSerial(),
		Subject:               pkix.Name{CommonName: name + " Intermediate CA", Organization: []string{"Sealpod"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(intermediateValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	intDER, err := x509.CreateCertificate(rand.Reader, intTmpl, root, &intKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("mesh CA: create intermediate certificate: %w", err)
	}
	rk, err := x509.MarshalPKCS8PrivateKey(rootKey)
	if err != nil {
		return nil, fmt.Errorf("mesh CA: encode root key: %w", err)
	}
	ik, err := x509.MarshalPKCS8PrivateKey(intKey)
	if err != nil {
		return nil, fmt.Errorf("mesh CA: encode intermediate key: %w", err)
	}
	return &Material{
		RootCertPEM:         pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}),
		RootKeyPEM:          pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rk}),
		IntermediateCertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: intDER}),
		IntermediateKeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ik}),
	}, nil
}

func mustSerial() *big.Int {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("meshca: read random serial: %v", err))
	}
	return s.Add(s, big.NewInt(1))
}

func parseCertPEM(what string, b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("mesh CA: %s: no PEM CERTIFICATE block", what)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("mesh CA: %s: %w", what, err)
	}
	return c, nil
}

// Load builds a CA from the root certificate, the intermediate certificate and the
// intermediate's PKCS#8 private key (PEM). It checks that the intermediate chains to the root
// and that the key matches.
func Load(rootCertPEM, intermediateCertPEM, intermediateKeyPEM []byte) (*CA, error) {
	root, err := parseCertPEM("root certificate", rootCertPEM)
	if err != nil {
		return nil, err
	}
	inter, err := parseCertPEM("intermediate certificate", intermediateCertPEM)
	if err != nil {
		return nil, err
	}
	if !root.IsCA || !inter.IsCA {
		return nil, errors.New("mesh CA: root and intermediate must be CA certificates")
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("mesh CA: intermediate is not signed by the root: %w", err)
	}
	blk, _ := pem.Decode(intermediateKeyPEM)
	if blk == nil {
		return nil, errors.New("mesh CA: intermediate key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("mesh CA: intermediate key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("mesh CA: intermediate key type %T cannot sign", k)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(signer.Public())
	if !bytes.Equal(pubDER, inter.RawSubjectPublicKeyInfo) {
		return nil, errors.New("mesh CA: intermediate key does not match the intermediate certificate")
	}
	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})
	interPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: inter.Raw})
	return &CA{
		root:         root,
		intermediate: inter,
		key:          signer,
		rootPEM:      rootPEM,
		bundlePEM:    append(append([]byte{}, interPEM...), rootPEM...),
		now:          time.Now,
	}, nil
}

// Root returns the root certificate.
func (c *CA) Root() *x509.Certificate { return c.root }

// Intermediate returns the intermediate certificate.
func (c *CA) Intermediate() *x509.Certificate { return c.intermediate }

// RootPEM returns the root certificate, PEM encoded.
func (c *CA) RootPEM() []byte { return append([]byte(nil), c.rootPEM...) }

// BundlePEM returns the intermediate followed by the root, PEM encoded.
func (c *CA) BundlePEM() []byte { return append([]byte(nil), c.bundlePEM...) }

// ParseCSR parses a DER CSR and verifies its self-signature (proof of possession of the key).
func ParseCSR(csrDER []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("%w: ECDSA curve %s not allowed (P-256 or P-384)", ErrBadCSR, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA key of %d bits (minimum 2048)", ErrBadCSR, k.N.BitLen())
		}
	default:
		return nil, fmt.Errorf("%w: public key type %T not allowed", ErrBadCSR, csr.PublicKey)
	}
	return csr, nil
}

// Issue verifies the CSR's self-signature (proof of possession), ignores any SANs and subject
// in the CSR and puts exactly `sans` (and commonName, if at most 64 characters) into the leaf; it returns the DER chain
// leaf, intermediate (root excluded). validity 0 means DefaultValidity; it must lie in
// [MinValidity, MaxValidity] and the leaf never outlives the intermediate.
func (c *CA) Issue(csrDER []byte, commonName string, sans []string, validity time.Duration) ([][]byte, error) {
	csr, err := ParseCSR(csrDER)
	if err != nil {
		return nil, err
	}
	return c.IssueForKey(csr.PublicKey, commonName, sans, validity)
}

// IssueForKey issues a leaf for pub; callers must have established proof of possession (Issue
// does so from a CSR).
func (c *CA) IssueForKey(pub crypto.PublicKey, commonName string, sans []string, validity time.Duration) ([][]byte, error) {
	tmpl, err := c.leafTemplate(pub, commonName, sans, validity)
	if err != nil {
		return nil, err
	}
	der, err := c.signLeaf(tmpl, pub)
	if err != nil {
		return nil, fmt.Errorf("mesh CA: sign leaf for %q: %w", tmpl.Subject.CommonName, err)
	}
	return [][]byte{der, append([]byte(nil), c.intermediate.Raw...)}, nil
}

// leafTemplate validates the request and fills the leaf template (serial, subject, validity,
// usages, SANs).
func (c *CA) leafTemplate(pub crypto.PublicKey, commonName string, sans []string, validity time.Duration) (*x509.Certificate, error) {
	if validity == 0 {
		validity = DefaultValidity
	}
	if validity < MinValidity || validity > MaxValidity {
		return nil, fmt.Errorf("%w: validity %s outside [%s, %s]", ErrBadRequest, validity, MinValidity, MaxValidity)
	}
	if len(commonName) > maxCommonName {
		// X.509 bounds the CN at 64 characters (RFC 5280 ub-common-name); workload ids may be
		// longer. The SANs carry the identity, so the CN is left out rather than refused.
		commonName = ""
	}
	if len(sans) == 0 {
		return nil, fmt.Errorf("%w: no SANs (the workload has none registered)", ErrBadRequest)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          mustSerial(),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Sealpod workload"}},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if _, ok := pub.(*rsa.PublicKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	for i, s := range sans {
		kind, err := registry.ParseSAN(s)
		if err != nil {
			return nil, fmt.Errorf("%w: sans[%d]: %v", ErrBadRequest, i, err)
		}
		switch kind {
		case registry.SANIP:
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(s))
		case registry.SANURI:
			u, err := url.Parse(s)
			if err != nil {
				return nil, fmt.Errorf("%w: sans[%d]: %v", ErrBadRequest, i, err)
			}
			tmpl.URIs = append(tmpl.URIs, u)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	now := c.now()
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(validity)
	if tmpl.NotAfter.After(c.intermediate.NotAfter) {
		tmpl.NotAfter = c.intermediate.NotAfter
	}
	if !now.Before(c.intermediate.NotAfter) {
		return nil, fmt.Errorf("mesh CA: intermediate expired at %s", c.intermediate.NotAfter)
	}
	return tmpl, nil
}

// signLeaf encodes and signs the leaf: with the encoder of leaf.go for ECDSA and Ed25519 CA
// keys, with x509.CreateCertificate otherwise.
func (c *CA) signLeaf(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	ls, ok := fastSigner(c.key)
	if !ok {
		return x509.CreateCertificate(rand.Reader, tmpl, c.intermediate, pub, c.key)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrBadRequest, err)
	}
	return c.encodeLeaf(ls, tmpl, spki)
}
