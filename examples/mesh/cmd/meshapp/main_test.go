package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/meshca"
)

// tlsDir writes what the agent writes for a workload: cert.pem (leaf + intermediate), key.pem
// and ca.pem (the mesh root), issued by the broker's mesh CA code.
func tlsDir(t *testing.T, m *meshca.Material, sans ...string) string {
	t.Helper()
	ca, err := meshca.Load(m.RootCertPEM, m.IntermediateCertPEM, m.IntermediateKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.IssueForKey(&key.PublicKey, "", sans, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var certPEM []byte
	for _, der := range chain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range map[string][]byte{
		"cert.pem": certPEM,
		"key.pem":  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		"ca.pem":   m.RootCertPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestMutualTLS(t *testing.T) {
	mesh, err := meshca.Generate("test mesh", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := meshca.Generate("foreign", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	serverDir := tlsDir(t, mesh, "web.default.svc", "spiffe://sealpod/ns/default/deployment/web")
	clientDir := tlsDir(t, mesh, "spiffe://sealpod/ns/default/deployment/client")
	// a client with a certificate of another CA (that trusts the mesh root)
	rogueDir := tlsDir(t, foreign, "spiffe://sealpod/ns/default/deployment/client")
	if err := os.WriteFile(filepath.Join(rogueDir, "ca.pem"), mesh.RootCertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// a rogue server with a certificate for the right name from another CA
	rogueServerDir := tlsDir(t, foreign, "web.default.svc")

	start := func(dir string) string {
		t.Setenv("TLS_DIR", dir)
		t.Setenv("GREETING", "sealed greeting")
		t.Setenv("API_TOKEN", "sealed-token")
		srv, err := newServer()
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- serve(ctx, srv, ln) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != context.Canceled {
				t.Errorf("server stopped with %v", err)
			}
		})
		return ln.Addr().String()
	}
	addr := start(serverDir)
	rogueAddr := start(rogueServerDir)

	for _, tc := range []struct {
		name, dir, addr, path, token, serverName string
		want                                     string // substring of the answer, or of the error
		ok                                       bool
	}{
		{"mesh client", clientDir, addr, "/mesh", "sealed-token", "web.default.svc",
			"sealed greeting — mTLS from spiffe://sealpod/ns/default/deployment/client to spiffe://sealpod/ns/default/deployment/web", true},
		{"wrong token", clientDir, addr, "/mesh", "guess", "web.default.svc", "401", false},
		{"wrong server name", clientDir, addr, "/mesh", "sealed-token", "db.default.svc", "not db.default.svc", false},
		{"client of another CA", rogueDir, addr, "/mesh", "sealed-token", "web.default.svc", "403 Forbidden: mesh only", false},
		{"server of another CA", clientDir, rogueAddr, "/mesh", "sealed-token", "web.default.svc", "certificate signed by unknown authority", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("TLS_DIR", tc.dir)
			t.Setenv("API_TOKEN", tc.token)
			t.Setenv("WEB_URL", "https://"+tc.addr+tc.path)
			t.Setenv("WEB_SERVER_NAME", tc.serverName)
			msg, err := call(context.Background())
			if tc.ok {
				if err != nil || !strings.Contains(msg, tc.want) {
					t.Fatalf("call: %q %v, want %q", msg, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("call succeeded: %q", msg)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to mention %q", err, tc.want)
			}
		})
	}

	// Anyone who trusts the mesh root (curl --cacert verify/mesh-root.pem) reaches "/", not
	// "/mesh".
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(mesh.RootCertPEM)
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "web.default.svc"}}}
	for path, want := range map[string]int{"/": 200, "/mesh": 403} {
		resp, err := anon.Get("https://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("anonymous GET %s: %s, want %d", path, resp.Status, want)
		}
	}
}

func TestQuietProbes(t *testing.T) {
	var buf strings.Builder
	q := quietProbes{&buf}
	for _, l := range []string{
		"2026/11/22 07:51:38 http: TLS handshake error from 10.244.0.1:34656: EOF\n",
		"2026/11/22 07:51:38 http: TLS handshake error from 10.244.0.1:34660: remote error: tls: bad certificate\n",
		"2026/11/22 07:51:39 http: panic serving 10.244.0.1:1: boom\n",
	} {
		if n, err := q.Write([]byte(l)); n != len(l) || err != nil {
			t.Fatalf("Write: %d %v", n, err)
		}
	}
	if got := buf.String(); strings.Contains(got, ": EOF") || !strings.Contains(got, "bad certificate") || !strings.Contains(got, "panic serving") {
		t.Fatalf("passed through: %q", got)
	}
}
