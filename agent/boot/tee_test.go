package boot

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/sealpod/sealpod/agent/attest"
	"github.com/sealpod/sealpod/agent/attest/attesttest"
	"github.com/sealpod/sealpod/agent/unseal"
)

// teeEnv is a guest with the given configfs-tsm provider ("" none) and device nodes, all
// served by the libraries' fakes.
func teeEnv(t *testing.T, sf *attesttest.SNP, tf *attesttest.TDX, provider string, sev, tdx bool) attest.Env {
	t.Helper()
	dir := t.TempDir()
	env := attest.Env{
		TSMDir: filepath.Join(dir, "tsm", "report"), SEVGuest: filepath.Join(dir, "sev-guest"), TDXGuest: filepath.Join(dir, "tdx_guest"),
		TSM: func() (configfsi.Client, error) {
			switch provider {
			case "sev_guest":
				return sf.TSM(), nil
			case "tdx_guest":
				return tf.TSM(), nil
			}
			return attesttest.Provider(provider), nil
		},
		OpenSEV: func(string) (attest.SEVDevice, error) { return sf.Device, nil },
		OpenTDX: func(string) (attest.TDXDevice, error) { return tf.Device, nil },
	}
	if provider != "" {
		if err := os.MkdirAll(env.TSMDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, ok := range map[string]bool{env.SEVGuest: sev, env.TDXGuest: tdx} {
		if ok {
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return env
}

// TestDetectTEELogsChoice: the evidence source and the reason reach the (debug) console
// through the allow-list, configfs-tsm first, the device next, sim last; and no evidence byte
// does, even when evidence is logged on purpose (canary REPORT_DATA).
func TestDetectTEELogsChoice(t *testing.T) {
	sf, tf := attesttest.NewSNP(t), attesttest.NewTDX(t)
	var canary [64]byte
	copy(canary[:], "CANARY-REPORT-DATA-c4n4ry-must-never-reach-the-console-0123456789")
	sf.Expect(canary)
	var otherAsked [64]byte
	copy(otherAsked[:], "asked-for-this")
	sf.ExpectCarrying(otherAsked, canary) // a device that answers with the wrong REPORT_DATA
	simAtt := unseal.NewSimAttester(&bytes.Buffer{})
	for _, tc := range []struct {
		name      string
		provider  string
		sev, tdx  bool
		wantTEE   string
		wantLines []string
	}{
		{"configfs-tsm sev_guest", "sev_guest", true, false, "snp", []string{`level=DEBUG msg="evidence source" tee=snp evidence=configfs-tsm reason="configfs-tsm present"`}},
		{"configfs-tsm tdx_guest", "tdx_guest", false, false, "tdx", []string{`level=DEBUG msg="evidence source" tee=tdx evidence=configfs-tsm reason="configfs-tsm present"`}},
		{"sev-guest", "", true, false, "snp", []string{`level=DEBUG msg="evidence source" tee=snp evidence=sev-guest reason="no configfs-tsm"`}},
		{"tdx_guest behind an unusable configfs-tsm", "arm_cca_guest", false, true, "tdx", []string{
			`level=WARN msg="configfs-tsm not used for evidence" reason="configfs-tsm unusable" err="TEE evidence unavailable"`,
			`level=DEBUG msg="evidence source" tee=tdx evidence=tdx-guest reason="configfs-tsm unusable"`}},
		{"sim", "", false, false, "sim", []string{`level=DEBUG msg="no hardware TEE interface" reason="no TEE device"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var console bytes.Buffer
			log := NewConsoleLogger(&console, true)
			att, err := detectTEE(context.Background(), teeEnv(t, sf, tf, tc.provider, tc.sev, tc.tdx), log,
				func() (unseal.Attester, error) { return simAtt, nil })
			if err != nil {
				t.Fatal(err)
			}
			if att.TEE() != tc.wantTEE {
				t.Fatalf("TEE %s, want %s", att.TEE(), tc.wantTEE)
			}
			for _, l := range tc.wantLines {
				if !strings.Contains(console.String(), l) {
					t.Fatalf("console lacks %s:\n%s", l, console.String())
				}
			}
			if att.TEE() != "snp" {
				return
			}
			// Canary: the evidence and a refusal logged every way a careless caller might.
			ev, err := att.Evidence(context.Background(), canary)
			if err != nil {
				t.Fatal(err)
			}
			rep := ev.Evidence.SNP.Report
			log.Info("evidence", "evidence", rep, "report", rep, "tee", string(rep[0x50:0x90]), "reason", hex.EncodeToString(rep))
			_, err = att.Evidence(context.Background(), otherAsked)
			if !errors.Is(err, attest.ErrReportData) {
				t.Fatalf("wrong REPORT_DATA: %v", err)
			}
			log.Warn("evidence refused", "err", err, "reason", err.Error())
			out := console.String()
			for _, leak := range []string{string(canary[:16]), hex.EncodeToString(canary[:8]), base64.StdEncoding.EncodeToString(canary[:12]),
				hex.EncodeToString(rep[0x90:0x98]) /* MEASUREMENT */, hex.EncodeToString(rep[0x2A0:0x2A8]) /* signature */} {
				if strings.Contains(out, leak) {
					t.Fatalf("evidence bytes %q reached the console:\n%s", leak, out)
				}
			}
			if !strings.Contains(out, `err="TEE evidence does not carry the requested REPORT_DATA"`) {
				t.Fatalf("refusal not shown as its kind:\n%s", out)
			}
		})
	}
}

// TestConsoleKeysTakeEveryEvidenceValue: every source and reason attest can report passes
// the console allow-list unchanged, and nothing else does under those keys.
func TestConsoleKeysTakeEveryEvidenceValue(t *testing.T) {
	for key, vals := range map[string][]string{"evidence": attest.Sources, "reason": attest.Reasons} {
		rule, ok := ConsoleKeys[key]
		if !ok {
			t.Fatalf("console key %q missing", key)
		}
		for _, v := range append(vals, "x", "") {
			want := v != "x" && v != ""
			if _, ok := rule(slog.StringValue(v)); ok != want {
				t.Errorf("%s=%q allowed %v, want %v", key, v, ok, want)
			}
		}
		if _, ok := rule(slog.AnyValue([]byte(vals[0]))); ok {
			t.Errorf("%s takes bytes", key)
		}
	}
}
