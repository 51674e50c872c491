package admin_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/admin"
	"github.com/sealpod/sealpod/kbs/admin/admintest"
	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/setup"
)

var (
	hex96   = strings.Repeat("ab", 48)
	hex64   = strings.Repeat("cd", 32)
	dataKey = bytes.Repeat([]byte{0x5a, 0xa5, 0x17, 0x71}, 8)
)

func workload(id string) registry.Workload {
	return registry.Workload{
		ID:             id,
		TEEs:           []string{"sim"},
		Measurements:   map[string][]string{"sim": {hex96}},
		EnvelopeDigest: hex64,
		SANs:           []string{id + ".default.svc"},
		DataKey:        dataKey,
	}
}

func TestClientRoundTrip(t *testing.T) {
	srv := admintest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	entry, err := c.PutWorkload(ctx, workload("web"))
	if err != nil {
		t.Fatal(err)
	}
	if entry.Seq != 1 || entry.Op != registry.OpPut || !strings.HasPrefix(entry.Actor, "admin:"+admin.IdentityCommonName+"/") {
		t.Fatalf("entry = %+v", entry)
	}
	if _, err := c.PutWorkload(ctx, workload("db")); err != nil {
		t.Fatal(err)
	}
	// The broker really holds the key (the key-release path reads it from the registry).
	stored, err := srv.Registry.Get(ctx, "web")
	if err != nil || !bytes.Equal(stored.DataKey, dataKey) {
		t.Fatalf("stored key %x, %v", stored.DataKey, err)
	}
	got, err := c.GetWorkload(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "web" || got.DataKey != nil || got.Generation != 1 || got.SANs[0] != "web.default.svc" {
		t.Fatalf("GetWorkload = %+v", got)
	}
	list, err := c.ListWorkloads(ctx)
	if err != nil || len(list) != 2 || list[0].ID != "db" || list[1].ID != "web" {
		t.Fatalf("ListWorkloads = %+v, %v", list, err)
	}
	if _, err := c.GetWorkload(ctx, "nope"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("GetWorkload missing = %v, want ErrNotFound", err)
	}
	bad := workload("bad")
	bad.EnvelopeDigest = "xx"
	_, err = c.PutWorkload(ctx, bad)
	var apiErr *admin.APIError
	if !errors.As(err, &apiErr) || apiErr.Field != "envelopeDigest" || !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("PutWorkload invalid = %v", err)
	}
	if _, err := c.RemoveWorkload(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RemoveWorkload(ctx, "db"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("second remove = %v", err)
	}
	hist, err := c.History(ctx)
	if err != nil || len(hist) != 3 {
		t.Fatalf("History = %d, %v", len(hist), err)
	}
	if _, err := registry.VerifyHistory(hist, srv.State.Signer.Public()); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Workloads != 1 || st.Head.Seq != 3 || !st.HistoryValid {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	ca, err := c.CA(ctx)
	if err != nil || !strings.Contains(ca.RootPEM, "BEGIN CERTIFICATE") || strings.Count(ca.BundlePEM, "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("CA = %+v, %v", ca, err)
	}
	evs, err := c.Audit(ctx, time.Now().Add(-time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	var ok, denied int
	for _, e := range evs {
		if e.Kind == audit.KindAdmin && e.Result == audit.ResultOK {
			ok++
		}
		if e.Kind == audit.KindAdmin && e.Result == audit.ResultDenied {
			denied++
		}
	}
	if ok != 3 || denied != 2 { // 2 puts + 1 remove ok; invalid put + second remove denied
		t.Fatalf("audit: %d ok, %d denied admin events: %+v", ok, denied, evs)
	}
}

// TestDataKeyNeverReturned reads raw list/get/history/status bodies.
func TestDataKeyNeverReturned(t *testing.T) {
	srv := admintest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	if _, err := c.PutWorkload(ctx, workload("web")); err != nil {
		t.Fatal(err)
	}
	hc := rawClient(t, srv, true)
	for _, p := range []string{"workloads", "workloads/web", "history", "status", "audit"} {
		resp, err := hc.Get(srv.URL + admin.PathPrefix + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", p, resp.StatusCode, body)
		}
		if bytes.Contains(body, []byte("dataKey")) || bytes.Contains(body, []byte(base64.StdEncoding.EncodeToString(dataKey))) {
			t.Errorf("GET %s exposes the data key: %s", p, body)
		}
	}
}

// rawClient returns an HTTP client trusting the broker CA, with or without the admin cert.
func rawClient(t *testing.T, srv *admintest.Server, withCert bool, extra ...tls.Certificate) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(srv.State.TLSCAPEM)
	cfg := &tls.Config{RootCAs: pool}
	if withCert {
		cert, err := tls.LoadX509KeyPair(filepath.Join(srv.Dir, "admin/client.pem"), filepath.Join(srv.Dir, "admin/client.key"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	cfg.Certificates = append(cfg.Certificates, extra...)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
}

// issueFromAdminCA signs a client certificate with the admin CA key of a state dir.
func issueFromAdminCA(t *testing.T, dir string, uri string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	caCert := leafOf(t, filepath.Join(dir, setup.AdminCACertFile))
	keyPEM, _ := os.ReadFile(filepath.Join(dir, setup.AdminCAKeyFile))
	kb, _ := pem.Decode(keyPEM)
	caKey, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(77),
		Subject:      pkix.Name{CommonName: "not-admin"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if uri != "" {
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestRefusesNonAdmins(t *testing.T) {
	srv := admintest.Start(t)
	other := admintest.Start(t) // another broker: its admin cert comes from another CA
	otherCert, err := tls.LoadX509KeyPair(filepath.Join(other.Dir, "admin/client.pem"), filepath.Join(other.Dir, "admin/client.key"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		client     *http.Client
		wantStatus int // 0 = TLS handshake must fail
	}{
		{"no client certificate", rawClient(t, srv, false), http.StatusUnauthorized},
		{"certificate from another CA", rawClient(t, srv, false, otherCert), 0},
		{"admin CA cert without admin URI", rawClient(t, srv, false, issueFromAdminCA(t, srv.Dir, "", x509.ExtKeyUsageClientAuth)), http.StatusForbidden},
		{"admin CA cert with wrong URI", rawClient(t, srv, false, issueFromAdminCA(t, srv.Dir, "urn:sealpod:kbs:user", x509.ExtKeyUsageClientAuth)), http.StatusForbidden},
		{"admin CA server-auth cert", rawClient(t, srv, false, issueFromAdminCA(t, srv.Dir, admin.IdentityURI, x509.ExtKeyUsageServerAuth)), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, req := range []struct{ method, path, body string }{
				{http.MethodGet, "workloads", ""},
				{http.MethodPut, "workloads/evil", `{"id":"evil"}`},
				{http.MethodDelete, "workloads/x", ""},
			} {
				r, _ := http.NewRequest(req.method, srv.URL+admin.PathPrefix+req.path, strings.NewReader(req.body))
				resp, err := tc.client.Do(r)
				if tc.wantStatus == 0 {
					if err == nil {
						resp.Body.Close()
						t.Fatalf("%s %s: got %d, want a TLS handshake failure", req.method, req.path, resp.StatusCode)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s %s: %v", req.method, req.path, err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.wantStatus {
					t.Fatalf("%s %s: status %d, want %d", req.method, req.path, resp.StatusCode, tc.wantStatus)
				}
			}
		})
	}
	if ws, _ := srv.Registry.List(context.Background()); len(ws) != 0 {
		t.Fatalf("a refused client registered %v", ws)
	}
	evs, _ := srv.Audit.List(context.Background(), time.Time{}, 0)
	if len(evs) < 9 {
		t.Fatalf("%d audit events for refused requests, want >= 9", len(evs))
	}
}

func TestHandlerWithoutTLS(t *testing.T) {
	h := admin.NewHandler(nil, nil, nil, nil)
	rec := newRecorder()
	req, _ := http.NewRequest(http.MethodGet, admin.PathPrefix+"workloads", nil)
	h.ServeHTTP(rec, req)
	if rec.code != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", rec.code)
	}
}

func TestBadRequests(t *testing.T) {
	srv := admintest.Start(t)
	hc := rawClient(t, srv, true)
	tests := []struct {
		method, path, body string
		want               int
	}{
		{http.MethodPut, "workloads/web", `{"id":"other"}`, http.StatusBadRequest},
		{http.MethodPut, "workloads/web", `{"id":"web","bogus":1}`, http.StatusBadRequest},
		{http.MethodPut, "workloads/web", `{"id":"web"} {}`, http.StatusBadRequest},
		{http.MethodPut, "workloads/web", `not json`, http.StatusBadRequest},
		{http.MethodPut, "workloads/Web", `{}`, http.StatusBadRequest},
		{http.MethodPut, "workloads/web", `{"id":"web","sans":["` + strings.Repeat("a", admin.MaxBodyBytes) + `"]}`, http.StatusRequestEntityTooLarge},
		{http.MethodGet, "audit?limit=0", "", http.StatusBadRequest},
		{http.MethodGet, "audit?since=yesterday", "", http.StatusBadRequest},
		{http.MethodGet, "audit?since=1h&limit=5", "", http.StatusOK},
		{http.MethodPost, "workloads", "", http.StatusMethodNotAllowed},
		{http.MethodGet, "nothing", "", http.StatusNotFound},
	}
	for _, tc := range tests {
		r, _ := http.NewRequest(tc.method, srv.URL+admin.PathPrefix+tc.path, strings.NewReader(tc.body))
		resp, err := hc.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
}

type recorder struct {
	h    http.Header
	code int
	body bytes.Buffer
}

func newRecorder() *recorder                    { return &recorder{h: http.Header{}} }
func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(c int)           { r.code = c }
