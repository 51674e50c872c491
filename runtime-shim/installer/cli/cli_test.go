package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	shimconfig "github.com/sealpod/sealpod/runtime-shim/config"
	"github.com/sealpod/sealpod/runtime-shim/installer"
)

func run(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := NewRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestInstallUninstallCommands(t *testing.T) {
	host := t.TempDir()
	cfg := filepath.Join(host, "etc/containerd/config.toml")
	os.MkdirAll(filepath.Dir(cfg), 0o755)
	orig := []byte("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.9\"\n")
	os.WriteFile(cfg, orig, 0o644)
	shim := filepath.Join(t.TempDir(), installer.ShimBinaryName)
	os.WriteFile(shim, []byte("#!/bin/sh\n"), 0o755)
	key := filepath.Join(t.TempDir(), "vcek.pem")
	os.WriteFile(key, []byte("-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----\n"), 0o600)
	mark := filepath.Join(t.TempDir(), "restarts")
	restart := "sh -c echo>>" + mark // strings.Fields split: sh, -c, echo>>mark

	out, err := run(t, "", "install", "--host-root", host, "--shim", shim, "--tee", "sim", "--sim-key", key, "--node-name", "", "--restart-cmd", restart)
	if err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	sc, err := shimconfig.Load(filepath.Join(host, shimconfig.DefaultPath))
	if err != nil || !slices.Equal(sc.TEEs, []string{"sim"}) || sc.Accel != "tcg" || sc.SimKey != installer.DefaultSimKeyPath {
		t.Fatalf("shim node config %+v %v", sc, err)
	}
	if !strings.Contains(out, "tees=sim ") || !strings.Contains(out, "restarted=true") {
		t.Fatalf("install output %q", out)
	}
	got, _ := os.ReadFile(cfg)
	if !bytes.Contains(got, []byte(installer.RuntimeType)) {
		t.Fatalf("config not edited:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(host, "usr/local/bin", installer.ShimBinaryName)); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, "", "install", "--host-root", host, "--shim", shim, "--tee", "sim", "--sim-key", key, "--node-name", "", "--restart-cmd", restart)
	if err != nil || !strings.Contains(out, "restarted=false") {
		t.Fatalf("second install: %v %q", err, out)
	}
	out, err = run(t, "", "uninstall", "--host-root", host, "--node-name", "", "--restart-cmd", restart)
	if err != nil || !strings.Contains(out, "restored=true") {
		t.Fatalf("uninstall: %v %q", err, out)
	}
	if got, _ := os.ReadFile(cfg); !bytes.Equal(got, orig) {
		t.Fatalf("config after uninstall:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(host, "etc/sealpod")); err == nil {
		t.Fatal("/etc/sealpod left after uninstall")
	}
	if b, _ := os.ReadFile(mark); string(b) != "\n\n" {
		t.Fatalf("restart command ran %q, want twice", b)
	}
}

func TestCommandErrors(t *testing.T) {
	host := t.TempDir()
	base := []string{"--host-root", host, "--node-name", "", "--shim", ""}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"install", "--no-restart"}, "no hardware TEE"},
		{[]string{"install", "--no-restart", "--tee", "sev"}, `tee "sev"`},
		{[]string{"install", "--tee", "sim"}, "no way to restart containerd"},
		{[]string{"install", "--tee", "sim", "--no-restart", "--restart-cmd", "true"}, "exclude each other"},
		{[]string{"install", "--no-restart", "--tee", "sim"}, "simKey: required"},
		{[]string{"install", "--no-restart", "--tee", "snp", "--sim-key", "/x"}, "only for --tee sim"},
		{[]string{"install", "--no-restart", "--tee", "snp", "--shim", "/nonexistent/shim"}, "not a regular file"},
		{[]string{"uninstall", "--restart-cmd", "true", "--no-restart"}, "exclude each other"},
		{[]string{"detect-tee"}, "no hardware TEE"},
		{[]string{"install", "--no-restart", "--tee", "sim,sim"}, "listed twice"},
		{[]string{"install", "--no-restart", "--tee", "sim,auto"}, "auto stands alone"},
		{[]string{"install", "--no-restart", "--tee", "sim", "--sim-tdx-key", "/x"}, "only for --tee sim-tdx"},
		{[]string{"install", "--no-restart", "--tee", "sim", "--snp-cbitpos", "47"}, "only for --tee snp"},
		{[]string{"install", "--no-restart", "--tee", "snp", "--qgs-socket", "/q.sock"}, "only for --tee tdx"},
	}
	for _, tc := range tests {
		args := append([]string{tc.args[0]}, base...)
		switch tc.args[0] {
		case "detect-tee":
			args = []string{"detect-tee", "--host-root", host}
		case "uninstall":
			args = []string{"uninstall", "--host-root", host, "--node-name", ""}
		}
		args = append(args, tc.args[1:]...)
		out, err := run(t, "", args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want %q (out %s)", tc.args, err, tc.want, out)
		}
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := run(t, "", append([]string{"install", "--tee", "snp", "--no-restart"}, "--host-root", host, "--node-name", "n1")...); err == nil || !strings.Contains(err.Error(), "not running in a Kubernetes pod") {
		t.Errorf("label outside a cluster: %v", err)
	}
	if _, err := os.Stat(filepath.Join(host, "etc")); err == nil {
		t.Fatal("a refused install wrote files")
	}
}

func TestAddRuntimeFilter(t *testing.T) {
	in := "version = 3\n"
	out, err := run(t, in, "add-runtime", "--shim-config", "/etc/sealpod/shim.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.sealpod]`) || !strings.Contains(out, `ConfigPath = "/etc/sealpod/shim.toml"`) {
		t.Fatalf("add-runtime output:\n%s", out)
	}
	back, err := run(t, out, "add-runtime", "--remove")
	if err != nil || back != in {
		t.Fatalf("remove: %v %q", err, back)
	}
	if _, err := run(t, "[plugins.cri]\n", "add-runtime"); err == nil {
		t.Fatal("version 1 config accepted")
	}
}

func TestStandaloneConfig(t *testing.T) {
	dir := t.TempDir()
	out, err := run(t, "", "standalone-config", "--dir", dir, "--sandbox-image", "127.0.0.1:5000/p:1", "--restrict-oom-score-adj")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{dir + "/containerd.sock", "runtimes.sealpod]", `"127.0.0.1:5000/p:1"`, "restrict_oom_score_adj = true"} {
		if !strings.Contains(out, want) {
			t.Errorf("config lacks %q:\n%s", want, out)
		}
	}
	if _, err := run(t, "", "standalone-config", "--dir", "relative"); err == nil || !strings.Contains(err.Error(), "not absolute") {
		t.Fatalf("relative dir: %v", err)
	}
}

// TestCheckCommand: after `install --tee sim` the node is ready (text and -o json); `check
// --tee snp` on this machine (no usable KVM, no SNP) is not ready, says why and fails.
func TestCheckCommand(t *testing.T) {
	host := t.TempDir()
	shim := filepath.Join(t.TempDir(), installer.ShimBinaryName)
	os.WriteFile(shim, []byte("#!/bin/sh\n"), 0o755)
	key := filepath.Join(t.TempDir(), "vcek.pem")
	os.WriteFile(key, []byte("-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----\n"), 0o600)
	out, err := run(t, "", "install", "--host-root", host, "--shim", shim, "--tee", "sim", "--sim-key", key, "--node-name", "", "--no-restart")
	if err != nil || !strings.Contains(out, "node ready for TEE sim") {
		t.Fatalf("install: %v\n%s", err, out)
	}

	out, err = run(t, "", "check", "--host-root", host, "--node-name", "")
	if err != nil || !strings.Contains(out, "skip  kvm") || !strings.Contains(out, "ok    containerd") || !strings.HasSuffix(out, "node ready for TEE sim\n") {
		t.Fatalf("check sim: %v\n%s", err, out)
	}
	out, err = run(t, "", "check", "--host-root", host, "--node-name", "", "-o", "json")
	var rep installer.CheckReport
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil || !rep.Ready || rep.TEE != installer.TEESim || len(rep.Items) == 0 {
		t.Fatalf("check -o json: %v\n%s", err, out)
	}

	// The sim node's install with the shim removed: not ready.
	os.Remove(filepath.Join(host, "usr/local/bin", installer.ShimBinaryName))
	out, err = run(t, "", "check", "--host-root", host, "--node-name", "")
	if !errors.Is(err, installer.ErrNotReady) || !strings.Contains(out, "FAIL  shim") {
		t.Fatalf("check without shim: %v\n%s", err, out)
	}

	if b, _ := os.ReadFile("/sys/module/kvm_amd/parameters/sev_snp"); strings.TrimSpace(string(b)) == "Y" {
		t.Skip("this machine is an SNP host")
	}
	out, err = run(t, "", "check", "--tee", "snp", "--node-name", "", "--shim-node-config", filepath.Join(host, "etc/sealpod/shim.json"))
	if !errors.Is(err, installer.ErrNotReady) || !strings.Contains(out, "node not ready for TEE snp") ||
		!strings.Contains(out, "FAIL  tee-enabled") || !strings.Contains(out, "FAIL  kvm") || !strings.Contains(out, "fix: ") {
		t.Fatalf("check --tee snp here: %v\n%s", err, out)
	}

	for _, args := range [][]string{
		{"check", "--tee", "sev"},
		{"check", "--tee", "sim", "-o", "yaml"},
		{"check", "--tee", "sim", "--host-exec", "ssh"},
	} {
		if _, err := run(t, "", args...); err == nil || errors.Is(err, installer.ErrNotReady) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

// Issue 14 item 1: install writes the TEEs the node offers (sim and sim-tdx with their keys;
// snp's launch parameters; tdx's quote socket) into the shim's node config.
func TestInstallNodeTEEs(t *testing.T) {
	key := filepath.Join(t.TempDir(), "key.pem")
	os.WriteFile(key, []byte("-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----\n"), 0o600)
	smtOff := false
	tests := []struct {
		args  []string
		check func(*shimconfig.Config) bool
	}{
		{[]string{"--tee", "sim,sim-tdx", "--sim-key", key, "--sim-tdx-key", key}, func(c *shimconfig.Config) bool {
			return slices.Equal(c.TEEs, []string{"sim", "sim-tdx"}) && c.SimKey == installer.DefaultSimKeyPath &&
				c.SimTDXKey == installer.DefaultSimTDXKeyPath && c.Accel == "tcg"
		}},
		{[]string{"--tee", "snp", "--snp-cbitpos", "47", "--snp-smt=false"}, func(c *shimconfig.Config) bool {
			return slices.Equal(c.TEEs, []string{"snp"}) && c.SNPCBitPos == 47 && c.SNPSMT != nil && *c.SNPSMT == smtOff && c.Accel == "kvm"
		}},
		{[]string{"--tee", "tdx", "--qgs-socket", "/run/qgs.sock"}, func(c *shimconfig.Config) bool {
			return slices.Equal(c.TEEs, []string{"tdx"}) && c.QGSSocket == "/run/qgs.sock" && c.Accel == "kvm"
		}},
	}
	for _, tc := range tests {
		host := t.TempDir()
		args := append([]string{"install", "--host-root", host, "--node-name", "", "--shim", "", "--no-restart"}, tc.args...)
		out, err := run(t, "", args...)
		if err != nil && !errors.Is(err, installer.ErrNotReady) {
			t.Fatalf("%v: %v\n%s", tc.args, err, out)
		}
		// One readiness report per TEE of --tee (here each fails: --shim "" copies no shim).
		for _, tee := range strings.Split(tc.args[1], ",") {
			if !strings.Contains(out, "node not ready for TEE "+tee+":") {
				t.Errorf("%v: no readiness report for TEE %s:\n%s", tc.args, tee, out)
			}
		}
		c, err := shimconfig.Load(filepath.Join(host, shimconfig.DefaultPath))
		if err != nil || !tc.check(c) {
			t.Errorf("%v: node config %+v %v", tc.args, c, err)
		}
	}
}
