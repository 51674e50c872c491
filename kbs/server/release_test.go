package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/client"
	"github.com/sealpod/sealpod/simtee/amdsp"
)

// boundCSR makes a P-256 key and a CSR carrying the given URI SANs (the binding URIs of the
// two-request flow, or whatever a test wants) plus attacker-chosen DNS names.
func boundCSR(t testing.TB, uris ...string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "attacker-chosen"}, DNSNames: []string{"evil.example.com"}}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// checkChain verifies that chain is a leaf for pub with exactly the env's registered SANs,
// chaining to the broker's mesh root given as rootPEM.
func (e *env) checkChain(t *testing.T, chain [][]byte, rootPEM string, pub *ecdsa.PublicKey) {
	t.Helper()
	if rootPEM != string(e.state.MeshCA.RootPEM()) {
		t.Fatal("answer's root is not the broker's mesh root")
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(rootPEM))
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, der := range chain[1:] {
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
	if !slices.Equal(leaf.DNSNames, []string{"web.default.svc.cluster.local"}) || !slices.Equal(ips, []string{"10.0.0.7"}) || len(leaf.URIs) != 0 {
		t.Fatalf("leaf SANs dns=%v ip=%v uri=%v, want exactly the registered ones", leaf.DNSNames, ips, leaf.URIs)
	}
	if !pub.Equal(leaf.PublicKey) {
		t.Fatal("leaf key is not the CSR key")
	}
}

// okEvents counts the ok audit events of the env's workload by kind.
func (e *env) okEvents(t *testing.T) map[string]int {
	t.Helper()
	e.audit.Flush(context.Background())
	events, err := e.audit.List(context.Background(), time.Time{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, ev := range events {
		if ev.Result == audit.ResultOK && ev.Workload == e.workload.ID {
			kinds[ev.Kind]++
		}
	}
	return kinds
}

// TestTwoRequestFlow: auth → attest with a bound CSR; the one answer carries the token, the
// data key sealed to the TEE key and the certificate for the CSR's key with the registered
// SANs; the audit log holds one event per request.
func TestTwoRequestFlow(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	const flows = 3
	var volumeSecret []byte
	for range flows {
		s, err := e.client.Auth(ctx, api.TEESim, e.workload.ID)
		if err != nil {
			t.Fatalf("auth: %v", err)
		}
		csr, priv := boundCSR(t, s.CSRBindingURI())
		rel, err := s.AttestRelease(ctx, e.evidence(t, s, nil), csr)
		if err != nil {
			t.Fatalf("attest: %v", err)
		}
		if !bytes.Equal(rel.Keys.DataKey, e.workload.DataKey) || len(rel.Keys.VolumeSecret) != api.VolumeSecretSize {
			t.Fatalf("released a data key (registered: %v) and a %d-byte volume secret, want the registered data key and a %d-byte volume secret",
				bytes.Equal(rel.Keys.DataKey, e.workload.DataKey), len(rel.Keys.VolumeSecret), api.VolumeSecretSize)
		}
		if volumeSecret != nil && !bytes.Equal(volumeSecret, rel.Keys.VolumeSecret) {
			t.Fatal("two attestations of one workload released different volume secrets")
		}
		volumeSecret = rel.Keys.VolumeSecret
		e.checkChain(t, rel.Chain, rel.RootPEM, &priv.PublicKey)
		claims, err := e.srv.tokens.verify(s.Token, time.Now())
		if err != nil || claims.TEE != api.TEESim || claims.Workload != e.workload.ID || !claims.Released {
			t.Fatalf("token claims %+v, %v", claims, err)
		}
	}
	kinds := e.okEvents(t)
	want := map[string]int{audit.KindAuth: flows, audit.KindRelease: flows}
	if len(kinds) != len(want) || kinds[audit.KindAuth] != flows || kinds[audit.KindRelease] != flows {
		t.Fatalf("ok audit events %v, want %v (one per request, no key/certificate events)", kinds, want)
	}
}

// TestTwoRequestFlowRefusals: a CSR that is tampered with, unbound or bound to another
// attestation is refused and nothing is released; a token of the two-request flow does
// not fetch the key or the certificate again (replay), nor does a replayed session.
func TestTwoRequestFlowRefusals(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	auth := func(t *testing.T) *client.Session {
		t.Helper()
		s, err := e.client.Auth(ctx, api.TEESim, e.workload.ID)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	released := func(t *testing.T) *client.Session {
		t.Helper()
		s := auth(t)
		csr, _ := boundCSR(t, s.CSRBindingURI())
		if _, err := s.AttestRelease(ctx, e.evidence(t, s, nil), csr); err != nil {
			t.Fatal(err)
		}
		return s
	}
	withCSR := func(csr func(t *testing.T, s *client.Session) []byte) func(t *testing.T) error {
		return func(t *testing.T) error {
			s := auth(t)
			_, err := s.AttestRelease(ctx, e.evidence(t, s, nil), csr(t, s))
			return err
		}
	}
	tests := []struct {
		name   string
		run    func(t *testing.T) error
		status int
		reason string
		field  string
		inMsg  string
	}{
		{"tampered CSR", withCSR(func(t *testing.T, s *client.Session) []byte {
			csr, _ := boundCSR(t, s.CSRBindingURI())
			csr[len(csr)-5] ^= 1 // in the signature
			return csr
		}), 400, api.ReasonBadRequest, "", "csr: bad certificate signing request: signature"},
		{"CSR without binding", withCSR(func(t *testing.T, s *client.Session) []byte {
			csr, _ := boundCSR(t)
			return csr
		}), 400, api.ReasonBadRequest, "", "no URI SAN urn:sealpod:report-data:"},
		{"CSR bound to another attestation", withCSR(func(t *testing.T, s *client.Session) []byte {
			other := auth(t)
			csr, _ := boundCSR(t, other.CSRBindingURI())
			return csr
		}), 400, api.ReasonBadRequest, "", "names another nonce or TEE key"},
		{"CSR bound to another TEE key", withCSR(func(t *testing.T, s *client.Session) []byte {
			rd := api.ReportData(s.Nonce, make([]byte, 32))
			csr, _ := boundCSR(t, api.CSRBindingURI(rd))
			return csr
		}), 400, api.ReasonBadRequest, "", "names another nonce or TEE key"},
		{"CSR with two bindings", withCSR(func(t *testing.T, s *client.Session) []byte {
			csr, _ := boundCSR(t, s.CSRBindingURI(), s.CSRBindingURI()+"00")
			return csr
		}), 400, api.ReasonBadRequest, "", "2 binding URI SANs"},
		{"CSR not DER", withCSR(func(t *testing.T, s *client.Session) []byte { return []byte("not a CSR") }), 400, api.ReasonBadRequest, "", "csr: bad certificate signing request: asn1"},
		{"bound CSR, evidence for another nonce", func(t *testing.T) error {
			s := auth(t)
			csr, _ := boundCSR(t, s.CSRBindingURI())
			_, err := s.AttestRelease(ctx, e.evidence(t, s, func(o *amdsp.ReportOptions) { o.ReportData[0] ^= 1 }), csr)
			return err
		}, 403, api.ReasonEvidence, "report_data", ""},
		{"replayed session", func(t *testing.T) error {
			s := released(t)
			csr, _ := boundCSR(t, s.CSRBindingURI())
			_, err := s.AttestRelease(ctx, e.evidence(t, s, nil), csr)
			return err
		}, 401, api.ReasonNonce, "", "nonce refused"},
		{"token replayed at key", func(t *testing.T) error {
			_, err := released(t).Key(ctx)
			return err
		}, 403, api.ReasonToken, "", "released with this token"},
		{"token replayed at certificate", func(t *testing.T) error {
			csr, _ := makeCSR(t, nil)
			_, err := released(t).Certificate(ctx, csr)
			return err
		}, 403, api.ReasonToken, "", "released with this token"},
		{"token replayed with another session", func(t *testing.T) error {
			s := released(t)
			other := auth(t)
			other.Token = s.Token
			_, err := other.Key(ctx)
			return err
		}, 401, api.ReasonToken, "", "another session"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run(t)
			wantAPIError(t, err, tc.status, tc.reason, tc.field)
			if !strings.Contains(err.Error(), tc.inMsg) {
				t.Fatalf("error %q does not say %q", err, tc.inMsg)
			}
		})
	}
	// Only the sessions released on purpose (four of them) got keys: one ok release event each.
	kinds := e.okEvents(t)
	if kinds[audit.KindRelease] != 4 || kinds[audit.KindKey] != 0 || kinds[audit.KindCertificate] != 0 {
		t.Fatalf("ok audit events %v, want 4 releases and no key or certificate", kinds)
	}
}
