package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sealpod/sealpod/internal/tee"
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
				c.MaxGuestMemoryMiB == DefaultMaxGuestMemoryMiB && c.MaxGuestVCPUs == DefaultMaxGuestVCPUs &&
				c.EmulatedBIOS == DefaultEmulatedBIOS
		}},
		{"seabios", `{"tee":"sim","simKey":"/k","emulatedBIOS":"seabios"}`, false, func(c *Config) bool { return c.EmulatedBIOS == EmulatedBIOSSeaBIOS }},
		{"another bios", `{"tee":"sim","simKey":"/k","emulatedBIOS":"/opt/bios.bin"}`, false, func(c *Config) bool { return c.EmulatedBIOS == "/opt/bios.bin" }},
		{"relative bios", `{"tee":"sim","simKey":"/k","emulatedBIOS":"qboot.rom"}`, true, nil},
		{"bios with comma", `{"tee":"sim","simKey":"/k","emulatedBIOS":"/a,b.rom"}`, true, nil},
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
		{"snp", `{"tee":"snp"}`, false, func(c *Config) bool { return c.TEE == "" && slices.Equal(c.TEEs, []string{"snp"}) && c.Accel == "kvm" }},
		{"unknown field", `{"tees":["sim"],"simKey":"/k","simKeys":"/k"}`, true, nil},
		{"unknown tee", `{"tee":"sgx"}`, true, nil},
		{"sim without key", `{"tee":"sim"}`, true, nil},
		{"key on snp", `{"tee":"snp","simKey":"/k"}`, true, nil},
		{"relative sim key", `{"tee":"sim","simKey":"k.pem"}`, true, nil},
		{"bad accel", `{"tee":"snp","accel":"hvf"}`, true, nil},
		// Issue 14 item 1: the TEEs a node offers, their keys and launch parameters.
		{"tees", `{"tees":["sim","sim-tdx"],"simKey":"/k","simTDXKey":"/t"}`, false, func(c *Config) bool {
			return slices.Equal(c.Offers(), []tee.TEE{tee.Sim, tee.SimTDX}) && c.SimTDXKey == "/t" && c.Accel == "tcg"
		}},
		{"legacy tee is tees of one", `{"tee":"sim","simKey":"/k"}`, false, func(c *Config) bool {
			return slices.Equal(c.Offers(), []tee.TEE{tee.Sim}) && c.TEE == ""
		}},
		{"tee and tees", `{"tee":"sim","tees":["sim"],"simKey":"/k"}`, true, nil},
		{"tee and empty tees", `{"tee":"sim","tees":[],"simKey":"/k"}`, true, nil},
		{"no tee", `{"simKey":"/k"}`, true, nil},
		{"empty tees", `{"tees":[]}`, true, nil},
		{"unknown tee in tees", `{"tees":["sim","sgx"],"simKey":"/k"}`, true, nil},
		{"repeated tee", `{"tees":["snp","snp"]}`, true, nil},
		{"sim-tdx without its key", `{"tees":["sim-tdx"]}`, true, nil},
		{"sim-tdx with only the sim key", `{"tees":["sim","sim-tdx"],"simKey":"/k"}`, true, nil},
		{"sim-tdx key without sim-tdx", `{"tees":["sim"],"simKey":"/k","simTDXKey":"/t"}`, true, nil},
		{"relative sim-tdx key", `{"tees":["sim-tdx"],"simTDXKey":"t.pem"}`, true, nil},
		{"sim-pef", `{"tees":["sim-pef"],"simPEFKey":"/p"}`, false, func(c *Config) bool { return c.Offer(tee.SimPEF) && c.SimPEFKey == "/p" }},
		{"sim-pef without its key", `{"tees":["sim-pef"]}`, true, nil},
		{"sim-pef key without sim-pef", `{"tees":["sim"],"simKey":"/k","simPEFKey":"/p"}`, true, nil},
		{"relative sim-pef key", `{"tees":["sim-pef"],"simPEFKey":"p.pem"}`, true, nil},
		{"snp under tcg", `{"tee":"snp","accel":"tcg"}`, true, nil},
		{"tdx under tcg", `{"tees":["tdx"],"accel":"tcg"}`, true, nil},
		{"sim and tdx under tcg", `{"tees":["sim","tdx"],"simKey":"/k","accel":"tcg"}`, true, nil},
		{"sim and snp default to kvm", `{"tees":["sim","snp"],"simKey":"/k"}`, false, func(c *Config) bool { return c.Accel == "kvm" }},
		{"snp launch parameters", `{"tees":["snp"],"snpCBitPos":47,"snpReducedPhysBits":1,"snpSMT":false}`, false, func(c *Config) bool {
			return c.SNPCBitPos == 47 && c.SNPReducedPhysBits == 1 && !c.SNPSMTAllowed()
		}},
		{"snp smt by default", `{"tees":["snp"]}`, false, func(c *Config) bool { return c.SNPSMTAllowed() && c.SNPCBitPos == 0 }},
		{"snp cbitpos out of range", `{"tees":["snp"],"snpCBitPos":12}`, true, nil},
		{"snp reduced phys bits negative", `{"tees":["snp"],"snpReducedPhysBits":-1}`, true, nil},
		{"snp parameters without snp", `{"tees":["tdx"],"snpCBitPos":51}`, true, nil},
		{"snp smt without snp", `{"tees":["sim"],"simKey":"/k","snpSMT":true}`, true, nil},
		{"qgs socket", `{"tees":["tdx"],"qgsSocket":"/run/qgs.sock"}`, false, func(c *Config) bool { return c.QGS() == "unix:/run/qgs.sock" }},
		{"qgs default", `{"tees":["tdx"]}`, false, func(c *Config) bool { return c.QGS() == "unix:"+DefaultQGSSocket }},
		{"qgs without tdx", `{"tees":["snp"],"qgsSocket":"/run/qgs.sock"}`, true, nil},
		{"qgs relative", `{"tees":["tdx"],"qgsSocket":"run/qgs.sock"}`, true, nil},
		{"qgs with comma", `{"tees":["tdx"],"qgsSocket":"/run/q,s.sock"}`, true, nil},
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
	if c, err := Load(Path()); err != nil || !c.Offer(tee.Sim) {
		t.Fatalf("Load: %+v %v", c, err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"tee":"sim","simKey":"/k.pem"}`))
	f.Add([]byte(`{"tee":"snp","bootTimeout":"1s","network":"tap"}`))
	f.Add([]byte(`{"tees":["sim","sim-tdx","snp"],"simKey":"/k","simTDXKey":"/t","snpCBitPos":51,"snpSMT":false}`))
	f.Add([]byte(`{"tees":["tdx"],"qgsSocket":"/run/q.sock"}`))
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
