// Package config reads the Sealpod shim's node configuration: which TEE the node offers, where
// the simulated AMD-SP key is, how QEMU is started and where the shim keeps per-pod state.
//
// The file is JSON (default /etc/sealpod/shim.json; the environment variable
// SEALPOD_SHIM_CONFIG names another path — containerd passes its environment to the shim):
//
//	{"tee": "sim", "simKey": "/etc/sealpod/sim-vcek.pem", "qemu": "qemu-system-x86_64",
//	 "accel": "tcg", "stateDir": "/run/sealpod", "network": "tap", "bootTimeout": "180s",
//	 "qemuUID": 64242, "qemuGID": 64242, "maxGuestMemoryMiB": 8192, "maxGuestVCPUs": 8}
//
// Unknown fields are an error (a typo must not silently change behaviour).
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	// TEE the node offers: sim, snp, tdx or pef.
	TEE string `json:"tee"`
	// SimKey is the simulated VCEK private key (`sealpod-kbs sim-roots --key-out`); tee sim only.
	SimKey string `json:"simKey,omitempty"`
	// QEMU is the emulator binary (default qemu-system-x86_64 from PATH).
	QEMU string `json:"qemu,omitempty"`
	// Accel is tcg or kvm (default tcg).
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
	// MaxGuestMemoryMiB and MaxGuestVCPUs cap the size a guest.json may ask for on this node
	// (defaults DefaultMaxGuestMemoryMiB, DefaultMaxGuestVCPUs). They are the only bound for a
	// pod without memory or CPU limits; a pod with limits is also held to those.
	MaxGuestMemoryMiB int `json:"maxGuestMemoryMiB,omitempty"`
	MaxGuestVCPUs     int `json:"maxGuestVCPUs,omitempty"`
}

// Defaults of the QEMU user and the node's guest size caps.
const (
	DefaultQEMUID            = 64242
	DefaultMaxGuestMemoryMiB = 8192
	DefaultMaxGuestVCPUs     = 8
)

// Defaults fills the unset fields.
func (c *Config) Defaults() {
	if c.QEMU == "" {
		c.QEMU = "qemu-system-x86_64"
	}
	if c.Accel == "" {
		c.Accel = "tcg"
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
	t, err := tee.Parse(c.TEE)
	if err != nil {
		return fmt.Errorf("%w: tee: %w", ErrInvalid, err)
	}
	if t.Simulated() && c.SimKey == "" {
		return fmt.Errorf("%w: simKey: required for tee sim", ErrInvalid)
	}
	if !t.Simulated() && c.SimKey != "" {
		return fmt.Errorf("%w: simKey: only for tee sim", ErrInvalid)
	}
	if c.Accel != "tcg" && c.Accel != "kvm" {
		return fmt.Errorf("%w: accel %q: want tcg or kvm", ErrInvalid, c.Accel)
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
