package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/kbs/admin/admintest"
	"github.com/sealpod/sealpod/kbs/api"
)

// TestKBSRegisterKeysFile: what image create --keys wrote offline registers later exactly as
// image create would have registered it with a broker config.
func TestKBSRegisterKeysFile(t *testing.T) {
	dir := t.TempDir()
	keys, layout, out := filepath.Join(dir, "keys.json"), filepath.Join(dir, "layout"), filepath.Join(dir, "sealed.yaml")
	args := append(baseArgs(t, dir), "-f", "-", "--seal-secrets", "--image", "registry.local:5000/app",
		"--oci-layout", layout, "--keys", keys, "--snp-min-tcb", "3,0,8,115", "--output-file", out)
	if _, stderr, err := runSealctl(t, appYAML, args...); err != nil {
		t.Fatalf("create: %v\n%s", err, stderr)
	}
	var kf keyFile
	raw, err := os.ReadFile(keys)
	if err != nil || json.Unmarshal(raw, &kf) != nil || len(kf.Workloads) != 1 {
		t.Fatalf("keys file %s: %v", raw, err)
	}
	rec := kf.Workloads[0]

	srv := admintest.Start(t)
	kbsDir := []string{"--kbs-dir", srv.Dir}
	got, err := runKBS(t, append(kbsDir, "register", "-f", keys)...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "workload "+rec.ID+" registered (generation 1") {
		t.Errorf("register output %q", got)
	}
	js, err := runKBS(t, append(kbsDir, "-o", "json", "workload", "get", rec.ID)...)
	if err != nil {
		t.Fatal(err)
	}
	var w api.Workload
	if err := json.Unmarshal([]byte(js), &w); err != nil {
		t.Fatalf("workload get: %v\n%s", err, js)
	}
	if !slices.Equal(w.TEEs, []string{"sim"}) || !slices.Equal(w.Measurements["sim"], rec.Measurements["sim"]) ||
		w.EnvelopeDigest != rec.EnvelopeDigest || !slices.Equal(w.SANs, rec.SANs) || w.MinTCB.SNP == nil || w.MinTCB.SNP.Microcode != 115 {
		t.Errorf("registered %+v, keys record %+v", w, rec)
	}
	if got, err := runKBS(t, append(kbsDir, "register", "-f", keys)...); err != nil || !strings.Contains(got, "(generation 2") {
		t.Errorf("second register: %q %v", got, err)
	}

	// An older keys file without tees: the TEEs are the measurements'.
	old := rec
	old.TEEs, old.MinTCB = nil, nil
	if w := old.workload(); !slices.Equal(w.TEEs, []string{"sim"}) {
		t.Errorf("TEEs from measurements: %v", w.TEEs)
	}

	// Bad files are refused before any request, naming the record.
	for name, edit := range map[string]func(kf *keyFile){
		"bad envelope digest": func(kf *keyFile) { kf.Workloads[0].EnvelopeDigest = "zz" },
		"no data key":         func(kf *keyFile) { kf.Workloads[0].DataKey = nil },
		"version 2":           func(kf *keyFile) { kf.Version = 2 },
	} {
		bad := kf
		bad.Workloads = slices.Clone(kf.Workloads)
		edit(&bad)
		b, _ := json.Marshal(bad)
		p := filepath.Join(dir, "bad.json")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := runKBS(t, append(kbsDir, "register", "-f", p)...); err == nil || (!strings.Contains(err.Error(), "workloads[0] ("+rec.ID+")") && name != "version 2") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := runKBS(t, append(kbsDir, "register", "-f", filepath.Join(dir, "unknown.json"))...); err == nil {
		t.Error("missing keys file accepted")
	}
}
