package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/internal/repopath"

	"sigs.k8s.io/yaml"

	"github.com/sealpod/sealpod/guest-image/measure"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/tee"
)

func sharedSNPDir(t *testing.T) string { return repopath.Shared(t, "snp-measure") }

func runGuest(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := NewGuestCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// TestGuestMeasureMatchesLibrary: the command prints what measure.Compute returns for the
// same inputs, and one changed byte of kernel, initrd or cmdline changes its output.
func TestGuestMeasureMatchesLibrary(t *testing.T) {
	dir := t.TempDir()
	fwPath := filepath.Join(sharedSNPDir(t), "ovmf_AmdSev_suffix.bin")
	kernel, initrd := bytes.Repeat([]byte("K"), 3000), bytes.Repeat([]byte("I"), 7000)
	kPath, iPath := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img")
	for p, b := range map[string][]byte{kPath: kernel, iPath: initrd} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"measure", "--firmware", fwPath, "--kernel", kPath, "--initrd", iPath,
		"--cmdline", "console=hvc0", "--vcpus", "2", "--vcpu-type", "EPYC-Milan", "--tee", "snp,sim", "-o", "json"}
	out, err := runGuest(t, args...)
	if err != nil {
		t.Fatalf("guest measure: %v\n%s", err, out)
	}
	var got bundle.Measurements
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	fw, err := os.ReadFile(fwPath)
	if err != nil {
		t.Fatal(err)
	}
	want, err := measure.Compute(measure.Inputs{Firmware: fw, Boot: &measure.Boot{Kernel: kernel, Initrd: initrd, Cmdline: "console=hvc0"},
		VCPUs: 2, VCPUType: "EPYC-Milan", GuestFeatures: 1, TEEs: []tee.TEE{"snp", "sim"}})
	if err != nil {
		t.Fatal(err)
	}
	if got.SNP != want.SNP || got.Sim != want.Sim || got.PEF != nil || got.SNP == "" {
		t.Fatalf("command %+v, library %+v", got, want)
	}

	// One byte of each input changes the result.
	kernel[100] ^= 1
	if err := os.WriteFile(filepath.Join(dir, "vmlinuz2"), kernel, 0o600); err != nil {
		t.Fatal(err)
	}
	variants := map[string][]string{
		"kernel":  {"--kernel", filepath.Join(dir, "vmlinuz2")},
		"cmdline": {"--cmdline", "console=hvc1"},
	}
	initrd[0] ^= 1
	if err := os.WriteFile(filepath.Join(dir, "initrd2"), initrd, 0o600); err != nil {
		t.Fatal(err)
	}
	variants["initrd"] = []string{"--initrd", filepath.Join(dir, "initrd2")}
	for name, extra := range variants {
		o, err := runGuest(t, append(append([]string{}, args...), extra...)...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var m bundle.Measurements
		if err := json.Unmarshal([]byte(o), &m); err != nil {
			t.Fatal(err)
		}
		if m.SNP == got.SNP || m.Sim == got.Sim {
			t.Errorf("changing the %s did not change the digests", name)
		}
	}
}

func TestGuestMeasureFormatsAndBundle(t *testing.T) {
	dir := t.TempDir()
	cfg := bundle.Config{Version: 1, Cmdline: "console=hvc0", VCPUs: 1, MemoryMiB: 512}
	raw, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{bundle.ConfigFile: raw, bundle.KernelFile: []byte("kernel"), bundle.InitrdFile: []byte("initrd")}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	want, err := measure.Compute(measure.Inputs{Boot: &measure.Boot{Kernel: []byte("kernel"), Initrd: []byte("initrd"), Cmdline: "console=hvc0"}, VCPUs: 1, TEEs: []tee.TEE{"sim"}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := runGuest(t, "measure", "--bundle", dir, "--tee", "sim", "-o", "yaml")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var m bundle.Measurements
	if err := yaml.Unmarshal([]byte(out), &m); err != nil || m.Sim != want.Sim {
		t.Fatalf("yaml output %q (%v), want sim %s", out, err, want.Sim)
	}
	out, err = runGuest(t, "measure", "--bundle", dir, "--tee", "sim", "-o", "text")
	if err != nil || !strings.Contains(out, "sim ") || !strings.Contains(out, want.Sim) {
		t.Fatalf("text output %q (%v)", out, err)
	}
	for name, args := range map[string][]string{
		"bad output":      {"measure", "--bundle", dir, "-o", "xml"},
		"nothing":         {"measure"},
		"initrd alone":    {"measure", "--initrd", filepath.Join(dir, bundle.InitrdFile)},
		"missing kernel":  {"measure", "--kernel", filepath.Join(dir, "nope")},
		"bad features":    {"measure", "--bundle", dir, "--guest-features", "zero"},
		"snp no firmware": {"measure", "--bundle", dir, "--tee", "snp"},
	} {
		if _, err := runGuest(t, args...); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
