package admin

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/meshca"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/store"
	"github.com/sealpod/sealpod/kbs/store/bolt"
)

const validBody = `{"id":"web","tees":["sim"],"measurements":{"sim":["` +
	"abababababababababababababababababababababababababababababababababababababababababababababab" +
	`"]},"envelopeDigest":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","minTcb":{"snp":{"bootloader":1}},"sans":["web.svc"],"dataKey":"WqUXcVqlF3FapRdxWqUXcVqlF3FapRdxWqUXcVqlF3E="}`

func FuzzDecodeWorkload(f *testing.F) {
	f.Add(validBody, "web")
	f.Add(`{"id":"x"}`, "x")
	f.Add(`{}`, "y")
	f.Add(`{"measurements":{"snp":null},"minTcb":{"tdxTeeTcbSvn":1}}`, "z")
	f.Add(`[1,2]`, "a")
	f.Fuzz(func(t *testing.T, body, id string) {
		w, err := DecodeWorkload(strings.NewReader(body), id)
		if err != nil {
			return
		}
		if w.ID != id {
			t.Fatalf("decoded id %q for path id %q", w.ID, id)
		}
		if registry.ValidateID(id) != nil {
			t.Fatalf("accepted invalid path id %q", id)
		}
		_ = w.Validate() // must not panic on any decoded value
	})
}

func FuzzParseAuditQuery(f *testing.F) {
	f.Add("since=2026-01-02T03:04:05Z&limit=10")
	f.Add("since=1h")
	f.Add("limit=-1")
	f.Add("since=%zz")
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		_, limit, err := ParseAuditQuery(q, time.Unix(1_700_000_000, 0))
		if err == nil && (limit < 1 || limit > audit.MaxListLimit) {
			t.Fatalf("limit %d accepted", limit)
		}
		if err != nil && !errors.Is(err, errBadRequest) {
			t.Fatalf("error %v is not a bad request", err)
		}
	})
}

// FuzzHandler drives the whole handler (as an authenticated admin) with arbitrary methods,
// paths and bodies: no panics, no 5xx, and no response ever carries a data key.
func FuzzHandler(f *testing.F) {
	dir := f.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "kbs.db"), bytes.Repeat([]byte{1}, store.KeySize), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	m, _ := meshca.Generate("fuzz", 0, 0)
	ca, _ := meshca.Load(m.RootCertPEM, m.IntermediateCertPEM, m.IntermediateKeyPEM)
	h := NewHandler(registry.New(st, signer), audit.New(st), ca, slog.New(slog.NewTextHandler(io.Discard, nil)))
	u, _ := url.Parse(IdentityURI)
	adminCert := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz-admin"}, URIs: []*url.URL{u}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	state := &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{adminCert}}}

	f.Add("PUT", "/kbs/v1/admin/workloads/web", validBody)
	f.Add("GET", "/kbs/v1/admin/workloads/web", "")
	f.Add("GET", "/kbs/v1/admin/workloads", "")
	f.Add("DELETE", "/kbs/v1/admin/workloads/web", "")
	f.Add("GET", "/kbs/v1/admin/audit?since=1h&limit=3", "")
	f.Add("GET", "/kbs/v1/admin/status", "")
	f.Add("GET", "/kbs/v1/admin/ca", "")
	f.Add("GET", "/kbs/v1/admin/history", "")
	f.Fuzz(func(t *testing.T, method, path, body string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequest(method, "https://kbs"+path, strings.NewReader(body))
		if err != nil {
			return
		}
		req.TLS = state
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: status %d: %s", method, path, rec.Code, rec.Body.String())
		}
		var v any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("%s %s: response is not JSON: %v", method, path, err)
		}
		if hasKey(v, "dataKey") {
			t.Fatalf("%s %s: response contains a data key: %s", method, path, rec.Body.String())
		}
	})
}

// hasKey reports whether any JSON object inside v has the member name.
func hasKey(v any, name string) bool {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if k == name || hasKey(e, name) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if hasKey(e, name) {
				return true
			}
		}
	}
	return false
}
