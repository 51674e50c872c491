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
	"math/big"
	"strings"
	"testing"
	"time"
)

// caWithKey builds a CA whose intermediate has key (root: P-256), through Load. x509 gives
// the intermediate a SubjectKeyId, so leaves carry an AuthorityKeyId.
func caWithKey(t *testing.T, key crypto.Signer) *CA {
	t.Helper()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "R", Organization: []string{"Sealpod"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour), KeyUsage: x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: true}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	intTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Int é", Organization: []string{"Sealpod"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(3 * 365 * 24 * time.Hour), KeyUsage: x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true}
	intDER, err := x509.CreateCertificate(rand.Reader, intTmpl, root, key.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := Load(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: intDER}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kp}))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// TestLeafEncoderMatchesX509 checks that the broker's leaf encoder writes byte for byte the
// TBSCertificate x509.CreateCertificate writes for the same template, for every CA key type
// of the fast path and every leaf key type a CSR may carry, and that the result verifies.
func TestLeafEncoderMatchesX509(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	_, edk, _ := ed25519.GenerateKey(rand.Reader)
	rsak, _ := rsa.GenerateKey(rand.Reader, 2048)
	cas := map[string]*CA{
		"p256":    caWithKey(t, p256),
		"p384":    caWithKey(t, p384),
		"p521":    caWithKey(t, p521),
		"ed25519": caWithKey(t, edk),
	}
	leafP256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafP384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, leafEd, _ := ed25519.GenerateKey(rand.Reader)
	leaves := map[string]crypto.PublicKey{"p256": leafP256.Public(), "p384": leafP384.Public(), "ed25519": leafEd.Public(), "rsa": rsak.Public()}
	sanSets := [][]string{
		{"web.default.svc.cluster.local"},
		{"a.example", "10.0.0.7", "fd00::1", "spiffe://cluster.local/ns/default/sa/web", "b.example."},
		{"192.168.1.1"},
		{"urn:sealpod:workload:x"},
	}
	cns := []string{"web-frontend", "", strings.Repeat("a", 64), strings.Repeat("b", 65), "x_y"}
	for caName, ca := range cas {
		ls, ok := fastSigner(ca.key)
		if !ok {
			t.Fatalf("%s: not on the fast path", caName)
		}
		for leafName, pub := range leaves {
			for i, sans := range sanSets {
				cn := cns[i%len(cns)]
				tmpl, err := ca.leafTemplate(pub, cn, sans, 0)
				if err != nil {
					t.Fatal(err)
				}
				if i == 3 {
					// Not what IssueForKey makes, but the encoder must still agree with x509
					// (a multi-valued RDN).
					tmpl.Subject.Organization = []string{"Sealpod workload", "Second Org"}
				}
				want, err := x509.CreateCertificate(rand.Reader, tmpl, ca.intermediate, pub, ca.key)
				if err != nil {
					t.Fatal(err)
				}
				spki, _ := x509.MarshalPKIXPublicKey(pub)
				got, err := ca.encodeLeaf(ls, tmpl, spki)
				if err != nil {
					t.Fatalf("%s/%s/%d: encodeLeaf: %v", caName, leafName, i, err)
				}
				wc, _ := x509.ParseCertificate(want)
				gc, err := x509.ParseCertificate(got)
				if err != nil {
					t.Fatalf("%s/%s/%d: parse: %v", caName, leafName, i, err)
				}
				if !bytes.Equal(gc.RawTBSCertificate, wc.RawTBSCertificate) {
					t.Fatalf("%s/%s/%d: TBSCertificate differs from x509's\n got %x\nwant %x", caName, leafName, i, gc.RawTBSCertificate, wc.RawTBSCertificate)
				}
				if gc.SignatureAlgorithm != wc.SignatureAlgorithm {
					t.Fatalf("%s/%s/%d: signature algorithm %v, x509 %v", caName, leafName, i, gc.SignatureAlgorithm, wc.SignatureAlgorithm)
				}
				if err := gc.CheckSignatureFrom(ca.intermediate); err != nil {
					t.Fatalf("%s/%s/%d: signature: %v", caName, leafName, i, err)
				}
				roots := x509.NewCertPool()
				roots.AddCert(ca.root)
				inter := x509.NewCertPool()
				inter.AddCert(ca.intermediate)
				if _, err := gc.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
					t.Fatalf("%s/%s/%d: chain: %v", caName, leafName, i, err)
				}
			}
		}
	}
}

// An RSA intermediate is not on the fast path: issuance goes through x509.CreateCertificate.
func TestIssueRSACA(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ca := caWithKey(t, rk)
	if _, ok := fastSigner(ca.key); ok {
		t.Fatal("RSA CA key on the fast path")
	}
	leaf, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chain, err := ca.Issue(csrFor(t, leaf, "x", nil), "x", []string{"a.example"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(chain[0])
	if err != nil || c.CheckSignatureFrom(ca.intermediate) != nil || len(c.DNSNames) != 1 {
		t.Fatalf("RSA CA leaf: %v", err)
	}
}

func TestKeyUsageBits(t *testing.T) {
	for _, tc := range []struct {
		ku     x509.KeyUsage
		data   []byte
		unused int
	}{
		{x509.KeyUsageDigitalSignature, []byte{0x80}, 7},
		{x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, []byte{0xa0}, 5},
		{x509.KeyUsageCertSign | x509.KeyUsageCRLSign, []byte{0x06}, 1},
		{x509.KeyUsageDecipherOnly, []byte{0x00, 0x80}, 7},
	} {
		d, u := keyUsageBits(tc.ku)
		if !bytes.Equal(d, tc.data) || u != tc.unused {
			t.Errorf("keyUsageBits(%d) = %x/%d, want %x/%d", tc.ku, d, u, tc.data, tc.unused)
		}
	}
}

// BenchmarkIssue compares the leaf encoder with x509.CreateCertificate (which re-verifies its
// own signature); the CSR is parsed once. Run: go test -run XXX -bench Issue ./kbs/meshca
func BenchmarkIssue(b *testing.B) {
	m, _ := Generate("Bench", 0, 0)
	ca, _ := Load(m.RootCertPEM, m.IntermediateCertPEM, m.IntermediateKeyPEM)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	sans := []string{"web.default.svc.cluster.local", "10.0.0.7"}
	csrParsed, _ := ParseCSR(csr)
	b.Run("encoder", func(b *testing.B) {
		for b.Loop() {
			tmpl, _ := ca.leafTemplate(csrParsed.PublicKey, "web", sans, 0)
			if _, err := ca.signLeaf(tmpl, csrParsed.PublicKey); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("x509.CreateCertificate", func(b *testing.B) {
		for b.Loop() {
			tmpl, _ := ca.leafTemplate(csrParsed.PublicKey, "web", sans, 0)
			if _, err := x509.CreateCertificate(rand.Reader, tmpl, ca.intermediate, csrParsed.PublicKey, ca.key); err != nil {
				b.Fatal(err)
			}
		}
	})
}
