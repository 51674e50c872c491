package setup

import (
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/admin"
)

// TestAdminCertDefaultLifetime: the admin client identity that init writes is short-lived
// (docs/security.md: admin credentials expire and can be revoked).
func TestAdminCertDefaultLifetime(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kbs")
	if err := Init(dir, []string{"127.0.0.1"}, ""); err != nil {
		t.Fatal(err)
	}
	c, _, err := parseCertFile(filepath.Join(dir, "admin", adminClientCertFile))
	if err != nil {
		t.Fatal(err)
	}
	const want = 90 * 24 * time.Hour
	if got := c.NotAfter.Sub(c.NotBefore); got > want+10*time.Minute {
		t.Fatalf("admin client certificate valid for %v (%.0f days), want at most %v", got, got.Hours()/24, want)
	}
}

// TestAdminCertValidityOptions: init's and IssueAdminClient's lifetimes, names and bounds.
func TestAdminCertValidityOptions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kbs")
	if err := InitWith(dir, []string{"127.0.0.1"}, "", InitOptions{AdminCertValidity: 7 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	c, _, err := parseCertFile(filepath.Join(dir, "admin", adminClientCertFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.NotAfter.Sub(c.NotBefore); got != 7*24*time.Hour+5*time.Minute {
		t.Errorf("init --admin-cert-validity 7d: certificate valid for %v", got)
	}
	for _, bad := range []time.Duration{time.Minute, 3 * 365 * 24 * time.Hour} {
		if err := InitWith(filepath.Join(t.TempDir(), "x"), []string{"127.0.0.1"}, "", InitOptions{AdminCertValidity: bad}); err == nil {
			t.Errorf("InitWith validity %v accepted", bad)
		}
	}
	st, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		validity time.Duration
		want     time.Duration
		ok       bool
	}{
		{"alice", 0, DefaultAdminCertValidity, true},
		{"ci.deploy-1", 30 * 24 * time.Hour, 30 * 24 * time.Hour, true},
		{"Bad Name", 0, 0, false},
		{"bob", 10 * 365 * 24 * time.Hour, 0, false},
	} {
		out := filepath.Join(t.TempDir(), "out")
		cert, err := IssueAdminClient(dir, tc.name, tc.validity, out)
		if (err == nil) != tc.ok {
			t.Errorf("IssueAdminClient(%q, %v) error = %v, want ok=%v", tc.name, tc.validity, err, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		if got := cert.NotAfter.Sub(cert.NotBefore); got != tc.want+5*time.Minute || cert.Subject.CommonName != tc.name {
			t.Errorf("%s: valid %v, CN %q", tc.name, got, cert.Subject.CommonName)
		}
		if err := admin.CheckIdentity(cert); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: st.AdminCAPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: not verified by the admin CA: %v", tc.name, err)
		}
		if _, err := admin.ReadClientConfig(filepath.Join(out, "sealctl-kbs.json")); err != nil {
			t.Errorf("%s: config: %v", tc.name, err)
		}
		if _, err := IssueAdminClient(dir, tc.name, 0, out); err == nil {
			t.Errorf("%s: IssueAdminClient overwrote %s", tc.name, out)
		}
	}
}
