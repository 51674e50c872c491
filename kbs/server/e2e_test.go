package server

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
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/client"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/setup"
	"github.com/sealpod/sealpod/simtee/amdsp"
)

func makeCSR(t testing.TB, extraSANs []string) ([]byte, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "attacker-chosen"}, DNSNames: extraSANs}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// TestEndToEndSim runs the real client against the real HTTPS server with a bbolt store:
// auth → attest (sim evidence) → key (anonymous box opened) → certificate.
func TestEndToEndSim(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	for _, pinned := range []bool{false, true} {
		c := e.client
		if pinned {
			sum, err := setup.CertPEMSHA256(e.state.TLSCAPEM)
			if err != nil {
				t.Fatal(err)
			}
			if c, err = client.New(e.url, client.Options{CASHA256: sum}); err != nil {
				t.Fatal(err)
			}
		}
		s, err := c.Auth(ctx, api.TEESim, e.workload.ID)
		if err != nil {
			t.Fatalf("auth: %v", err)
		}
		if err := s.Attest(ctx, e.evidence(t, s, nil)); err != nil {
			t.Fatalf("attest: %v", err)
		}
		claims, err := e.srv.tokens.verify(s.Token, time.Now())
		if err != nil || claims.TEE != "sim" || claims.Workload != e.workload.ID {
			t.Fatalf("token claims %+v, %v", claims, err)
		}
		key, err := s.Key(ctx)
		if err != nil {
			t.Fatalf("key: %v", err)
		}
		if !bytes.Equal(key, e.workload.DataKey) {
			t.Fatal("released key differs from the registered data key")
		}
		csr, priv := makeCSR(t, []string{"evil.example.com"})
		cert, err := s.Certificate(ctx, csr)
		if err != nil {
			t.Fatalf("certificate: %v", err)
		}
		leaf, err := x509.ParseCertificate(cert.Chain[0])
		if err != nil {
			t.Fatal(err)
		}
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(cert.RootPEM)) {
			t.Fatal("no mesh root in answer")
		}
		if !bytes.Equal([]byte(cert.RootPEM), e.state.MeshCA.RootPEM()) {
			t.Fatal("answer's root is not the broker's mesh root")
		}
		for _, der := range cert.Chain[1:] {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("leaf does not chain to the mesh root: %v", err)
		}
		var ips []string
		for _, ip := range leaf.IPAddresses {
			ips = append(ips, ip.String())
		}
		if !slices.Equal(leaf.DNSNames, []string{"web.default.svc.cluster.local"}) || !slices.Equal(ips, []string{"10.0.0.7"}) {
			t.Fatalf("leaf SANs dns=%v ip=%v, want exactly the registered ones", leaf.DNSNames, ips)
		}
		if !priv.PublicKey.Equal(leaf.PublicKey) {
			t.Fatal("leaf key is not the CSR key")
		}
	}
	ca, err := e.client.CA(ctx)
	if err != nil || ca.MeshRootPEM != string(e.state.MeshCA.RootPEM()) {
		t.Fatalf("CA: %v", err)
	}
	m, err := e.client.Manifest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := registry.VerifyManifest(m, e.state.Signer.Public()); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	events, err := e.audit.List(ctx, time.Time{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, ev := range events {
		if ev.Result == audit.ResultOK && ev.Workload == e.workload.ID {
			kinds[ev.Kind]++
		}
	}
	for _, k := range []string{"auth", "attest", "key", "certificate"} {
		if kinds[k] != 2 {
			t.Fatalf("audit has %d ok %s events, want 2 (%v)", kinds[k], k, kinds)
		}
	}
	hc := e.httpClient(t)
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ok", "/metrics": `sealpod_kbs_verifications_total{result="ok",tee="sim"} 2`} {
		resp, err := hc.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("GET %s: %d, body lacks %q", path, resp.StatusCode, want)
		}
	}
	e.stop(t)
	if _, err := e.client.CA(ctx); err == nil {
		t.Fatal("server still answers after shutdown")
	}
}

func (e *env) httpClient(t testing.TB) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.state.TLSCAPEM)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
}

// postRaw posts body to the broker's path with the headers, bypassing kbs/client, and returns
// the HTTP status and the error answer (zero if the body is not one).
func (e *env) postRaw(t testing.TB, hc *http.Client, path string, body []byte, hdr map[string]string) (int, api.Error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.url+path, bytes.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out api.Error
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func wantAPIError(t *testing.T, err error, status int, reason, field string) {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v, want an API error %d %s", err, status, reason)
	}
	if ae.Status != status || ae.Body.Reason != reason || ae.Body.Field != field {
		t.Fatalf("got %d reason=%q field=%q (%s), want %d reason=%q field=%q", ae.Status, ae.Body.Reason, ae.Body.Field, ae.Body.Error, status, reason, field)
	}
}

func TestProtocolRejections(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	strict := e.workload
	strict.ID, strict.TEEs = "strict", []string{"sim"}
	strict.Measurements = map[string][]string{"sim": e.workload.Measurements["sim"]}
	strict.MinTCB = registry.TCB{SNP: &registry.SNPTCB{Bootloader: 3, SNP: 9, Microcode: 115}}
	if _, err := e.reg.Put(ctx, strict, "test"); err != nil {
		t.Fatal(err)
	}
	other, err := amdsp.NewChain(amdsp.Options{RSABits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	otherSigner, _ := amdsp.NewSigner(other)

	attested := func(t *testing.T) *client.Session {
		s, err := e.client.Auth(ctx, api.TEESim, e.workload.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Attest(ctx, e.evidence(t, s, nil)); err != nil {
			t.Fatal(err)
		}
		return s
	}
	evidenceCase := func(mutate func(o *amdsp.ReportOptions)) func(t *testing.T) error {
		return func(t *testing.T) error {
			s, err := e.client.Auth(ctx, api.TEESim, e.workload.ID)
			if err != nil {
				t.Fatal(err)
			}
			return s.Attest(ctx, e.evidence(t, s, mutate))
		}
	}
	tests := []struct {
		name   string
		run    func(t *testing.T) error
		status int
		reason string
		field  string
	}{
		{"wrong measurement", evidenceCase(func(o *amdsp.ReportOptions) { o.Measurement[0] ^= 1 }), 403, api.ReasonEvidence, "measurement"},
		{"wrong host data", evidenceCase(func(o *amdsp.ReportOptions) { o.HostData[0] ^= 1 }), 403, api.ReasonEvidence, "host_data"},
		{"wrong report data", evidenceCase(func(o *amdsp.ReportOptions) { o.ReportData[0] ^= 1 }), 403, api.ReasonEvidence, "report_data"},
		{"debug on", evidenceCase(func(o *amdsp.ReportOptions) { o.Debug = true }), 403, api.ReasonEvidence, "debug"},
		{"tcb too low", func(t *testing.T) error {
			s, err := e.client.Auth(ctx, api.TEESim, "strict")
			if err != nil {
				t.Fatal(err)
			}
			return s.Attest(ctx, e.evidence(t, s, nil))
		}, 403, api.ReasonEvidence, "tcb"},
		{"tampered signature", func(t *testing.T) error {
			s, _ := e.client.Auth(ctx, api.TEESim, e.workload.ID)
			ev := e.evidence(t, s, nil)
			ev.SNP.Report[0x2A0+5] ^= 1
			return s.Attest(ctx, ev)
		}, 403, api.ReasonEvidence, "signature"},
		{"foreign root", func(t *testing.T) error {
			s, _ := e.client.Auth(ctx, api.TEESim, e.workload.ID)
			rep, table, err := otherSigner.Report(amdsp.ReportOptions{ReportData: s.ReportData(), Measurement: e.meas, HostData: e.digest})
			if err != nil {
				t.Fatal(err)
			}
			return s.Attest(ctx, &api.Evidence{SNP: &api.SNPEvidence{Report: rep, CertTable: table}})
		}, 403, api.ReasonEvidence, "certificate_chain"},
		{"replayed nonce", func(t *testing.T) error {
			s := attested(t)
			return s.Attest(ctx, e.evidence(t, s, nil))
		}, 401, api.ReasonNonce, ""},
		{"expired nonce", func(t *testing.T) error {
			s, _ := e.client.Auth(ctx, api.TEESim, e.workload.ID)
			e.clock.advance(DefaultNonceTTL + time.Second)
			return s.Attest(ctx, e.evidence(t, s, nil))
		}, 401, api.ReasonNonce, ""},
		{"expired token", func(t *testing.T) error {
			s := attested(t)
			e.clock.advance(DefaultTokenTTL + time.Second)
			_, err := s.Key(ctx)
			return err
		}, 401, api.ReasonTokenExpired, ""},
		{"token for another workload", func(t *testing.T) error {
			s := attested(t)
			s.Workload = "strict"
			_, err := s.Key(ctx)
			return err
		}, 403, api.ReasonToken, ""},
		{"tampered token", func(t *testing.T) error {
			s := attested(t)
			s.Token = s.Token[:len(s.Token)-4] + "AAAA"
			_, err := s.Key(ctx)
			return err
		}, 401, api.ReasonToken, ""},
		{"workload changed since attestation", func(t *testing.T) error {
			s := attested(t)
			if _, err := e.reg.Put(ctx, e.workload, "test"); err != nil {
				t.Fatal(err)
			}
			_, err := s.Key(ctx)
			return err
		}, 401, api.ReasonToken, ""},
		{"pef", func(t *testing.T) error { _, err := e.client.Auth(ctx, api.TEEPEF, e.workload.ID); return err }, 501, api.ReasonUnsupported, ""},
		{"unknown workload", func(t *testing.T) error { _, err := e.client.Auth(ctx, api.TEESim, "nope"); return err }, 404, api.ReasonNotFound, ""},
		{"tee not allowed by workload", func(t *testing.T) error { _, err := e.client.Auth(ctx, api.TEESNP, "strict"); return err }, 403, api.ReasonPolicy, ""},
		{"bad workload id", func(t *testing.T) error { _, err := e.client.Auth(ctx, api.TEESim, "../x"); return err }, 400, api.ReasonBadRequest, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantAPIError(t, tc.run(t), tc.status, tc.reason, tc.field)
		})
	}
	events, err := e.audit.List(ctx, time.Time{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var denied []string
	for _, ev := range events {
		if ev.Result == audit.ResultDenied {
			denied = append(denied, ev.Reason)
		}
	}
	for _, want := range []string{"measurement", "host_data", "report_data", "debug", "tcb", "signature", "certificate_chain", "nonce refused", "token expired"} {
		if !slices.ContainsFunc(denied, func(r string) bool { return strings.Contains(r, want) }) {
			t.Errorf("no denied audit event mentions %q", want)
		}
	}
}

func TestRawRequests(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	hc := e.httpClient(t)
	post := func(path string, body []byte, hdr map[string]string) (int, api.Error) {
		return e.postRaw(t, hc, path, body, hdr)
	}
	if st, _ := post(api.PathAuth, []byte(`{"tee":"sim","workload":"`+strings.Repeat("a", 10<<10)+`"}`), nil); st != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized auth: %d", st)
	}
	if st, _ := post(api.PathAuth, []byte(`{"tee":"sim","workload":"web-frontend","x":1}`), nil); st != http.StatusBadRequest {
		t.Fatalf("unknown field: %d", st)
	}
	if st, _ := post(api.PathAuth, []byte(`{"tee":"sim","workload":"`+strings.Repeat("A", 3000)+`"}`), nil); st != http.StatusBadRequest {
		t.Fatalf("long invalid workload id: %d", st)
	}
	evs, err := e.audit.List(ctx, time.Time{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(evs, func(ev audit.Event) bool {
		return ev.Kind == audit.KindAuth && ev.Result == audit.ResultDenied && ev.Workload == "" && len(ev.Reason) <= 1024 && strings.Contains(ev.Reason, "not a valid workload id")
	}) {
		t.Fatalf("no bounded audit record for the refused auth with a long invalid workload id: %+v", evs)
	}
	if st, _ := post(api.PathAttest, []byte(`{}`), nil); st != http.StatusUnauthorized {
		t.Fatalf("attest without session: %d", st)
	}
	// A malformed attest body still consumes the nonce.
	resp0, err := hc.Post(e.url+api.PathAuth, "application/json", strings.NewReader(`{"tee":"sim","workload":"web-frontend"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp0.Body.Close()
	var cookie string
	for _, ck := range resp0.Cookies() {
		if ck.Name == api.SessionCookie {
			cookie = ck.Name + "=" + ck.Value
		}
	}
	if st, _ := post(api.PathAttest, []byte(`{"bad":1}`), map[string]string{"Cookie": cookie}); st != http.StatusBadRequest {
		t.Fatalf("malformed attest: %d", st)
	}
	if st, body := post(api.PathAttest, []byte(`{}`), map[string]string{"Cookie": cookie}); st != http.StatusUnauthorized || body.Reason != api.ReasonNonce {
		t.Fatalf("second attest on a consumed session: %d %+v", st, body)
	}
	// Key request with a TEE public key other than the attested one.
	s, err := e.client.Auth(ctx, api.TEESim, e.workload.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Attest(ctx, e.evidence(t, s, nil)); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, e.url+api.ResourceKeyPath(e.workload.ID), nil)
	req.Header.Set("Authorization", "Bearer "+s.Token)
	claims, _ := e.srv.tokens.verify(s.Token, time.Now())
	req.AddCookie(&http.Cookie{Name: api.SessionCookie, Value: claims.SessionID})
	other := make([]byte, 32)
	rand.Read(other)
	req.Header.Set(api.HeaderTEEPubKey, base64.StdEncoding.EncodeToString(other))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("key with another TEE key: %d", resp.StatusCode)
	}
	// The right key but another session cookie.
	req.Header.Set(api.HeaderTEEPubKey, base64.StdEncoding.EncodeToString(s.PublicKey()))
	req.Header.Del("Cookie")
	req.AddCookie(&http.Cookie{Name: api.SessionCookie, Value: "other"})
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("key with another session: %d", resp.StatusCode)
	}
	// Admin API without a client certificate.
	resp, err = hc.Get(e.url + api.PathAdmin + "workloads")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
		t.Fatalf("admin without client certificate: %d", resp.StatusCode)
	}
}

func TestSimDisabled(t *testing.T) {
	e := newEnv(t, envOptions{noSim: true})
	_, err := e.client.Auth(context.Background(), api.TEESim, e.workload.ID)
	wantAPIError(t, err, 403, api.ReasonUnsupported, "")
}

func TestPinnedClientRefusesOtherCA(t *testing.T) {
	e := newEnv(t, envOptions{})
	c, err := client.New(e.url, client.Options{CASHA256: hex.EncodeToString(make([]byte, 32))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CA(context.Background()); err == nil || !strings.Contains(err.Error(), "pinned") {
		t.Fatalf("pinned client with wrong hash: %v", err)
	}
	var ne net.Error
	_ = errors.As(err, &ne)
}

// TestTokenAtOtherReplica: a second broker instance with the same state and store (but its
// own session table) honours tokens issued by the first, and refuses the first's sessions.
func TestTokenAtOtherReplica(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	b, err := New(Config{Registry: e.reg, Audit: e.audit, MeshCA: e.state.MeshCA, TokenSigner: e.state.Signer,
		Verifiers: e.srv.cfg.Verifiers, Logger: e.srv.log})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := TLSConfig(e.state.TLSCert, e.state.TLSCAPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.Serve(sctx, ln, tlsCfg) }()
	defer func() { cancel(); <-done }()
	cb, err := client.New("https://"+ln.Addr().String(), client.Options{CAPEM: e.state.TLSCAPEM})
	if err != nil {
		t.Fatal(err)
	}

	s, err := e.client.Auth(ctx, api.TEESim, e.workload.ID)
	if err != nil {
		t.Fatal(err)
	}
	ev := e.evidence(t, s, nil)
	// The session lives at replica A only.
	wantAPIError(t, s.Via(cb).Attest(ctx, ev), 401, api.ReasonNonce, "")
	s2, err := e.client.Auth(ctx, api.TEESim, e.workload.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Attest(ctx, e.evidence(t, s2, nil)); err != nil {
		t.Fatal(err)
	}
	// Key and certificate at replica B with A's token.
	s2b := s2.Via(cb)
	key, err := s2b.Key(ctx)
	if err != nil || !bytes.Equal(key, e.workload.DataKey) {
		t.Fatalf("key at replica B: %v", err)
	}
	csr, _ := makeCSR(t, nil)
	if _, err := s2b.Certificate(ctx, csr); err != nil {
		t.Fatalf("certificate at replica B: %v", err)
	}
}
