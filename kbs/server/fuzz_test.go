package server

import (
	"bytes"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sealpod/sealpod/kbs/api"
)

// FuzzHandlers sends arbitrary bodies, cookies and tokens to every protocol endpoint of a real
// server (registry and audit on bbolt): no panic, never a 2xx for attest/key/certificate or
// the volume calls (no token verifies).
func FuzzHandlers(f *testing.F) {
	e := newEnv(f, envOptions{})
	h := e.srv.Handler()
	f.Add(uint8(0), []byte(`{"tee":"sim","workload":"web-frontend"}`), "", "")
	f.Add(uint8(1), []byte(`{"teePubKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","evidence":{"snp":{"report":"AAAA"}}}`), "abc", "")
	f.Add(uint8(2), []byte(nil), "abc", "sp2.e30.AAAA")
	f.Add(uint8(3), []byte(`{"csr":"MIIB"}`), "abc", "sp2.x.y")
	f.Add(uint8(1), []byte(`{"teePubKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","evidence":{"snp":{"report":"AAAA"}},"csr":"MIIB"}`), "abc", "")
	f.Add(uint8(4), []byte(`{"volume":"default/data-0"}`), "", "sp2.e30.AAAA")
	f.Add(uint8(5), []byte(`{"volume":"default/data-0","generation":1}`), "", "sp2.x.y")
	f.Fuzz(func(t *testing.T, which uint8, body []byte, cookie, token string) {
		paths := []struct{ method, path string }{
			{http.MethodPost, api.PathAuth},
			{http.MethodPost, api.PathAttest},
			{http.MethodGet, api.ResourceKeyPath("web-frontend")},
			{http.MethodPost, api.PathCertificate},
			{http.MethodPost, api.PathVolumeBegin},
			{http.MethodPost, api.PathVolumeCommit},
		}
		p := paths[int(which)%len(paths)]
		req := httptest.NewRequest(p.method, "https://127.0.0.1"+p.path, bytes.NewReader(body))
		req.TLS = &tls.ConnectionState{}
		req.Header.Set("Cookie", api.SessionCookie+"="+cookie)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set(api.HeaderTEEPubKey, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if p.path != api.PathAuth && rec.Code/100 == 2 {
			t.Fatalf("%s %s answered %d to fuzzed input", p.method, p.path, rec.Code)
		}
	})
}
