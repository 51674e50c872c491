// Package qemu builds the QEMU command line of a Sealpod pod VM from a typed configuration and
// runs it as a child process of the shim.
//
// The command line is built by Config.Command (pure: no files are opened, no process started),
// so every TEE's argv is covered by golden tests even where only software emulation runs.
//
//	g, err := qemu.GuestFromBundle(b)            // b from bundle.Load(rootfs + "/sealpod/guest")
//	cfg := qemu.Config{
//	    TEE:         qemu.TEESim,                 // sim | sim-tdx | snp | tdx | pef
//	    Accel:       qemu.AccelTCG,               // tcg (sim only) | kvm
//	    Guest:       g,
//	    HostData:    envelopeDigest,              // 32 bytes: SNP HOST_DATA / TDX MRCONFIGID
//	    AgentSocket: dir + "/agent.sock",         // QEMU listens; the shim dials (ttrpc)
//	    SimSPSocket: dir + "/sim-sp.sock",        // sim, sim-tdx: QEMU listens; the shim serves simsp
//	    NIC:         &qemu.NIC{TapFile: res.Tap, MAC: res.MAC},   // from runtime-shim/netns
//	    QMPSocket:   dir + "/qmp.sock",           // optional
//	    PIDFile:     dir + "/qemu.pid",           // optional
//	}
//	vm, err := qemu.Start(cfg, qemu.StartOptions{Console: consoleWriter, Logger: log})
//	defer vm.Stop(10 * time.Second)               // SIGTERM, then SIGKILL after the grace period
//	rss, err := vm.RSS()                          // VmRSS of the QEMU process, bytes
//	err = vm.Wait(ctx)                            // QEMU exited
//
// Nothing secret may appear on this command line (it is host-visible, docs/security.md): only paths,
// sizes and the envelope digest.
package qemu

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/guest-image/measure"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/tee"
)

// TEE selects the confidential-computing backend of the VM (docs/design.md#tee-backends):
// the one TEE type of internal/tee.
type TEE = tee.TEE

// TEEs. Sim runs under software emulation with the shim acting as the AMD-SP over the
// sealpod.sim-sp port; SimTDX is the same VM with the shim answering TDX quote requests on
// that port (simtee/tdxsim); the others need KVM on a host with that hardware.
const (
	TEESim    = tee.Sim
	TEESimTDX = tee.SimTDX
	// TEESimPEF is the emulated pseries VM of a ppc64le guest with the shim playing the PEF
	// ultravisor on the sealpod.sim-sp port (simtee/pefuv).
	TEESimPEF = tee.SimPEF
	TEESNP    = tee.SNP
	TEETDX    = tee.TDX
	TEEPEF    = tee.PEF
)

// Accel is the QEMU accelerator.
type Accel string

// Accelerators.
const (
	AccelTCG Accel = "tcg" // software emulation (CI machines: KVM does not work there)
	AccelKVM Accel = "kvm"
)

// Binaries used when Config.Binary is empty.
const (
	BinaryX86   = "qemu-system-x86_64"
	BinaryPPC64 = "qemu-system-ppc64"
)

// Port names of the virtio-serial ports (the guest finds them by name).
const (
	AgentPortName = api.PortName     // "sealpod.agent"
	SimSPPortName = "sealpod.sim-sp" // = agent/simsp.PortName (checked by a test)
)

// HostDataSize is the size of the envelope digest given in Config.HostData; the launch places
// it by tee.TEE.HostData: SNP HOST_DATA is the digest, TDX MRCONFIGID the digest zero-padded
// to MRConfigIDSize bytes (the agent and the broker check the same rule).
const (
	HostDataSize     = tee.DigestSize
	MRConfigIDSize   = tee.TDXMRConfigIDSize
	DefaultSNPCBit   = 51
	DefaultSNPRPB    = 1
	DefaultSNPPolicy = SNPPolicyReserved | SNPPolicySMT // debug (bit 19) off
	// SNP guest policy bits.
	SNPPolicySMT      = 1 << 16 // SMT allowed (a host with SMT on refuses a guest without it)
	SNPPolicyReserved = 1 << 17 // reserved, must be 1
	SNPPolicyDebug    = 1 << 19 // debugging allowed: never
)

// emulated reports whether t's VM is an ordinary emulated one whose TEE is played by the shim
// over the sealpod.sim-sp port (sim, sim-tdx).
func emulated(t TEE) bool { return t == TEESim || t == TEESimTDX || t == TEESimPEF }

// MaxSocketPath is the longest unix socket path QEMU accepts (sun_path is 108 bytes with NUL).
const MaxSocketPath = 107

// DefaultTBSizeMiB bounds the TCG translation cache (emulation only): QEMU 7.2's default is
// 1 GiB, which a long-running guest fills, page by page, into QEMU's RSS. Booting the minimal
// kernel and the agent fills ~54 MiB. 32 MiB once made four sealed VMs' exec probes time out in
// tests/e2e, because every exec ran runc init from a fresh copy of the agent binary (fresh
// pages, so QEMU retranslated it each time); since the agent runs from one sealed copy
// (agent/boot RunFromSealedCopy) execs reuse their translations and 32 MiB holds the working
// set: QEMU's steady RSS 168 -> 126 MiB (docs/runtime.md#qemu-memory).
const DefaultTBSizeMiB = 32

// TCGCPU is the vCPU model of emulated x86 guests: QEMU's "max" without the fast-string
// features ERMS and FSRM. With them, the guest kernel copies and clears memory with REP
// MOVSB/STOSB (copy_user_enhanced_fast_string, clear_page_erms, memcpy_erms), which TCG runs
// one byte per iteration; without them it takes the REP MOVSQ/STOSQ variants, eight bytes per
// iteration. Under emulation that is most of what the kernel does with the 14 MB agent (the
// initramfs unpack into tmpfs, the sealed memfd copy), every zeroed page and every byte a
// container reads or writes. TestBootSimGuest, 6 interleaved pairs: QEMU start -> Ping median
// 1.71 -> 1.545 s. Emulation only: kvm guests get "host" and SNP its measured model.
const TCGCPU = "max,-erms,-fsrm"

// Balloon is the virtio-balloon device of emulated (sim) guests: the guest reports the pages
// it frees (free page reporting) and QEMU returns them to the host, so QEMU's RSS follows the
// guest's use instead of its high-water mark. Not on SNP/TDX/PEF guests: their private memory
// cannot be discarded behind the guest's back (QEMU disables RAM discard for confidential
// guests) and the device would only be one more host-driven input to the guest.
const Balloon = "virtio-balloon-pci,id=balloon0,free-page-reporting=on"

// ErrInvalidConfig is wrapped by every configuration error from Config.Command.
var ErrInvalidConfig = errors.New("invalid qemu configuration")

// Guest is what the VM boots: the guest bundle's files and its guest.json parameters.
type Guest struct {
	// Kernel, Initrd and Firmware are file paths (Firmware "" = none: SeaBIOS under sim).
	Kernel, Initrd, Firmware string
	// Cmdline is the kernel command line (measured: it must be guest.json's, unchanged).
	Cmdline string
	// VCPUs and MemoryMiB size the VM (guest.json vcpus, memoryMiB).
	VCPUs, MemoryMiB int
	// VCPUType is the SNP vCPU model the measurement assumed (guest.json vcpuType; "" =
	// EPYC-v4, the measure package's default).
	VCPUType string
	// Arch is guest.json's arch: "" (x86_64, the q35 machine) or bundle.ArchPPC64LE (the
	// pseries machine, qemu-system-ppc64; pseries.go).
	Arch string
}

// GuestFromBundle returns the Guest for a loaded guest bundle (bundle.Load): file paths under
// b.Dir, firmware only when the bundle has one, initrd only when it is not empty.
//
// The boot parameters come from measure.BundleInputs, the inputs of the launch digest that
// guest-image computes and the simulated TEEs report: the VM is launched from exactly what
// was measured (vCPU count and type, firmware, kernel, initrd, command line).
func GuestFromBundle(b *bundle.Bundle) Guest {
	in := measure.BundleInputs(b)
	g := Guest{
		Kernel:    filepath.Join(b.Dir, bundle.KernelFile),
		Cmdline:   in.Boot.Cmdline,
		VCPUs:     in.VCPUs,
		MemoryMiB: b.Config.MemoryMiB, // not measured: sized by the pod (docs/runtime.md)
		VCPUType:  in.VCPUType,
		Arch:      b.Config.Arch,
	}
	if len(in.Boot.Initrd) > 0 {
		g.Initrd = filepath.Join(b.Dir, bundle.InitrdFile)
	}
	if in.Firmware != nil {
		g.Firmware = filepath.Join(b.Dir, bundle.FirmwareFile)
	}
	return g
}

// NIC is the VM's network card: a virtio-net-pci on a tap device.
type NIC struct {
	// TapFile is an open tap queue (from runtime-shim/netns), passed to QEMU as fd=N: QEMU
	// then needs neither CAP_NET_ADMIN nor to run in the pod's network namespace. Preferred.
	TapFile *os.File
	// TapName is used when TapFile is nil: QEMU opens the tap by name, so QEMU must run in the
	// network namespace holding it.
	TapName string
	// VNetHdr asks QEMU for a tap with IFF_VNET_HDR when it opens the tap by name (TapName);
	// with TapFile QEMU reads the flags from the descriptor (netns creates taps with it).
	VNetHdr bool
	// MAC is the guest's MAC address (the pod interface's, so the pod IP keeps its MAC).
	MAC net.HardwareAddr
	// User selects QEMU's user-mode network stack (slirp) instead of a tap: the guest is
	// 10.0.2.15 and reaches the host's loopback at 10.0.2.2. For the shim's "user" network
	// (development) and the guest test suite; it bypasses the pod's network namespace, so
	// pods on a node get a tap. Exclusive with TapFile and TapName.
	User bool
}

// UserNetMAC returns QEMU's default guest MAC address (52:54:00:12:34:56), the one to give
// NIC.MAC with NIC.User.
func UserNetMAC() net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56} }

// Port is an extra virtio-serial port backed by a unix socket on which QEMU listens.
type Port struct {
	Name, Socket string
}

// Sandbox is the argument of QEMU's -sandbox option: the seccomp filter every pod VM runs
// under (no obsolete system calls, no set*id, no fork/exec, no scheduler or resource-limit
// changes). QEMU emulates a kernel of the tenant's choosing: it is confined like a tenant.
const Sandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// SNPOptions tune the sev-snp-guest object; zero values take the defaults.
type SNPOptions struct {
	// CBitPos (default 51) and ReducedPhysBits (default 1): from CPUID 0x8000001f of the host.
	CBitPos, ReducedPhysBits int
	// Policy is the guest policy (default DefaultSNPPolicy). A policy with the debug bit (19)
	// is refused.
	Policy uint64
}

// TDXOptions tune the tdx-guest object; ignored for other TEEs.
type TDXOptions struct {
	// QGS is the host's Quote Generation Service, which QEMU forwards the guest's GetQuote
	// requests to: "" = vsock CID 2 port 4050 (Intel's QGS default), "vsock:<cid>:<port>",
	// "unix:<path>", or "none" (no quotes: the guest cannot attest, so no key is released).
	QGS string
}

type socketAddress struct {
	Type string `json:"type"`
	CID  string `json:"cid,omitempty"`
	Port string `json:"port,omitempty"`
	Path string `json:"path,omitempty"`
}

type tdxObject struct {
	QOMType       string         `json:"qom-type"`
	ID            string         `json:"id"`
	SeptVEDisable bool           `json:"sept-ve-disable"`
	MRConfigID    string         `json:"mrconfigid"`
	QGS           *socketAddress `json:"quote-generation-socket,omitempty"`
}

func (o TDXOptions) socket() (*socketAddress, error) {
	switch q := o.QGS; {
	case q == "":
		return &socketAddress{Type: "vsock", CID: "2", Port: "4050"}, nil
	case q == "none":
		return nil, nil
	case strings.HasPrefix(q, "unix:"):
		p := strings.TrimPrefix(q, "unix:")
		if err := checkSocket("TDX.QGS", p); err != nil {
			return nil, err
		}
		return &socketAddress{Type: "unix", Path: p}, nil
	case strings.HasPrefix(q, "vsock:"):
		cid, port, ok := strings.Cut(strings.TrimPrefix(q, "vsock:"), ":")
		c, err1 := strconv.ParseUint(cid, 10, 32)
		p, err2 := strconv.ParseUint(port, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return nil, invalid("TDX.QGS", "%q: want vsock:<cid>:<port>", q)
		}
		return &socketAddress{Type: "vsock", CID: strconv.FormatUint(c, 10), Port: strconv.FormatUint(p, 10)}, nil
	default:
		return nil, invalid("TDX.QGS", "%q: want vsock:<cid>:<port>, unix:<path> or none", q)
	}
}

// Config is one pod VM.
type Config struct {
	// Binary is the QEMU executable ("" = BinaryX86, or BinaryPPC64 for PEF).
	Binary string
	// TEE (required) and Accel ("" = tcg for sim, kvm otherwise; snp/tdx/pef need kvm).
	TEE   TEE
	Accel Accel
	// Guest is what to boot (required: Kernel, VCPUs > 0, MemoryMiB > 0).
	Guest Guest
	// CPU overrides the vCPU model ("" = max under tcg, host under kvm, Guest.VCPUType or
	// EPYC-v4 for SNP — the SNP measurement depends on it).
	CPU string
	// HostData is the envelope digest (32 bytes). Required for snp and tdx (HOST_DATA,
	// MRCONFIGID); not used by sim (the shim's simulated AMD-SP reports it) nor pef.
	HostData []byte
	// SNP and TDX tune those TEEs; ignored for the others.
	SNP SNPOptions
	TDX TDXOptions
	// AgentSocket is the unix socket of the sealpod.agent port (required); SimSPSocket the one
	// of sealpod.sim-sp (required for sim and sim-tdx, refused otherwise). QEMU listens on both
	// (server=on,wait=off); they must not exist yet.
	AgentSocket, SimSPSocket string
	// AgentListener and SimSPListener, if set, are listening unix sockets (bound at
	// AgentSocket and SimSPSocket by the caller) that QEMU inherits and serves (fd=N): an
	// unprivileged QEMU then needs no write access to the state directory.
	AgentListener, SimSPListener *os.File
	// Ports are extra virtio-serial ports (tests).
	Ports []Port
	// NIC is the pod network card (nil = no network card).
	NIC *NIC
	// QMPSocket, if set, gets a QMP monitor (server=on,wait=off).
	QMPSocket string
	// QMPListener, if set, is a listening unix socket bound at QMPSocket by the caller, which
	// QEMU inherits (fd=N, after the tap) and serves QMP on.
	QMPListener *os.File
	// HotplugSlots is the number of empty PCIe root ports for disks hot-plugged over QMP
	// (hotplug.go: sealed volumes; 0..MaxHotplugSlots; not on pef).
	HotplugSlots int
	// PIDFile, if set, is written by QEMU with its pid.
	PIDFile string
	// Name is the VM name (-name; visible in ps). Optional, e.g. "sealpod-<sandbox id>".
	Name string
	// TBSizeMiB bounds the TCG translation cache ("-accel tcg,tb-size=N"; 0 =
	// DefaultTBSizeMiB). Emulation only: refused with kvm (so never on SNP/TDX/PEF).
	TBSizeMiB int
	// EmulatedBIOS is the -bios of an emulated x86 guest (sim, sim-tdx) whose bundle has no
	// firmware: "" = QEMU's default (SeaBIOS); the shim passes its node config's emulatedBIOS
	// (default qboot, runtime-shim/config.DefaultEmulatedBIOS).
	// Not measured (the simulated TEEs measure no firmware) and refused for every other TEE,
	// whose firmware is the bundle's.
	EmulatedBIOS string
	// ExtraArgs are appended verbatim (operators and tests; never secrets).
	ExtraArgs []string
	// InsecureNoSandbox drops -sandbox (debugging QEMU only: the tenant's kernel then faces
	// an unconfined emulator).
	InsecureNoSandbox bool
}

// Command is a built QEMU invocation.
type Command struct {
	// Path is the QEMU binary.
	Path string
	// Args is the argument list (without the binary).
	Args []string
	// ExtraFiles are the files QEMU inherits, as fd 3, 4, … in this order (exec.Cmd.ExtraFiles).
	ExtraFiles []*os.File
}

func invalid(field, format string, a ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, a...))
}

// checkOpt refuses values that would break QEMU's option syntax: a comma would start a new
// option (QEMU's escape is ",,", but nothing we pass needs one), NUL and newlines never belong.
func checkOpt(field, v string) error {
	if strings.ContainsAny(v, ",\x00\n\r") {
		return invalid(field, "%q must not contain commas, NULs or newlines", v)
	}
	return nil
}

func checkSocket(field, p string) error {
	if p == "" {
		return invalid(field, "required")
	}
	if len(p) > MaxSocketPath {
		return invalid(field, "%q is %d bytes, longer than %d (unix socket path)", p, len(p), MaxSocketPath)
	}
	return checkOpt(field, p)
}

// Validate checks c without building anything.
func (c *Config) Validate() error {
	_, err := c.Command()
	return err
}

// Command builds the QEMU invocation for c. Errors wrap ErrInvalidConfig and name the field.
func (c *Config) Command() (*Command, error) {
	accel := c.Accel
	switch c.TEE {
	case TEESim, TEESimTDX, TEESimPEF:
		if accel == "" {
			accel = AccelTCG
		}
	case TEESNP, TEETDX, TEEPEF:
		if accel == "" {
			accel = AccelKVM
		}
		if accel != AccelKVM {
			return nil, invalid("Accel", "%s needs kvm, got %q", c.TEE, accel)
		}
	default:
		return nil, invalid("TEE", "%q is not one of sim, sim-tdx, sim-pef, snp, tdx, pef", c.TEE)
	}
	if accel != AccelTCG && accel != AccelKVM {
		return nil, invalid("Accel", "%q is not tcg or kvm", accel)
	}
	if c.EmulatedBIOS != "" && (c.TEE != TEESim && c.TEE != TEESimTDX || c.isPseries()) {
		return nil, invalid("EmulatedBIOS", "only for emulated x86 guests (sim, sim-tdx); %s boots the bundle's firmware", c.TEE)
	}
	tbSize := c.TBSizeMiB
	switch {
	case tbSize != 0 && accel != AccelTCG:
		return nil, invalid("TBSizeMiB", "the translation cache is TCG's (emulation); %s uses %s", c.TEE, accel)
	case tbSize < 0 || tbSize > 4096:
		return nil, invalid("TBSizeMiB", "%d out of range 0..4096", tbSize)
	case tbSize == 0:
		tbSize = DefaultTBSizeMiB
	}
	g := c.Guest
	if g.Kernel == "" {
		return nil, invalid("Guest.Kernel", "required")
	}
	if g.VCPUs < 1 || g.VCPUs > 512 {
		return nil, invalid("Guest.VCPUs", "%d out of range 1..512", g.VCPUs)
	}
	if g.MemoryMiB < 64 || g.MemoryMiB > 1<<20 {
		return nil, invalid("Guest.MemoryMiB", "%d out of range 64..1048576", g.MemoryMiB)
	}
	if g.Arch != "" && g.Arch != bundle.ArchPPC64LE {
		return nil, invalid("Guest.Arch", "%q is not empty (x86_64) or %s", g.Arch, bundle.ArchPPC64LE)
	}
	if strings.ContainsAny(g.Cmdline, "\x00\n\r") {
		return nil, invalid("Guest.Cmdline", "must not contain NULs or newlines")
	}
	for field, v := range map[string]string{"Guest.Kernel": g.Kernel, "Guest.Initrd": g.Initrd,
		"Guest.Firmware": g.Firmware, "EmulatedBIOS": c.EmulatedBIOS, "CPU": c.CPU, "Guest.VCPUType": g.VCPUType, "Name": c.Name,
		"PIDFile": c.PIDFile} {
		if err := checkOpt(field, v); err != nil {
			return nil, err
		}
	}
	for i, a := range c.ExtraArgs {
		if strings.ContainsRune(a, 0) {
			return nil, invalid(fmt.Sprintf("ExtraArgs[%d]", i), "contains NUL")
		}
	}
	binary := c.Binary
	if binary == "" {
		binary = BinaryX86
		if c.isPseries() {
			binary = BinaryPPC64
		}
	}
	cpu := c.CPU
	if cpu == "" {
		switch {
		case c.TEE == TEESNP:
			cpu = g.VCPUType
			if cpu == "" {
				cpu = measure.DefaultVCPUType // what the launch digest assumed
			}
		case accel == AccelKVM:
			cpu = "host"
		case c.isPseries():
			cpu = PseriesTCGCPU
		default:
			cpu = TCGCPU
		}
	}

	var hostData []byte
	switch c.TEE {
	case TEESNP, TEETDX:
		if len(c.HostData) != HostDataSize {
			return nil, invalid("HostData", "%s needs the %d-byte envelope digest, got %d bytes", c.TEE, HostDataSize, len(c.HostData))
		}
		hostData = c.TEE.HostData([tee.DigestSize]byte(c.HostData)) // HOST_DATA or MRCONFIGID
		if g.Firmware == "" {
			return nil, invalid("Guest.Firmware", "%s needs a firmware (OVMF with kernel hashes for snp, TDVF for tdx) in the guest bundle", c.TEE)
		}
	default:
		if len(c.HostData) != 0 && len(c.HostData) != HostDataSize {
			return nil, invalid("HostData", "%d bytes, want %d", len(c.HostData), HostDataSize)
		}
	}

	args := []string{"-nodefaults", "-no-user-config", "-no-reboot", "-display", "none", "-monitor", "none"}
	if !c.InsecureNoSandbox {
		args = append(args, "-sandbox", Sandbox)
	}
	if c.Name != "" {
		args = append(args, "-name", c.Name)
	}

	// Machine and TEE objects.
	mem := strconv.Itoa(g.MemoryMiB)
	switch {
	case c.isPseries():
		m, err := pseriesMachine(c.TEE, accel, tbSize)
		if err != nil {
			return nil, err
		}
		args = append(args, m...)
	case c.TEE == TEESimPEF:
		return nil, invalid("Guest.Arch", "%s boots a ppc64le guest (the pseries machine); guest.json arch is %q", c.TEE, g.Arch)
	case c.TEE == TEESim, c.TEE == TEESimTDX:
		if accel == AccelTCG {
			// Emulation only: a bounded translation cache (QEMU refuses -accel next to
			// -machine accel=).
			args = append(args, "-machine", "q35", "-accel", "tcg,tb-size="+strconv.Itoa(tbSize))
		} else {
			args = append(args, "-machine", "q35,accel="+string(accel))
		}
	case c.TEE == TEESNP:
		o := c.SNP
		if o.CBitPos == 0 {
			o.CBitPos = DefaultSNPCBit
		}
		if o.ReducedPhysBits == 0 {
			o.ReducedPhysBits = DefaultSNPRPB
		}
		if o.Policy == 0 {
			o.Policy = DefaultSNPPolicy
		}
		if o.Policy&SNPPolicyDebug != 0 {
			return nil, invalid("SNP.Policy", "%#x allows debugging (bit 19): refused", o.Policy)
		}
		if o.CBitPos < 32 || o.CBitPos > 63 || o.ReducedPhysBits < 1 || o.ReducedPhysBits > 63 {
			return nil, invalid("SNP", "cbitpos %d / reduced-phys-bits %d out of range", o.CBitPos, o.ReducedPhysBits)
		}
		args = append(args,
			"-machine", "q35,accel=kvm,confidential-guest-support=sev0,memory-backend=ram0",
			"-object", "memory-backend-memfd,id=ram0,size="+mem+"M,share=true,prealloc=false",
			"-object", fmt.Sprintf("sev-snp-guest,id=sev0,cbitpos=%d,reduced-phys-bits=%d,policy=%#x,kernel-hashes=on,host-data=%s",
				o.CBitPos, o.ReducedPhysBits, o.Policy, base64.StdEncoding.EncodeToString(hostData)))
	case c.TEE == TEETDX:
		obj := tdxObject{QOMType: "tdx-guest", ID: "tdx0", SeptVEDisable: true, MRConfigID: base64.StdEncoding.EncodeToString(hostData)}
		qgs, err := c.TDX.socket()
		if err != nil {
			return nil, err
		}
		obj.QGS = qgs
		// JSON syntax: the only one in which QEMU takes the quote-generation-socket
		// SocketAddress (a nested object).
		js, err := json.Marshal(obj)
		if err != nil {
			return nil, fmt.Errorf("qemu: tdx-guest object: %w", err)
		}
		args = append(args,
			"-machine", "q35,accel=kvm,kernel-irqchip=split,confidential-guest-support=tdx0",
			"-object", string(js))
	}
	args = append(args,
		"-cpu", cpu,
		"-smp", strconv.Itoa(g.VCPUs),
		"-m", mem,
		"-chardev", "stdio,id=con0,signal=off",
		"-serial", "chardev:con0",
	)
	switch {
	case g.Firmware != "":
		args = append(args, "-bios", g.Firmware)
	case c.EmulatedBIOS != "":
		args = append(args, "-bios", c.EmulatedBIOS)
	}
	args = append(args, "-kernel", g.Kernel)
	if g.Initrd != "" {
		args = append(args, "-initrd", g.Initrd)
	}
	if g.Cmdline != "" {
		args = append(args, "-append", g.Cmdline)
	}

	// Confidential guests only accept virtio devices that use the DMA API (bounce buffers in
	// shared memory): Linux refuses a device without VIRTIO_F_ACCESS_PLATFORM under SEV-SNP,
	// TDX and PEF. Modern-only (disable-legacy) + iommu_platform=on give it that feature.
	vio := ""
	if !emulated(c.TEE) {
		vio = ",disable-legacy=on,iommu_platform=on"
	}

	// virtio-serial ports.
	type port struct {
		Port
		file *os.File
	}
	ports := []port{{Port{Name: AgentPortName, Socket: c.AgentSocket}, c.AgentListener}}
	if emulated(c.TEE) {
		if c.SimSPSocket == "" {
			return nil, invalid("SimSPSocket", "required for the %s TEE", c.TEE)
		}
		ports = append(ports, port{Port{Name: SimSPPortName, Socket: c.SimSPSocket}, c.SimSPListener})
	} else if c.SimSPSocket != "" || c.SimSPListener != nil {
		return nil, invalid("SimSPSocket", "only the simulated TEEs (sim, sim-tdx) have the sim-sp port, not %s", c.TEE)
	}
	for _, p := range c.Ports {
		ports = append(ports, port{Port: p})
	}
	cmd := &Command{Path: binary}
	args = append(args, "-device", "virtio-serial-pci,id=vser0"+vio)
	seenName, seenSock := map[string]bool{}, map[string]bool{}
	for i, p := range ports {
		field := fmt.Sprintf("port %q", p.Name)
		switch i {
		case 0:
			field = "AgentSocket"
		case 1:
			if emulated(c.TEE) {
				field = "SimSPSocket"
			}
		}
		if p.Name == "" || seenName[p.Name] {
			return nil, invalid(field, "port name %q empty or repeated", p.Name)
		}
		if err := checkOpt(field, p.Name); err != nil {
			return nil, err
		}
		if err := checkSocket(field, p.Socket); err != nil {
			return nil, err
		}
		if seenSock[p.Socket] {
			return nil, invalid(field, "socket %q used twice", p.Socket)
		}
		seenName[p.Name], seenSock[p.Socket] = true, true
		id := "port" + strconv.Itoa(i)
		backend := "path=" + p.Socket
		if p.file != nil {
			backend = "fd=" + strconv.Itoa(3+len(cmd.ExtraFiles))
			cmd.ExtraFiles = append(cmd.ExtraFiles, p.file)
		}
		args = append(args,
			"-chardev", "socket,id="+id+","+backend+",server=on,wait=off",
			"-device", "virtserialport,bus=vser0.0,chardev="+id+",name="+p.Name)
	}

	// Entropy: the agent waits for the CRNG; virtio-rng feeds it.
	args = append(args, "-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0"+vio)
	if emulated(c.TEE) {
		args = append(args, "-device", Balloon)
	}

	if n := c.NIC; n != nil {
		if len(n.MAC) != 6 {
			return nil, invalid("NIC.MAC", "%q is not a 6-byte MAC address", n.MAC.String())
		}
		if n.MAC[0]&1 != 0 {
			return nil, invalid("NIC.MAC", "%s is a multicast address", n.MAC)
		}
		netdev := "tap,id=net0,vhost=off"
		switch {
		case n.User && (n.TapFile != nil || n.TapName != ""):
			return nil, invalid("NIC.User", "user-mode networking with a tap (TapFile or TapName)")
		case n.User:
			netdev = "user,id=net0"
		case n.TapFile != nil:
			netdev += ",fd=" + strconv.Itoa(3+len(cmd.ExtraFiles))
			cmd.ExtraFiles = append(cmd.ExtraFiles, n.TapFile)
			// QEMU refuses vnet_hdr= with fd=: it reads the tap's flags (TUNGETIFF) itself.
		case n.TapName != "":
			if len(n.TapName) > 15 {
				return nil, invalid("NIC.TapName", "%q longer than 15 bytes", n.TapName)
			}
			if err := checkOpt("NIC.TapName", n.TapName); err != nil {
				return nil, err
			}
			netdev += ",ifname=" + n.TapName + ",script=no,downscript=no"
			if n.VNetHdr {
				netdev += ",vnet_hdr=on"
			}
		default:
			return nil, invalid("NIC", "TapFile or TapName required")
		}
		// romfile= : no iPXE option ROM (nothing runs before the kernel; less to measure).
		args = append(args, "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,mac="+n.MAC.String()+",romfile="+vio)
	}
	hotplug, err := c.hotplugArgs()
	if err != nil {
		return nil, err
	}
	args = append(args, hotplug...)
	if c.QMPSocket != "" {
		if err := checkSocket("QMPSocket", c.QMPSocket); err != nil {
			return nil, err
		}
		if c.QMPListener != nil {
			args = append(args, "-chardev", "socket,id=qmp0,fd="+strconv.Itoa(3+len(cmd.ExtraFiles))+",server=on,wait=off",
				"-mon", "chardev=qmp0,mode=control")
			cmd.ExtraFiles = append(cmd.ExtraFiles, c.QMPListener)
		} else {
			args = append(args, "-qmp", "unix:"+c.QMPSocket+",server=on,wait=off")
		}
	} else if c.QMPListener != nil {
		return nil, invalid("QMPListener", "without QMPSocket")
	}
	if c.PIDFile != "" {
		args = append(args, "-pidfile", c.PIDFile)
	}
	cmd.Args = append(args, c.ExtraArgs...)
	return cmd, nil
}
