package cli

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/sealpod/sealpod/kbs/admin/admintest"
	"github.com/sealpod/sealpod/kbs/api"
)

func runKBS(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := NewKBSCmd()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestKBSCommands(t *testing.T) {
	srv := admintest.Start(t)
	dir := t.TempDir()
	key := bytes.Repeat([]byte{0xc3, 0x3c}, 16)
	keyFile := filepath.Join(dir, "web.key")
	os.WriteFile(keyFile, []byte(hex.EncodeToString(key)+"\n"), 0o600)
	wlFile := filepath.Join(dir, "web.yaml")
	os.WriteFile(wlFile, []byte(`id: web
tees: [snp, sim]
measurements:
  snp: ["`+strings.Repeat("ab", 48)+`"]
  sim: ["`+strings.Repeat("cd", 48)+`"]
envelopeDigest: "`+strings.Repeat("ef", 32)+`"
minTcb:
  snp: {bootloader: 3, tee: 0, snp: 8, microcode: 115}
sans: [web.default.svc, 10.0.0.7]
`), 0o600)
	kbsDir := []string{"--kbs-dir", srv.Dir}
	cfg := []string{"--config", srv.ConfigPath}

	out, err := runKBS(t, append(kbsDir, "workload", "add", "-f", wlFile, "--data-key-file", keyFile)...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "workload web registered (generation 1, history entry 1") {
		t.Errorf("add output: %q", out)
	}
	// Flags-only registration, JSON output of the history entry.
	out, err = runKBS(t, append(cfg, "workload", "add", "--id", "db", "--tee", "sim", "--measurement", "sim="+strings.Repeat("AB", 48),
		"--envelope-digest", strings.Repeat("12", 32), "--san", "db.default.svc", "--data-key-file", keyFile, "-o", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	var entry api.HistoryEntry
	if err := json.Unmarshal([]byte(out), &entry); err != nil || entry.Seq != 2 || entry.WorkloadID != "db" {
		t.Fatalf("add -o json: %v %+v\n%s", err, entry, out)
	}
	if stored, _ := srv.Registry.Get(context.Background(), "db"); !bytes.Equal(stored.DataKey, key) {
		t.Fatalf("stored key %x", stored.DataKey)
	}
	// Local validation names the field before contacting the broker.
	if _, err := runKBS(t, append(cfg, "workload", "add", "--id", "bad", "--tee", "sim", "--measurement", "sim=00", "--envelope-digest", strings.Repeat("12", 32))...); !errors.Is(err, api.ErrInvalidWorkload) || !strings.Contains(err.Error(), "measurements[sim][0]") {
		t.Fatalf("invalid add: %v", err)
	}

	// list in the three formats.
	out, err = runKBS(t, append(cfg, "workload", "list")...)
	if err != nil || !strings.HasPrefix(out, "ID") || !strings.Contains(out, "web") || !strings.Contains(out, "db") || !strings.Contains(out, "snp,sim") {
		t.Fatalf("list table: %v\n%s", err, out)
	}
	out, err = runKBS(t, append(cfg, "workload", "list", "-o", "json")...)
	var ws []api.Workload
	if err != nil || json.Unmarshal([]byte(out), &ws) != nil || len(ws) != 2 || ws[1].ID != "web" {
		t.Fatalf("list json: %v\n%s", err, out)
	}
	out, err = runKBS(t, append(cfg, "workload", "list", "-o", "yaml")...)
	ws = nil
	if err != nil || yaml.Unmarshal([]byte(out), &ws) != nil || len(ws) != 2 || ws[0].ID != "db" {
		t.Fatalf("list yaml: %v\n%s", err, out)
	}
	if strings.Contains(out, "dataKey") {
		t.Fatalf("list shows a data key:\n%s", out)
	}

	// get in the three formats.
	out, err = runKBS(t, append(cfg, "workload", "get", "web")...)
	if err != nil || !strings.Contains(out, "Min SNP TCB:") || !strings.Contains(out, "10.0.0.7") {
		t.Fatalf("get table: %v\n%s", err, out)
	}
	out, err = runKBS(t, append(cfg, "workload", "get", "web", "-o", "yaml")...)
	var w api.Workload
	if err != nil || yaml.Unmarshal([]byte(out), &w) != nil || w.MinTCB.SNP.Microcode != 115 || w.DataKey != nil {
		t.Fatalf("get yaml: %v\n%s", err, out)
	}
	out, err = runKBS(t, append(cfg, "workload", "get", "web", "-o", "json")...)
	if err != nil || strings.Contains(out, "dataKey") || !strings.Contains(out, `"envelopeDigest"`) {
		t.Fatalf("get json: %v\n%s", err, out)
	}
	if _, err := runKBS(t, append(cfg, "workload", "get", "nope")...); !errors.Is(err, api.ErrWorkloadNotFound) {
		t.Fatalf("get missing: %v", err)
	}

	// rm, history, status, ca, audit.
	if out, err = runKBS(t, append(cfg, "workload", "rm", "db")...); err != nil || !strings.Contains(out, "workload db removed (history entry 3)") {
		t.Fatalf("rm: %v\n%s", err, out)
	}
	out, err = runKBS(t, append(cfg, "history", "-o", "json")...)
	var hist []api.HistoryEntry
	if err != nil || json.Unmarshal([]byte(out), &hist) != nil || len(hist) != 3 {
		t.Fatalf("history: %v\n%s", err, out)
	}
	if _, err := api.VerifyHistory(hist, srv.State.Signer.Public()); err != nil {
		t.Fatal(err)
	}
	out, err = runKBS(t, append(cfg, "status")...)
	if err != nil || !strings.Contains(out, "Workloads:") || !strings.Contains(out, "verified") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	out, err = runKBS(t, append(cfg, "ca", "--pem")...)
	if err != nil || out != string(srv.State.MeshCA.RootPEM()) {
		t.Fatalf("ca --pem: %v\n%s", err, out)
	}
	out, err = runKBS(t, append(cfg, "ca", "-o", "yaml")...)
	if err != nil || !strings.Contains(out, "rootSha256:") {
		t.Fatalf("ca yaml: %v\n%s", err, out)
	}
	out, err = runKBS(t, append(cfg, "audit", "--since", "1h", "-o", "json")...)
	var evs []api.AuditEvent
	if err != nil || json.Unmarshal([]byte(out), &evs) != nil || len(evs) != 3 {
		t.Fatalf("audit json (want 3 admin events): %v\n%s", err, out)
	}
	out, err = runKBS(t, append(cfg, "audit", "--limit", "1")...)
	if err != nil || strings.Count(out, "\n") != 2 || !strings.HasPrefix(out, "TIME") {
		t.Fatalf("audit table --limit 1: %v\n%s", err, out)
	}
	if _, err := runKBS(t, append(cfg, "workload", "list", "-o", "xml")...); err == nil {
		t.Fatal("-o xml accepted")
	}
}

func TestKBSConfigResolution(t *testing.T) {
	t.Setenv("SEALPOD_KBS_CONFIG", "/nonexistent/kbs.json")
	if _, err := runKBS(t, "status"); err == nil || !strings.Contains(err.Error(), "/nonexistent/kbs.json") {
		t.Fatalf("status with missing config: %v", err)
	}
	if _, err := runKBS(t, "--kbs-dir", "/nonexistent-dir", "status"); err == nil || !strings.Contains(err.Error(), "/nonexistent-dir/admin/sealctl-kbs.json") {
		t.Fatalf("status with missing kbs dir: %v", err)
	}
}

func TestKBSWorkloadAddFromStdinJSON(t *testing.T) {
	srv := admintest.Start(t)
	key := bytes.Repeat([]byte{7}, 32)
	body, _ := json.Marshal(api.Workload{
		ID: "api", TEEs: []string{"tdx"},
		Measurements:   map[string][]string{"tdx": {strings.Repeat("ab", 48) + "::" + strings.Repeat("02", 48) + ":" + strings.Repeat("03", 48) + ":" + strings.Repeat("01", 48)}},
		EnvelopeDigest: strings.Repeat("ef", 32), SANs: []string{"spiffe://sealpod/api"}, DataKey: key,
	})
	cmd := NewKBSCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetIn(bytes.NewReader(body))
	cmd.SetArgs([]string{"--config", srv.ConfigPath, "workload", "add", "-f", "-", "-o", "yaml"})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	var entry api.HistoryEntry
	if err := yaml.Unmarshal(out.Bytes(), &entry); err != nil || entry.WorkloadID != "api" || entry.Workload.Measurements["tdx"][0] == "" {
		t.Fatalf("add -o yaml: %v\n%s", err, out.String())
	}
	stored, err := srv.Registry.Get(context.Background(), "api")
	if err != nil || !bytes.Equal(stored.DataKey, key) {
		t.Fatalf("stored %+v, %v", stored, err)
	}
	// Unknown fields in a workload file are refused.
	cmd = NewKBSCmd()
	cmd.SetIn(strings.NewReader(`{"id":"api","tees":["tdx"],"measurment":{}}`))
	cmd.SetOut(io.Discard)
	cmd.SetArgs([]string{"--config", srv.ConfigPath, "workload", "add", "-f", "-"})
	if err := cmd.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "measurment") {
		t.Fatalf("unknown field: %v", err)
	}
}
