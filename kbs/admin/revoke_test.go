package admin_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/admin"
	"github.com/sealpod/sealpod/kbs/admin/admintest"
	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/store"
)

// leafOf parses the first PEM certificate of certFile.
func leafOf(t *testing.T, certFile string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", certFile)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDenyListInStoreChecked: a serial on the store's deny-list ("admin-revoked" bucket,
// key = lowercase hex serial) is refused on every admin request.
func TestDenyListInStoreChecked(t *testing.T) {
	srv := admintest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("status before revocation: %v", err)
	}
	leaf := leafOf(t, filepath.Join(srv.Dir, "admin", "client.pem"))
	rec, _ := json.Marshal(map[string]any{"serial": leaf.SerialNumber.Text(16), "revokedAt": time.Now().UTC()})
	if err := srv.Store.Update(ctx, func(tx store.Tx) error { return tx.Put(admin.BucketRevoked, leaf.SerialNumber.Text(16), rec) }); err != nil {
		t.Fatal(err)
	}
	_, err := c.Status(ctx)
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusForbidden {
		t.Fatalf("status with a revoked admin certificate = %v, want 403", err)
	}
}

// TestRevoke: an admin revokes another admin's certificate (by serial or from its PEM); the
// revoked identity is refused on every endpoint from then on, the deny-list lists it, and an
// admin cannot lock itself out by revoking its own certificate.
func TestRevoke(t *testing.T) {
	srv := admintest.Start(t)
	ctx := context.Background()
	owner := srv.Client(t)
	aliceCert, alice := srv.IssueAdmin(t, "alice")
	bobCert, bob := srv.IssueAdmin(t, "bob")
	for name, c := range map[string]*admin.Client{"alice": alice, "bob": bob} {
		if st, err := c.Status(ctx); err != nil || st.Identity == "" {
			t.Fatalf("%s before revocation: %v", name, err)
		}
	}
	// alice by serial (openssl's colon form), bob from his certificate file.
	colon := ""
	for i, b := range aliceCert.SerialNumber.Bytes() {
		if i > 0 {
			colon += ":"
		}
		colon += fmt.Sprintf("%02X", b)
	}
	if _, err := owner.Revoke(ctx, admin.RevokeRequest{Serial: colon, Reason: "laptop lost"}); err != nil {
		t.Fatalf("revoke alice: %v", err)
	}
	req, err := admin.RevokeRequestFromPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: bobCert.Raw}), "left")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Revoke(ctx, req); err != nil {
		t.Fatalf("revoke bob: %v", err)
	}
	for name, c := range map[string]*admin.Client{"alice": alice, "bob": bob} {
		for op, call := range map[string]func() error{
			"status":    func() error { _, err := c.Status(ctx); return err },
			"workloads": func() error { _, err := c.ListWorkloads(ctx); return err },
			"revoke":    func() error { _, err := c.Revoke(ctx, admin.RevokeRequest{Serial: "1234"}); return err },
		} {
			var ae *admin.APIError
			if err := call(); !errors.As(err, &ae) || ae.StatusCode != http.StatusForbidden || !strings.Contains(ae.Message, "revoked") {
				t.Errorf("%s %s after revocation = %v, want 403 revoked", name, op, err)
			}
		}
	}
	list, err := owner.ListRevoked(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]admin.Revocation{}
	for _, r := range list {
		got[r.Serial] = r
	}
	if a := got[admin.SerialOf(aliceCert)]; a.Reason != "laptop lost" || a.RevokedBy == "" || a.RevokedAt.IsZero() {
		t.Errorf("alice's entry = %+v", a)
	}
	if b := got[admin.SerialOf(bobCert)]; !strings.Contains(b.Subject, "bob") || !b.NotAfter.Equal(bobCert.NotAfter) {
		t.Errorf("bob's entry = %+v, want subject and notAfter from the certificate", b)
	}
	if len(list) != 2 {
		t.Errorf("deny-list has %d entries, want 2", len(list))
	}
	// The owner still works and cannot revoke itself; bad serials are refused.
	ownLeaf := leafOf(t, filepath.Join(srv.Dir, "admin", "client.pem"))
	var ae *admin.APIError
	if _, err := owner.Revoke(ctx, admin.RevokeRequest{Serial: admin.SerialOf(ownLeaf)}); !errors.As(err, &ae) || ae.StatusCode != http.StatusConflict {
		t.Errorf("self-revocation = %v, want 409", err)
	}
	for _, bad := range []string{"", "xyz", "0", strings.Repeat("f", 41)} {
		if _, err := owner.Revoke(ctx, admin.RevokeRequest{Serial: bad}); err == nil {
			t.Errorf("revoke serial %q accepted", bad)
		}
	}
	if _, err := owner.Status(ctx); err != nil {
		t.Errorf("owner after revocations: %v", err)
	}
	// Every refusal is in the audit log.
	evs, err := srv.Audit.List(ctx, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	denied := 0
	for _, e := range evs {
		if e.Kind == audit.KindAdmin && e.Result == audit.ResultDenied && strings.Contains(e.Reason, "revoked") {
			denied++
		}
	}
	if denied != 6 {
		t.Errorf("audit log holds %d revoked-certificate refusals, want 6", denied)
	}
}

func TestNormalizeSerial(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"0x1A2b", "1a2b"}, {"00:1A:2B", "1a2b"}, {" 1a2b ", "1a2b"}, {"-5", ""}, {"0", ""}, {"zz", ""},
	} {
		got, err := admin.NormalizeSerial(tc.in)
		if (err != nil) != (tc.want == "") || got != tc.want {
			t.Errorf("NormalizeSerial(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
