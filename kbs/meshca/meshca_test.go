package meshca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"slices"
	"testing"
	"time"
)

func newCA(t *testing.T) (*CA, *Material) {
	t.Helper()
	m, err := Generate("Test", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := Load(m.RootCertPEM, m.IntermediateCertPEM, m.IntermediateKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca, m
}

func csrFor(t *testing.T, key crypto.Signer, cn string, dns []string) []byte {
	t.Helper()
	u, _ := url.Parse("spiffe://evil/attacker")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    dns,
		IPAddresses: []net.IP{net.ParseIP("6.6.6.6")},
		URIs:        []*url.URL{u},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestIssueExactSANsAndChain(t *testing.T) {
	ca, _ := newCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr := csrFor(t, key, "evil-cn", []string{"evil.example", "app.default.svc"})
	sans := []string{"app.default.svc", "app.default.svc.cluster.local", "10.1.2.3", "spiffe://sealpod/app"}
	chain, err := ca.Issue(csr, "app", sans, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 {
		t.Fatalf("chain has %d certificates, want leaf + intermediate", len(chain))
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(leaf.DNSNames, []string{"app.default.svc", "app.default.svc.cluster.local"}) {
		t.Errorf("DNS SANs = %v", leaf.DNSNames)
	}
	if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.1.2.3")) {
		t.Errorf("IP SANs = %v", leaf.IPAddresses)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://sealpod/app" {
		t.Errorf("URI SANs = %v", leaf.URIs)
	}
	if leaf.Subject.CommonName != "app" || len(leaf.EmailAddresses) != 0 {
		t.Errorf("subject %v / emails %v", leaf.Subject, leaf.EmailAddresses)
	}
	if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
		t.Error("leaf key is not the CSR key")
	}
	if leaf.IsCA {
		t.Error("leaf is a CA")
	}
	if d := time.Until(leaf.NotAfter); d > time.Hour+time.Minute || d < 59*time.Minute {
		t.Errorf("validity ends in %s, want ~1h", d)
	}
	inter, _ := x509.ParseCertificate(chain[1])
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root())
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, DNSName: "app.default.svc", KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("leaf does not chain to the root for %v: %v", usage, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, DNSName: "evil.example"}); err == nil {
		t.Error("leaf verifies for a CSR-requested name")
	}
}

func TestIssueRefusals(t *testing.T) {
	ca, _ := newCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := csrFor(t, key, "x", nil)
	bad := append([]byte(nil), good...)
	bad[len(bad)-3] ^= 0xff // inside the signature
	rsaSmall, _ := rsa.GenerateKey(rand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	tests := []struct {
		name     string
		csr      []byte
		sans     []string
		validity time.Duration
		want     error
	}{
		{"bad signature", bad, []string{"a.example"}, 0, ErrBadCSR},
		{"garbage", []byte("not a csr"), []string{"a.example"}, 0, ErrBadCSR},
		{"rsa 1024", csrFor(t, rsaSmall, "x", nil), []string{"a.example"}, 0, ErrBadCSR},
		{"p224", csrFor(t, p224, "x", nil), []string{"a.example"}, 0, ErrBadCSR},
		{"no sans", good, nil, 0, ErrBadRequest},
		{"bad san", good, []string{"*.example"}, 0, ErrBadRequest},
		{"too short", good, []string{"a.example"}, time.Second, ErrBadRequest},
		{"too long", good, []string{"a.example"}, 10 * 365 * 24 * time.Hour, ErrBadRequest},
	}
	for _, tc := range tests {
		if _, err := ca.Issue(tc.csr, "x", tc.sans, tc.validity); !errors.Is(err, tc.want) {
			t.Errorf("%s: Issue = %v, want %v", tc.name, err, tc.want)
		}
	}
	_, edk, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := ca.Issue(csrFor(t, edk, "x", nil), "x", []string{"a.example"}, 0); err != nil {
		t.Errorf("Ed25519 CSR refused: %v", err)
	}
}

func TestLoadChecks(t *testing.T) {
	_, m := newCA(t)
	_, other := newCA(t)
	if _, err := Load(m.RootCertPEM, other.IntermediateCertPEM, other.IntermediateKeyPEM); err == nil {
		t.Error("Load accepted an intermediate from another root")
	}
	if _, err := Load(m.RootCertPEM, m.IntermediateCertPEM, other.IntermediateKeyPEM); err == nil {
		t.Error("Load accepted a key that does not match the intermediate")
	}
	if _, err := Load([]byte("x"), m.IntermediateCertPEM, m.IntermediateKeyPEM); err == nil {
		t.Error("Load accepted a garbage root")
	}
}

func TestLeafNeverOutlivesIntermediate(t *testing.T) {
	m, err := Generate("Short", 48*time.Hour, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := Load(m.RootCertPEM, m.IntermediateCertPEM, m.IntermediateKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chain, err := ca.Issue(csrFor(t, key, "x", nil), "x", []string{"a.example"}, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(chain[0])
	if leaf.NotAfter.After(ca.Intermediate().NotAfter) {
		t.Errorf("leaf NotAfter %s after intermediate %s", leaf.NotAfter, ca.Intermediate().NotAfter)
	}
}

// FuzzIssue feeds arbitrary CSR bytes to Issue: no panics, and whatever is issued carries
// exactly the requested SANs.
func FuzzIssue(f *testing.F) {
	m, _ := Generate("Fuzz", 0, 0)
	ca, _ := Load(m.RootCertPEM, m.IntermediateCertPEM, m.IntermediateKeyPEM)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"evil.example"}}, key)
	f.Add(good)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, csr []byte) {
		chain, err := ca.Issue(csr, "fz", []string{"ok.example"}, 0)
		if err != nil {
			return
		}
		leaf, err := x509.ParseCertificate(chain[0])
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(leaf.DNSNames, []string{"ok.example"}) || len(leaf.IPAddresses)+len(leaf.URIs)+len(leaf.EmailAddresses) != 0 {
			t.Fatalf("leaf SANs %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.URIs)
		}
	})
}

func TestLongCommonNameOmitted(t *testing.T) {
	ca, _ := newCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	long := "abcdefghij.bcdefghij.bcdefghij.bcdefghij.bcdefghij.bcdefghij.bcdefghij"
	chain, err := ca.Issue(csrFor(t, key, "x", nil), long, []string{"a.example"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(chain[0])
	if leaf.Subject.CommonName != "" || leaf.DNSNames[0] != "a.example" {
		t.Fatalf("leaf subject %v SANs %v", leaf.Subject, leaf.DNSNames)
	}
}
