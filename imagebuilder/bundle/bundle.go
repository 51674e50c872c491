// Package bundle reads and writes the guest bundle (docs/formats.md): a directory holding
// vmlinuz, initrd.img, optionally firmware.fd, and guest.json (boot parameters and the
// per-TEE reference measurements).
package bundle

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sealpod/sealpod/internal/tee"
)

// File names inside a guest bundle directory (and under /sealpod/guest/ in a secure image).
const (
	KernelFile   = "vmlinuz"
	InitrdFile   = "initrd.img"
	FirmwareFile = "firmware.fd"
	ConfigFile   = "guest.json"
)

// Version is the guest.json format version this code writes and accepts.
const Version = 1

// ArchPPC64LE is guest.json's arch of a ppc64le (pseries, IBM PEF) guest.
const ArchPPC64LE = "ppc64le"

// Config is guest.json.
type Config struct {
	Version   int    `json:"version"`
	Cmdline   string `json:"cmdline"`
	VCPUs     int    `json:"vcpus"`
	MemoryMiB int    `json:"memoryMiB"`
	VCPUType  string `json:"vcpuType,omitempty"`
	// Arch is the guest's architecture: "" (x86_64) or "ppc64le" (a pseries guest for IBM PEF,
	// booted with qemu-system-ppc64 -M pseries; its kernel is the vmlinux ELF).
	Arch         string       `json:"arch,omitempty"`
	Measurements Measurements `json:"measurements"`
}

// Measurements are the reference launch measurements of the guest, per TEE, as lowercase hex.
type Measurements struct {
	// Sim is the SNP launch digest the simulated AMD-SP reports (same algorithm as SNP).
	Sim string `json:"sim,omitempty"`
	// SNP is the 48-byte SEV-SNP launch digest.
	SNP string `json:"snp,omitempty"`
	// TDX holds MRTD and the predictable RTMRs.
	TDX *TDXMeasurement `json:"tdx,omitempty"`
	// SimTDX is the TDX-format value the simulated TDX of sim-tdx reports (MRTD of the
	// firmware bytes, RTMR[1]/[2] of kernel, initrd and command line; docs/measurements.md).
	SimTDX *TDXMeasurement `json:"sim-tdx,omitempty"`
	// PEF holds the digests an ESM blob would carry.
	PEF *PEFMeasurement `json:"pef,omitempty"`
}

// TDXMeasurement is the TDX reference value: MRTD and RTMR[0..3] (empty string = not pinned).
type TDXMeasurement struct {
	MRTD  string   `json:"mrtd"`
	RTMRs []string `json:"rtmrs,omitempty"`
}

// PEFMeasurement lists the digests of a PEF ESM blob, lowercase hex. sealctl (package
// imagebuilder/pefseal) writes svm-tools' digests: SHA-512 of the objcopy'd vmlinux (and its
// size), of the initrd without the ESM cpio, of the command line and svm-tools' RTAS digest.
// Values without RTAS are the older SHA-256 stand-in of guest-image/measure.
type PEFMeasurement struct {
	Kernel     string `json:"kernel"`
	KernelSize uint32 `json:"kernelSize,omitempty"`
	Initrd     string `json:"initrd"`
	Cmdline    string `json:"cmdline"`
	RTAS       string `json:"rtas,omitempty"`
}

// Bundle is a guest bundle loaded from disk.
type Bundle struct {
	Dir      string
	Config   Config
	Kernel   []byte
	Initrd   []byte
	Firmware []byte // nil when the bundle has no firmware.fd
}

// Validate checks the boot parameters of a guest.json.
func (c *Config) Validate() error {
	if c.Version != Version {
		return fmt.Errorf("guest.json: version: unsupported version %d (want %d)", c.Version, Version)
	}
	if c.VCPUs < 1 || c.VCPUs > 512 {
		return fmt.Errorf("guest.json: vcpus: %d out of range 1..512", c.VCPUs)
	}
	if c.MemoryMiB < 64 || c.MemoryMiB > 1<<20 {
		return fmt.Errorf("guest.json: memoryMiB: %d out of range 64..1048576", c.MemoryMiB)
	}
	if c.Arch != "" && c.Arch != ArchPPC64LE {
		return fmt.Errorf("guest.json: arch: %q (want absent for x86_64, or %q)", c.Arch, ArchPPC64LE)
	}
	if strings.ContainsRune(c.Cmdline, 0) {
		return errors.New("guest.json: cmdline: contains a NUL byte")
	}
	m := c.Measurements
	for name, v := range map[string]string{"sim": m.Sim, "snp": m.SNP} {
		if v == "" {
			continue
		}
		if err := checkHex(v, 48); err != nil {
			return fmt.Errorf("guest.json: measurements.%s: %w", name, err)
		}
	}
	for name, t := range map[string]*TDXMeasurement{"tdx": m.TDX, "sim-tdx": m.SimTDX} {
		if t == nil {
			continue
		}
		if err := checkHex(t.MRTD, 48); err != nil {
			return fmt.Errorf("guest.json: measurements.%s.mrtd: %w", name, err)
		}
		for i, r := range t.RTMRs {
			if r == "" {
				continue
			}
			if err := checkHex(r, 48); err != nil {
				return fmt.Errorf("guest.json: measurements.%s.rtmrs[%d]: %w", name, i, err)
			}
		}
	}
	return nil
}

// Measurement returns the reference measurement for one TEE as a canonical string
// (hex for snp/sim; "mrtd[:rtmr0:rtmr1:...]" for tdx and sim-tdx; kernel:initrd:cmdline
// digests for pef).
// A missing measurement is an error naming the TEE.
func (c *Config) Measurement(t tee.TEE) (string, error) {
	m := c.Measurements
	var v string
	switch t {
	case tee.Sim:
		v = m.Sim
	case tee.SNP:
		v = m.SNP
	case tee.TDX:
		v = m.TDX.canonical()
	case tee.SimTDX:
		v = m.SimTDX.canonical()
	case tee.PEF:
		if m.PEF != nil {
			v = m.PEF.Kernel + ":" + m.PEF.Initrd + ":" + m.PEF.Cmdline
		}
	default:
		return "", fmt.Errorf("guest.json: measurement for %w", t.Validate())
	}
	if v == "" {
		return "", fmt.Errorf("guest.json: measurements.%s: missing: the guest bundle has no reference measurement for TEE %q", t, t)
	}
	return strings.ToLower(v), nil
}

// canonical is "mrtd[:rtmr0:rtmr1:...]" ("" for nil or no MRTD).
func (t *TDXMeasurement) canonical() string {
	if t == nil || t.MRTD == "" {
		return ""
	}
	return strings.Join(append([]string{t.MRTD}, t.RTMRs...), ":")
}

func checkHex(s string, n int) error {
	b, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("not hex: %v", err)
	}
	if len(b) != n {
		return fmt.Errorf("%d bytes, want %d", len(b), n)
	}
	return nil
}

// ParseConfig decodes and validates guest.json. Unknown fields are ignored (docs/formats.md).
func ParseConfig(data []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("guest.json: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Load reads a guest bundle directory.
func Load(dir string) (*Bundle, error) {
	b := &Bundle{Dir: dir}
	raw, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, fmt.Errorf("guest bundle %s: %w", dir, err)
	}
	cfg, err := ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("guest bundle %s: %w", dir, err)
	}
	b.Config = *cfg
	if b.Kernel, err = os.ReadFile(filepath.Join(dir, KernelFile)); err != nil {
		return nil, fmt.Errorf("guest bundle %s: %w", dir, err)
	}
	if b.Initrd, err = os.ReadFile(filepath.Join(dir, InitrdFile)); err != nil {
		return nil, fmt.Errorf("guest bundle %s: %w", dir, err)
	}
	fw, err := os.ReadFile(filepath.Join(dir, FirmwareFile))
	switch {
	case err == nil:
		b.Firmware = fw
	case errors.Is(err, os.ErrNotExist):
	default:
		return nil, fmt.Errorf("guest bundle %s: %w", dir, err)
	}
	return b, nil
}

// Marshal encodes guest.json deterministically (indented, trailing newline).
func (c *Config) Marshal() ([]byte, error) {
	out, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}
