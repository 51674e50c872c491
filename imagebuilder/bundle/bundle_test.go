package bundle

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/internal/tee"
)

var good = `{"version": 1, "cmdline": "console=hvc0 quiet", "vcpus": 1, "memoryMiB": 512, "future": true,
 "measurements": {"sim": "` + hex48 + `", "snp": "` + hex48 + `", "tdx": {"mrtd": "` + hex48 + `", "rtmrs": ["` + hex48 + `", ""]},
 "sim-tdx": {"mrtd": "` + hex48 + `", "rtmrs": ["", "` + hex48 + `", "` + hex48 + `", ""]}}}`

var hex48 = strings.Repeat("ab", 48)

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Arch != "" {
		t.Errorf("arch %q: an x86 guest.json has none", c.Arch)
	}
	if p, err := ParseConfig([]byte(`{"version": 1, "vcpus": 1, "memoryMiB": 512, "arch": "ppc64le"}`)); err != nil || p.Arch != ArchPPC64LE {
		t.Errorf("ppc64le: %+v, %v", p, err)
	}
	for tt, want := range map[tee.TEE]string{tee.Sim: hex48, tee.SNP: hex48, tee.TDX: hex48 + ":" + hex48 + ":",
		tee.SimTDX: hex48 + "::" + hex48 + ":" + hex48 + ":"} {
		got, err := c.Measurement(tt)
		if err != nil || got != want {
			t.Errorf("Measurement(%s) = %q, %v", tt, got, err)
		}
	}
	c.Measurements.SimTDX = nil
	if _, err := c.Measurement(tee.SimTDX); err == nil || !strings.Contains(err.Error(), "measurements.sim-tdx: missing") {
		t.Errorf("sim-tdx without a value: %v", err)
	}
	if _, err := c.Measurement("pef"); err == nil || !strings.Contains(err.Error(), "measurements.pef: missing") {
		t.Errorf("pef: %v", err)
	}
	if _, err := c.Measurement("sgx"); err == nil || !strings.Contains(err.Error(), `unknown TEE "sgx"`) {
		t.Errorf("sgx: %v", err)
	}
}

func TestParseConfigRejects(t *testing.T) {
	tests := map[string]string{
		`{"version": 2, "vcpus": 1, "memoryMiB": 512}`:                                                                              "version: unsupported version 2",
		`{"version": 1, "vcpus": 0, "memoryMiB": 512}`:                                                                              "vcpus: 0 out of range",
		`{"version": 1, "vcpus": 1, "memoryMiB": 1}`:                                                                                "memoryMiB: 1 out of range",
		`{"version": 1, "vcpus": 1, "memoryMiB": 512, "measurements": {"snp": "zz"}}`:                                               "measurements.snp: not hex",
		`{"version": 1, "vcpus": 1, "memoryMiB": 512, "measurements": {"sim": "abcd"}}`:                                             "measurements.sim: 2 bytes, want 48",
		`{"version": 1, "vcpus": 1, "memoryMiB": 512, "measurements": {"tdx": {"mrtd": ""}}}`:                                       "measurements.tdx.mrtd",
		`{"version": 1, "vcpus": 1, "memoryMiB": 512, "measurements": {"sim-tdx": {"mrtd": "` + hex48 + `", "rtmrs": ["", "ab"]}}}`: "measurements.sim-tdx.rtmrs[1]",
		`{"version": 1, "vcpus": 1, "memoryMiB": 512, "cmdline": "a\u0000b"}`:                                                       "cmdline: contains a NUL",
		`{"version": 1,`: "guest.json: unexpected end",
		`{"version": 1, "vcpus": 1, "memoryMiB": 512, "arch": "ppc64"}`:  `arch: "ppc64"`,
		`{"version": 1, "vcpus": 1, "memoryMiB": 512, "arch": "x86_64"}`: `arch: "x86_64" (want absent`,
	}
	for in, want := range tests {
		if _, err := ParseConfig([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", in, err, want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(ConfigFile, good)
	write(KernelFile, "k")
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), InitrdFile) {
		t.Fatalf("missing initrd: %v", err)
	}
	write(InitrdFile, "i")
	b, err := Load(dir)
	if err != nil || b.Firmware != nil || string(b.Kernel) != "k" {
		t.Fatalf("load: %+v %v", b, err)
	}
	write(FirmwareFile, "f")
	if b, err = Load(dir); err != nil || string(b.Firmware) != "f" {
		t.Fatalf("firmware: %v", err)
	}
	// Marshal round-trips.
	out, err := b.Config.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ParseConfig(out)
	if err != nil || c2.Measurements.SNP != hex48 {
		t.Fatalf("round trip: %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(`{"version":1,"vcpus":1,"memoryMiB":64,"measurements":{"tdx":{"mrtd":"00","rtmrs":["x"]}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed config does not validate: %v", err)
		}
		for _, tt := range tee.Known {
			_, _ = c.Measurement(tt)
		}
	})
}
