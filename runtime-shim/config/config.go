// Package config reads the Sealpod shim's node configuration: which TEEs the node offers, the
// keys of the simulated TEEs, the hardware TEEs' launch parameters, how QEMU is started and
// where the shim keeps per-pod state.
//
// The file is JSON (default /etc/sealpod/shim.json; the environment variable
// SEALPOD_SHIM_CONFIG names another path — containerd passes its environment to the shim):
//
//	{"tees": ["sim", "sim-tdx"], "simKey": "/etc/sealpod/sim-vcek.pem",
//	 "simTDXKey": "/etc/sealpod/sim-tdx-pck.pem", "qemu": "qemu-system-x86_64",
//	 "accel": "tcg", "stateDir": "/run/sealpod", "network": "tap", "bootTimeout": "180s",
//	 "qemuUID": 64242, "qemuGID": 64242, "maxGuestMemoryMiB": 8192, "maxGuestVCPUs": 8}
//
//	{"tees": ["snp"], "accel": "kvm", "snpCBitPos": 51, "snpReducedPhysBits": 1, "snpSMT": true}
//	{"tees": ["tdx"], "accel": "kvm", "qgsSocket": "/var/run/tdx-qgs/qgs.socket"}
//
// The single "tee" of earlier nodes is still read (as "tees" of one); a file with both is an
// error. Unknown fields are an error (a typo must not silently change behaviour).
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sealpod/sealpod/internal/tee"
)

// DefaultPath is where the node installer writes the configuration.
const DefaultPath = "/etc/sealpod/shim.json"

// EnvPath names an environment variable that overrides DefaultPath.
const EnvPath = "SEALPOD_SHIM_CONFIG"

// MaxSize bounds the configuration file.
const MaxSize = 64 << 10

// Network modes.
const (
	// NetworkUser is QEMU user-mode networking: the guest is 10.0.2.15 and reaches the host's
	// loopback at 10.0.2.2. For development and CI nodes without pod networking into the VM.
	NetworkUser = "user"
	// NetworkTap wires a tap in the pod's network namespace (runtime-shim/netns).
	NetworkTap = "tap"
)

// ErrInvalid marks a configuration that does not validate.
var ErrInvalid = errors.New("invalid shim configuration")

// Duration is a time.Duration written as a Go duration string ("180s").
type Duration time.Duration

// UnmarshalJSON parses "180s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes "180s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Config is the shim's node configuration.
type Config struct {
	// TEE is the single TEE of a node configured before "tees" existed: Parse moves it to
	// TEEs (a file with both is an error).
	TEE string `json:"tee,omitempty"`
	// TEEs the node offers, in the node's order of preference: sim, sim-tdx, sim-pef, snp, tdx,
	// pef.
	// The shim boots the first one the pod was sealed for (never one only the pod names).
	TEEs []string `json:"tees,omitempty"`
	// SimKey is the simulated VCEK private key (`sealpod-kbs sim-roots --key-out`); required
	// when the node offers sim, refused otherwise.
	SimKey string `json:"simKey,omitempty"`
	// SimTDXKey is the node-local fake Intel PCK key and chain (simtee/tdxsim); required when
	// the node offers sim-tdx, refused otherwise.
	SimTDXKey string `json:"simTDXKey,omitempty"`
	// SimPEFKey is the software host key of the simulated PEF ultravisor (simtee/pefuv: a PEM
	// RSA private key whose public half owners authorise with sealctl --pef-host-key);
	// required when the node offers sim-pef, refused otherwise.
	SimPEFKey string `json:"simPEFKey,omitempty"`
	// SNPCBitPos and SNPReducedPhysBits are QEMU's sev-snp-guest cbitpos and
	// reduced-phys-bits: the host's CPUID 0x8000001F values (the installer writes them from
	// its readiness check); 0 = QEMU's usual 51 and 1. Only with snp offered.
	SNPCBitPos         int `json:"snpCBitPos,omitempty"`
	SNPReducedPhysBits int `json:"snpReducedPhysBits,omitempty"`
	// SNPSMT is the SMT bit of the SNP guest policy (default true: a host with SMT enabled
	// refuses to launch a guest whose policy forbids it). Only with snp offered.
	SNPSMT *bool `json:"snpSMT,omitempty"`
	// QGSSocket is the unix socket of the host's TDX Quote Generation Service that QEMU
	// forwards the guest's quote requests to (default DefaultQGSSocket). Only with tdx offered.
	QGSSocket string `json:"qgsSocket,omitempty"`
	// QEMU is the emulator binary (default qemu-system-x86_64 from PATH).
	QEMU string `json:"qemu,omitempty"`
	// Accel is tcg or kvm (default kvm when the node offers a hardware TEE, else tcg); snp,
	// tdx and pef need kvm.
	Accel string `json:"accel,omitempty"`
	// StateDir holds one directory per pod (sockets, QEMU pid, console log); default
	// /run/sealpod. Keep it short: unix socket paths must stay under 108 bytes.
	StateDir string `json:"stateDir,omitempty"`
	// Network is tap (default: the pod's interface is wired into the VM, so the pod IP reaches
	// the guest) or user (QEMU user networking, for development nodes without pod networking).
	Network string `json:"network,omitempty"`
	// BootTimeout bounds QEMU start → agent answers Ping (default 180s; TCG is slow).
	BootTimeout Duration `json:"bootTimeout,omitempty"`
	// QEMUUID and QEMUGID are the unprivileged user QEMU runs as (default DefaultQEMUID;
	// never 0). The group gets read access to the pod's guest files; nothing else.
	QEMUUID uint32 `json:"qemuUID,omitempty"`
	QEMUGID uint32 `json:"qemuGID,omitempty"`
	// EmulatedBIOS is the BIOS QEMU runs before the kernel of an emulated x86 guest (sim,
	// sim-tdx): default DefaultEmulatedBIOS (qboot, Debian's qemu-system-data: it loads the
	// kernel directly, ~0.15 s sooner than SeaBIOS under TCG), EmulatedBIOSSeaBIOS for QEMU's
	// own default, or another file. Simulated TEEs measure no firmware; snp and tdx always
	// boot the guest bundle's.
	EmulatedBIOS string `json:"emulatedBIOS,omitempty"`
	// MaxGuestMemoryMiB and MaxGuestVCPUs cap the size a guest.json may ask for on this node
	// (defaults DefaultMaxGuestMemoryMiB, DefaultMaxGuestVCPUs). They are the only bound for a
	// pod without memory or CPU limits; a pod with limits is also held to those.
	MaxGuestMemoryMiB int `json:"maxGuestMemoryMiB,omitempty"`
	MaxGuestVCPUs     int `json:"maxGuestVCPUs,omitempty"`
}

// Values of EmulatedBIOS.
const (
	// DefaultEmulatedBIOS is Debian's qboot (qemu-system-data), a minimal BIOS that loads the
	// kernel QEMU hands it over fw_cfg and jumps to it: under TCG it reaches the kernel about
	// 0.15 s sooner than SeaBIOS, which first runs its POST, option ROMs and boot menu
	// (docs/runtime.md). Emulation only: SNP and TDX boot the bundle's OVMF.
	DefaultEmulatedBIOS = "/usr/share/qemu/qboot.rom"
	EmulatedBIOSSeaBIOS = "seabios"
)

// Defaults of the QEMU user and the node's guest size caps.
const (
	DefaultQEMUID            = 64242
	DefaultMaxGuestMemoryMiB = 8192
	DefaultMaxGuestVCPUs     = 8
	// DefaultQGSSocket is where Intel's Quote Generation Service listens (unix socket mode).
	DefaultQGSSocket = "/var/run/tdx-qgs/qgs.socket"
)

// Offers returns the TEEs the node offers, in its order of preference (TEEs, or the single
// TEE of an older file that Defaults has not moved yet).
func (c *Config) Offers() []tee.TEE {
	names := c.TEEs
	if len(names) == 0 && c.TEE != "" {
		names = []string{c.TEE}
	}
	out := make([]tee.TEE, len(names))
	for i, n := range names {
		out[i] = tee.TEE(n)
	}
	return out
}

// Offer reports whether the node offers t.
func (c *Config) Offer(t tee.TEE) bool { return slices.Contains(c.Offers(), t) }

// OffersList returns the offered TEEs joined by ", " for messages.
func (c *Config) OffersList() string {
	var b strings.Builder
	for i, t := range c.Offers() {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(t))
	}
	return b.String()
}

// hardware reports whether t runs only on its hardware (under KVM).
func hardware(t tee.TEE) bool { return t == tee.SNP || t == tee.TDX || t == tee.PEF }

// QGS is the quote-generation socket QEMU's tdx-guest object takes: "unix:" + QGSSocket
// (default DefaultQGSSocket).
func (c *Config) QGS() string {
	if c.QGSSocket == "" {
		return "unix:" + DefaultQGSSocket
	}
	return "unix:" + c.QGSSocket
}

// SNPSMTAllowed is the policy's SMT bit (SNPSMT, default true).
func (c *Config) SNPSMTAllowed() bool { return c.SNPSMT == nil || *c.SNPSMT }

// Defaults fills the unset fields.
func (c *Config) Defaults() {
	if len(c.TEEs) == 0 && c.TEE != "" {
		c.TEEs, c.TEE = []string{c.TEE}, ""
	}
	if c.QEMU == "" {
		c.QEMU = "qemu-system-x86_64"
	}
	if c.Accel == "" {
		c.Accel = "tcg"
		if slices.ContainsFunc(c.Offers(), hardware) {
			c.Accel = "kvm"
		}
	}
	if c.StateDir == "" {
		c.StateDir = "/run/sealpod"
	}
	if c.Network == "" {
		c.Network = NetworkTap
	}
	if c.BootTimeout == 0 {
		c.BootTimeout = Duration(180 * time.Second)
	}
	if c.EmulatedBIOS == "" {
		c.EmulatedBIOS = DefaultEmulatedBIOS
	}
	if c.QEMUUID == 0 {
		c.QEMUUID = DefaultQEMUID
	}
	if c.QEMUGID == 0 {
		c.QEMUGID = DefaultQEMUID
	}
	if c.MaxGuestMemoryMiB == 0 {
		c.MaxGuestMemoryMiB = DefaultMaxGuestMemoryMiB
	}
	if c.MaxGuestVCPUs == 0 {
		c.MaxGuestVCPUs = DefaultMaxGuestVCPUs
	}
}

// Validate checks the fields.
func (c *Config) Validate() error {
	if c.TEE != "" && len(c.TEEs) > 0 {
		return fmt.Errorf("%w: tee %q and tees: give tees only", ErrInvalid, c.TEE)
	}
	offers := c.Offers()
	if len(offers) == 0 {
		return fmt.Errorf("%w: tees: required (the TEEs this node offers, e.g. [\"snp\"])", ErrInvalid)
	}
	for i, t := range offers {
		if err := t.Validate(); err != nil {
			return fmt.Errorf("%w: tees[%d]: %w", ErrInvalid, i, err)
		}
		if slices.Index(offers, t) != i {
			return fmt.Errorf("%w: tees[%d]: %s listed twice", ErrInvalid, i, t)
		}
	}
	if c.Accel != "tcg" && c.Accel != "kvm" {
		return fmt.Errorf("%w: accel %q: want tcg or kvm", ErrInvalid, c.Accel)
	}
	for _, t := range offers {
		if hardware(t) && c.Accel != "kvm" {
			return fmt.Errorf("%w: accel %s: tee %s runs only under kvm", ErrInvalid, c.Accel, t)
		}
	}
	// Each simulated TEE has its key; a key without its TEE is a mistake.
	for _, k := range []struct {
		field, path string
		t           tee.TEE
	}{{"simKey", c.SimKey, tee.Sim}, {"simTDXKey", c.SimTDXKey, tee.SimTDX}, {"simPEFKey", c.SimPEFKey, tee.SimPEF}} {
		switch {
		case c.Offer(k.t) && k.path == "":
			return fmt.Errorf("%w: %s: required for tee %s", ErrInvalid, k.field, k.t)
		case !c.Offer(k.t) && k.path != "":
			return fmt.Errorf("%w: %s: only for tee %s, which this node does not offer", ErrInvalid, k.field, k.t)
		case k.path != "" && !filepath.IsAbs(k.path):
			return fmt.Errorf("%w: %s %q: want an absolute path", ErrInvalid, k.field, k.path)
		}
	}
	snp := c.SNPCBitPos != 0 || c.SNPReducedPhysBits != 0 || c.SNPSMT != nil
	switch {
	case snp && !c.Offer(tee.SNP):
		return fmt.Errorf("%w: snpCBitPos/snpReducedPhysBits/snpSMT: only for tee snp, which this node does not offer", ErrInvalid)
	case c.SNPCBitPos != 0 && (c.SNPCBitPos < 32 || c.SNPCBitPos > 63):
		return fmt.Errorf("%w: snpCBitPos %d: want 32..63 (CPUID 0x8000001F EBX[5:0])", ErrInvalid, c.SNPCBitPos)
	case c.SNPReducedPhysBits < 0 || c.SNPReducedPhysBits > 63:
		return fmt.Errorf("%w: snpReducedPhysBits %d: want 1..63", ErrInvalid, c.SNPReducedPhysBits)
	}
	if c.QGSSocket != "" {
		switch p := c.QGSSocket; {
		case !c.Offer(tee.TDX):
			return fmt.Errorf("%w: qgsSocket: only for tee tdx, which this node does not offer", ErrInvalid)
		case !filepath.IsAbs(p) || filepath.Clean(p) != p || len(p) > 107 || strings.ContainsAny(p, ",\x00\n\r"):
			return fmt.Errorf("%w: qgsSocket %q: want a clean absolute unix socket path of at most 107 bytes, without commas", ErrInvalid, p)
		}
	}
	if !filepath.IsAbs(c.StateDir) || filepath.Clean(c.StateDir) != c.StateDir || len(c.StateDir) > 32 {
		return fmt.Errorf("%w: stateDir %q: want a clean absolute path of at most 32 bytes", ErrInvalid, c.StateDir)
	}
	if c.Network != NetworkUser && c.Network != NetworkTap {
		return fmt.Errorf("%w: network %q: want user or tap", ErrInvalid, c.Network)
	}
	if c.BootTimeout < 0 {
		return fmt.Errorf("%w: bootTimeout: negative", ErrInvalid)
	}
	if p := c.EmulatedBIOS; p != EmulatedBIOSSeaBIOS && (!filepath.IsAbs(p) || filepath.Clean(p) != p || strings.ContainsAny(p, ",\x00\n\r")) {
		return fmt.Errorf("%w: emulatedBIOS %q: want %q or a clean absolute path without commas", ErrInvalid, p, EmulatedBIOSSeaBIOS)
	}
	if c.QEMUUID == 0 || c.QEMUGID == 0 || c.QEMUUID == 1<<32-1 || c.QEMUGID == 1<<32-1 {
		return fmt.Errorf("%w: qemuUID %d / qemuGID %d: QEMU never runs as root (0) nor as the invalid id", ErrInvalid, c.QEMUUID, c.QEMUGID)
	}
	if c.MaxGuestMemoryMiB < 64 || c.MaxGuestMemoryMiB > 1<<20 {
		return fmt.Errorf("%w: maxGuestMemoryMiB %d: want 64..1048576", ErrInvalid, c.MaxGuestMemoryMiB)
	}
	if c.MaxGuestVCPUs < 1 || c.MaxGuestVCPUs > 512 {
		return fmt.Errorf("%w: maxGuestVCPUs %d: want 1..512", ErrInvalid, c.MaxGuestVCPUs)
	}
	return nil
}

// Parse decodes and validates a configuration, with defaults applied.
func Parse(data []byte) (*Config, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalid, len(data), MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalid)
	}
	if c.TEE != "" && c.TEEs != nil {
		return nil, fmt.Errorf("%w: tee %q and tees %q: give tees only (tee is the older single-TEE form)", ErrInvalid, c.TEE, c.TEEs)
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Path returns $SEALPOD_SHIM_CONFIG or DefaultPath.
func Path() string {
	if p := os.Getenv(EnvPath); p != "" {
		return p
	}
	return DefaultPath
}

// Load reads and parses the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("shim config %s: %w", path, err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("shim config %s: %w", path, err)
	}
	return c, nil
}
