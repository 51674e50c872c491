package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, in string
		wantErr  bool
		check    func(*Config) bool
	}{
		{"sim with defaults", `{"tee":"sim","simKey":"/k.pem"}`, false, func(c *Config) bool {
			return c.QEMU == "qemu-system-x86_64" && c.Accel == "tcg" && c.StateDir == "/run/sealpod" &&
				c.Network == NetworkTap && time.Duration(c.BootTimeout) == 180*time.Second &&
				c.QEMUUID == DefaultQEMUID && c.QEMUGID == DefaultQEMUID &&
				c.MaxGuestMemoryMiB == DefaultMaxGuestMemoryMiB && c.MaxGuestVCPUs == DefaultMaxGuestVCPUs
		}},
		{"qemu user and guest caps", `{"tee":"snp","qemuUID":5000,"qemuGID":5001,"maxGuestMemoryMiB":2048,"maxGuestVCPUs":2}`, false,
			func(c *Config) bool {
				return c.QEMUUID == 5000 && c.QEMUGID == 5001 && c.MaxGuestMemoryMiB == 2048 && c.MaxGuestVCPUs == 2
			}},
		{"negative qemu uid", `{"tee":"snp","qemuUID":-1}`, true, nil},
		{"invalid qemu uid", `{"tee":"snp","qemuUID":4294967295}`, true, nil},
		{"guest memory cap too large", `{"tee":"snp","maxGuestMemoryMiB":2000000}`, true, nil},
		{"guest vcpu cap negative", `{"tee":"snp","maxGuestVCPUs":-4}`, true, nil},
		{"all fields", `{"tee":"sim","simKey":"/k","qemu":"/q","accel":"kvm","stateDir":"/run/sp","network":"tap","bootTimeout":"30s"}`, false,
			func(c *Config) bool {
				return c.Accel == "kvm" && c.Network == NetworkTap && time.Duration(c.BootTimeout) == 30*time.Second
			}},
		{"snp", `{"tee":"snp"}`, false, func(c *Config) bool { return c.TEE == "snp" }},
		{"unknown field", `{"tee":"sim","simKey":"/k","tees":"x"}`, true, nil},
		{"unknown tee", `{"tee":"sgx"}`, true, nil},
		{"sim without key", `{"tee":"sim"}`, true, nil},
		{"key on snp", `{"tee":"snp","simKey":"/k"}`, true, nil},
		{"bad accel", `{"tee":"snp","accel":"hvf"}`, true, nil},
		{"relative state dir", `{"tee":"snp","stateDir":"run/sp"}`, true, nil},
		{"long state dir", `{"tee":"snp","stateDir":"/run/a-state-directory-far-too-long-for-sockets"}`, true, nil},
		{"bad network", `{"tee":"snp","network":"bridge"}`, true, nil},
		{"bad duration", `{"tee":"snp","bootTimeout":"soon"}`, true, nil},
		{"trailing", `{"tee":"snp"} {}`, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.in))
			if tc.wantErr {
				if err == nil || !errors.Is(err, ErrInvalid) {
					t.Fatalf("Parse(%s) = %+v, %v; want ErrInvalid", tc.in, c, err)
				}
				return
			}
			if err != nil || !tc.check(c) {
				t.Fatalf("Parse(%s) = %+v, %v", tc.in, c, err)
			}
		})
	}
}

func TestLoadPath(t *testing.T) {
	p := filepath.Join(t.TempDir(), "shim.json")
	if err := os.WriteFile(p, []byte(`{"tee":"sim","simKey":"/k"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvPath, p)
	if Path() != p {
		t.Fatalf("Path() = %q", Path())
	}
	if c, err := Load(Path()); err != nil || c.TEE != "sim" {
		t.Fatalf("Load: %+v %v", c, err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"tee":"sim","simKey":"/k.pem"}`))
	f.Add([]byte(`{"tee":"snp","bootTimeout":"1s","network":"tap"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("Parse accepted a configuration that does not validate: %v", verr)
			}
		}
	})
}
