package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/simtee/amdsp"
)

// TestLowOrderTEEKeyRefused: a guest that attests with a low-order X25519 key (its shared
// secret with any ephemeral key is all zeros, so the box would be readable by anyone) gets a
// token, but the key release refuses to seal to it (400), and nothing else is released.
func TestLowOrderTEEKeyRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	hc := e.httpClient(t)
	lowOrder := make([]byte, 32) // u = 0
	do := func(method, path string, body any, hdr map[string]string, out any) int {
		t.Helper()
		var rd *bytes.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		} else {
			rd = bytes.NewReader(nil)
		}
		req, _ := http.NewRequest(method, e.url+path, rd)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			json.NewDecoder(resp.Body).Decode(out)
		}
		return resp.StatusCode
	}
	var auth api.AuthResponse
	req, _ := http.NewRequest(http.MethodPost, e.url+api.PathAuth, bytes.NewReader([]byte(`{"tee":"sim","workload":"web-frontend"}`)))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&auth)
	resp.Body.Close()
	var cookie string
	for _, c := range resp.Cookies() {
		if c.Name == api.SessionCookie {
			cookie = c.Name + "=" + c.Value
		}
	}
	if resp.StatusCode != http.StatusOK || cookie == "" {
		t.Fatalf("auth: %d, cookie %q", resp.StatusCode, cookie)
	}
	rep, table, err := e.signer.Report(amdsp.ReportOptions{ReportData: api.ReportData(auth.Nonce, lowOrder), Measurement: e.meas, HostData: e.digest})
	if err != nil {
		t.Fatal(err)
	}
	var att api.AttestResponse
	if st := do(http.MethodPost, api.PathAttest, api.AttestRequest{TEEPubKey: lowOrder, Evidence: api.Evidence{SNP: &api.SNPEvidence{Report: rep, CertTable: table}}},
		map[string]string{"Cookie": cookie}, &att); st != http.StatusOK || att.Token == "" {
		t.Fatalf("attest: %d", st)
	}
	var apiErr api.Error
	st := do(http.MethodGet, api.ResourceKeyPath("web-frontend"), nil, map[string]string{"Cookie": cookie, "Authorization": "Bearer " + att.Token,
		api.HeaderTEEPubKey: base64.StdEncoding.EncodeToString(lowOrder)}, &apiErr)
	if st != http.StatusBadRequest || apiErr.Reason != api.ReasonBadRequest {
		t.Fatalf("key release to a low-order TEE key: %d %+v, want 400 bad_request", st, apiErr)
	}
}
