package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"testing"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/client"
	"github.com/sealpod/sealpod/kbs/kbstest"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/simtee/amdsp"
)

// attested registers workload id on the broker and runs the two-request flow as the agent
// does (pinned by the CA hash, sim evidence, bound CSR); it returns the client and session.
func attested(t *testing.T, b *kbstest.Broker, id string) (*client.Client, *client.Session, *client.Release) {
	t.Helper()
	ctx := context.Background()
	meas := sha512.Sum384([]byte("kernel " + id))
	digest := sha256.Sum256([]byte("envelope " + id))
	key := make([]byte, api.DataKeySize)
	rand.Read(key)
	w := registry.Workload{ID: id, TEEs: []string{api.TEESim}, Measurements: map[string][]string{api.TEESim: {hex.EncodeToString(meas[:])}},
		EnvelopeDigest: hex.EncodeToString(digest[:]), SANs: []string{id + ".default.svc"}, DataKey: key}
	if _, err := b.Registry.Put(ctx, w, "admin:test"); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(b.URL, client.Options{CASHA256: b.CASHA256})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Auth(ctx, api.TEESim, id)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := amdsp.NewSigner(kbstest.Chain(t))
	if err != nil {
		t.Fatal(err)
	}
	rep, table, err := signer.Report(amdsp.ReportOptions{ReportData: s.ReportData(), Measurement: meas, HostData: digest})
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(s.CSRBindingURI())
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, priv)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := s.AttestRelease(ctx, &api.Evidence{SNP: &api.SNPEvidence{Report: rep, CertTable: table}}, csr)
	if err != nil {
		t.Fatal(err)
	}
	return c, s, rel
}

// TestVolumeCalls drives begin/commit through the client against the real broker with the
// token of the attest answer, which also carries the workload's volume secret.
func TestVolumeCalls(t *testing.T) {
	b := kbstest.Start(t)
	c, s, rel := attested(t, b, "db")
	if len(rel.Keys.VolumeSecret) != api.VolumeSecretSize {
		t.Fatalf("attest answer carried a volume secret of %d bytes", len(rel.Keys.VolumeSecret))
	}
	_, other, _ := attested(t, b, "web")
	ctx := context.Background()
	const vol = "prod/data-db-0"
	for _, tc := range []struct {
		name       string
		token      string
		volume     string
		commit     uint64 // 0: begin
		wantC      uint64
		wantP      uint64
		wantStatus int    // an *APIError with this status
		wantReason string // and reason
		wantErr    error  // or an error matching this (refused by the client itself)
	}{
		{name: "begin new", token: s.Token, volume: vol, wantC: 0, wantP: 1},
		{name: "begin again", token: s.Token, volume: vol, wantC: 0, wantP: 1},
		{name: "commit pending", token: s.Token, volume: vol, commit: 1, wantC: 1},
		{name: "commit replayed", token: s.Token, volume: vol, commit: 1, wantC: 1},
		{name: "begin next", token: s.Token, volume: vol, wantC: 1, wantP: 2},
		{name: "commit not pending", token: s.Token, volume: vol, commit: 3, wantStatus: http.StatusConflict, wantReason: api.ReasonVolumeConflict},
		{name: "other workload's token sees its own", token: other.Token, volume: vol, wantC: 0, wantP: 1},
		{name: "other workload's token cannot commit ours", token: other.Token, volume: vol, commit: 2, wantStatus: http.StatusConflict, wantReason: api.ReasonVolumeConflict},
		{name: "commit ours", token: s.Token, volume: vol, commit: 2, wantC: 2},
		{name: "not a token", token: "sp2.x.y", volume: vol, wantStatus: http.StatusUnauthorized, wantReason: api.ReasonToken},
		{name: "identity refused by the client", token: s.Token, volume: "prod", wantErr: api.ErrVolumeIdentity},
		{name: "identity refused by the client (commit)", token: s.Token, volume: "Prod/x", commit: 1, wantErr: api.ErrVolumeIdentity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var gotC, gotP uint64
			var err error
			if tc.commit == 0 {
				gotC, gotP, err = c.VolumeBegin(ctx, tc.token, tc.volume)
			} else {
				err = c.VolumeCommit(ctx, tc.token, tc.volume, tc.commit)
				gotC = tc.commit
			}
			var ae *client.APIError
			switch {
			case tc.wantStatus != 0:
				if !errors.As(err, &ae) || ae.Status != tc.wantStatus || ae.Body.Reason != tc.wantReason {
					t.Fatalf("error %v, want HTTP %d reason %s", err, tc.wantStatus, tc.wantReason)
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) || errors.As(err, &ae) {
					t.Fatalf("error %v, want %v from the client without a request", err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case gotC != tc.wantC || (tc.commit == 0 && gotP != tc.wantP):
				t.Fatalf("committed %d pending %d, want %d %d", gotC, gotP, tc.wantC, tc.wantP)
			}
		})
	}
}
