package cli

import (
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/sealpod/sealpod/kbs/admin/admintest"
	"github.com/sealpod/sealpod/kbs/adminclient"
)

// TestKBSAdminRevoke: `sealctl kbs admin revoke` by file and by serial, `list-revoked` in
// table, json and yaml, and the revoked identity is refused afterwards.
func TestKBSAdminRevoke(t *testing.T) {
	srv := admintest.Start(t)
	alice, aliceClient := srv.IssueAdmin(t, "alice")
	bob, _ := srv.IssueAdmin(t, "bob")
	aliceFile := filepath.Join(t.TempDir(), "alice.pem")
	writePEMCert(t, aliceFile, alice.Raw)
	cfg := []string{"--config", srv.ConfigPath}

	out, err := runKBS(t, append(cfg, "admin", "revoke", aliceFile, "--reason", "laptop lost")...)
	if err != nil || !strings.Contains(out, "admin certificate "+adminclient.SerialOf(alice)+" revoked") {
		t.Fatalf("revoke by file: %q, %v", out, err)
	}
	out, err = runKBS(t, append(cfg, "admin", "revoke", strings.ToUpper(adminclient.SerialOf(bob)), "-o", "json")...)
	var r adminclient.Revocation
	if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.Serial != adminclient.SerialOf(bob) {
		t.Fatalf("revoke by serial -o json: %q, %v", out, err)
	}
	if _, err := aliceClient.Status(t.Context()); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("alice after revoke: %v, want refused as revoked", err)
	}
	out, err = runKBS(t, append(cfg, "admin", "list-revoked")...)
	if err != nil || !strings.Contains(out, "SERIAL") || !strings.Contains(out, "laptop lost") || !strings.Contains(out, adminclient.SerialOf(bob)) {
		t.Errorf("list-revoked table: %q, %v", out, err)
	}
	for _, format := range []string{"json", "yaml"} {
		out, err = runKBS(t, append(cfg, "admin", "list-revoked", "-o", format)...)
		var rs []adminclient.Revocation
		if err == nil {
			err = yaml.Unmarshal([]byte(out), &rs) // YAML is a superset of JSON
		}
		if err != nil || len(rs) != 2 {
			t.Errorf("list-revoked -o %s: %d entries, %v\n%s", format, len(rs), err, out)
		}
	}
	for _, bad := range []string{"not-hex", filepath.Join(t.TempDir(), "missing.pem")} {
		if _, err := runKBS(t, append(cfg, "admin", "revoke", bad)...); err == nil {
			t.Errorf("revoke %q succeeded", bad)
		}
	}
}

func writePEMCert(t *testing.T, path string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
