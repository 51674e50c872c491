package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// testServer is an HTTPS server on 127.0.0.1 whose chain (leaf, CA) is signed by a fresh CA.
func testServer(t *testing.T) (*httptest.Server, *x509.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, leafKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"meshRootPem":"x","meshBundlePem":"y"}`))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, ca
}

// TestSessionResumption: a client whose connection was closed resumes its TLS session on the
// next connection, for both trust modes, and the pin is still enforced.
func TestSessionResumption(t *testing.T) {
	srv, ca := testServer(t)
	sum := sha256.Sum256(ca.Raw)
	for name, o := range map[string]Options{
		"ca-pem": {CAPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})},
		"pin":    {CASHA256: hex.EncodeToString(sum[:])},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := New(srv.URL, o)
			if err != nil {
				t.Fatal(err)
			}
			for i, wantResumed := range []bool{false, true} {
				resp, err := c.hc.Get(srv.URL + "/kbs/v1/ca")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.TLS == nil || resp.TLS.DidResume != wantResumed {
					t.Fatalf("connection %d: DidResume = %v, want %v", i, resp.TLS != nil && resp.TLS.DidResume, wantResumed)
				}
				c.hc.CloseIdleConnections()
			}
			if _, err := c.CA(t.Context()); err != nil {
				t.Fatalf("CA over a resumed session: %v", err)
			}
		})
	}
	// A wrong pin fails, also for a client that never connected before.
	bad := sha256.Sum256([]byte("other CA"))
	c, _ := New(srv.URL, Options{CASHA256: hex.EncodeToString(bad[:])})
	if _, err := c.CA(t.Context()); err == nil {
		t.Fatal("connected with a wrong CA pin")
	}
}
