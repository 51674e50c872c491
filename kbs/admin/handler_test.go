package admin

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/store"
	"github.com/sealpod/sealpod/kbs/store/bolt"
)

func testCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func testAdminLeaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey) *x509.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(IdentityURI)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: IdentityCommonName}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// TestWithAdminCAs: a chain the listener accepted but that does not lead to the admin CA is
// refused when the handler re-verifies.
func TestWithAdminCAs(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "kbs.db"), bytes.Repeat([]byte{1}, store.KeySize), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	reg := registry.New(st, signer)
	adminCA, _ := testCA(t)
	otherCA, otherKey := testCA(t)
	leaf := testAdminLeaf(t, otherCA, otherKey)
	pool := x509.NewCertPool()
	pool.AddCert(adminCA)
	otherPool := x509.NewCertPool()
	otherPool.AddCert(otherCA)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name  string
		roots *x509.CertPool
		want  int
	}{
		{"chain to another CA", pool, http.StatusForbidden},
		{"chain to the admin CA", otherPool, http.StatusOK},
		{"no re-verification", nil, http.StatusOK},
	} {
		h := NewHandler(reg, nil, nil, logger, WithAdminCAs(tc.roots))
		req := httptest.NewRequest(http.MethodGet, PathPrefix+"workloads", nil)
		req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, otherCA}}}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s: status %d, want %d: %s", tc.name, rec.Code, tc.want, rec.Body.String())
		}
	}
}
