package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name, url string
		o         Options
		wantErr   string
	}{
		{"http refused", "http://127.0.0.1:8443", Options{CASHA256: strings.Repeat("a", 64)}, "want https"},
		{"no trust anchor", "https://127.0.0.1:8443", Options{}, "CA certificate or a CA SHA-256 pin"},
		{"bad pin", "https://127.0.0.1:8443", Options{CASHA256: "xyz"}, "64 hex digits"},
		{"bad PEM", "https://127.0.0.1:8443", Options{CAPEM: []byte("nope")}, "no certificate"},
		{"ok pin", "https://127.0.0.1:8443/", Options{CASHA256: strings.Repeat("a", 64)}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.url, tc.o)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func cert(t *testing.T, tmpl, parent *x509.Certificate, pub, priv any) *x509.Certificate {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestVerifyPinned(t *testing.T) {
	k := func() *ecdsa.PrivateKey { x, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader); return x }
	caKey, otherKey, leafKey := k(), k(), k()
	now := time.Now()
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kbs TLS CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	ca := cert(t, caT, caT, &caKey.PublicKey, caKey)
	otherT := *caT
	otherT.Subject.CommonName = "attacker CA"
	other := cert(t, &otherT, &otherT, &otherKey.PublicKey, otherKey)
	leafT := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kbs"}, DNSNames: []string{"kbs.example"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leaf := cert(t, leafT, ca, &leafKey.PublicKey, caKey)
	forged := cert(t, leafT, other, &leafKey.PublicKey, otherKey)
	pin := sha256.Sum256(ca.Raw)

	if err := verifyPinned([]*x509.Certificate{leaf, ca}, pin[:], "kbs.example"); err != nil {
		t.Fatalf("genuine chain: %v", err)
	}
	if err := verifyPinned([]*x509.Certificate{leaf, ca}, pin[:], "other.example"); err == nil {
		t.Fatal("accepted the wrong host name")
	}
	if err := verifyPinned([]*x509.Certificate{forged, other}, pin[:], "kbs.example"); err == nil {
		t.Fatal("accepted a chain without the pinned CA")
	}
	if err := verifyPinned([]*x509.Certificate{forged, ca}, pin[:], "kbs.example"); err == nil {
		t.Fatal("accepted a leaf not signed by the pinned CA")
	}
	if err := verifyPinned([]*x509.Certificate{ca}, pin[:], "kbs.example"); err == nil {
		t.Fatal("accepted the CA itself as the server certificate")
	}
}
