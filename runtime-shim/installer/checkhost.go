package installer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/guest-image/measure/ovmf"
	"github.com/sealpod/sealpod/runtime-shim/internal/qemuhelp"
)

// The host-side items of the readiness check: KVM, the TEE in the host kernel, QEMU, firmware,
// CPUID and the TDX quote service.

// qemuRequirement is what a TEE needs from QEMU.
type qemuRequirement struct {
	object       string // the -object type the shim uses
	major, minor int    // first QEMU release that has it
}

// qemuNeeds: sev-snp-guest was merged in QEMU 9.1, tdx-guest in 10.1, pef-guest in 6.0.
var qemuNeeds = map[TEE]qemuRequirement{
	TEESNP: {"sev-snp-guest", 9, 1},
	TEETDX: {"tdx-guest", 10, 1},
	TEEPEF: {"pef-guest", 6, 0},
}

// HostExecPrefix is the command prefix that runs a host binary from the DaemonSet (hostPID,
// privileged): nsenter into the mount namespace of the host's PID 1, as SystemdRestarter does.
var HostExecPrefix = []string{"nsenter", "--target", "1", "--mount", "--"}

const (
	kvmGetAPIVersion = 0xAE00 // _IO(KVMIO, 0x00)
	kvmAPIVersion    = 12
)

// ProbeKVM opens a /dev/kvm path read-write and asks for the KVM API version.
func ProbeKVM(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if st.Mode()&os.ModeCharDevice == 0 {
		return "", fmt.Errorf("%s is not a character device (%s)", path, st.Mode())
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	v, err := unix.IoctlRetInt(fd, kvmGetAPIVersion)
	if err != nil {
		return "", fmt.Errorf("%s: KVM_GET_API_VERSION: %w", path, err)
	}
	if v != kvmAPIVersion {
		return "", fmt.Errorf("%s: KVM API version %d, want %d", path, v, kvmAPIVersion)
	}
	return fmt.Sprintf("KVM API version %d", v), nil
}

func (o CheckOptions) checkKVM() CheckItem {
	it := CheckItem{Name: ItemKVM}
	detail, err := o.KVMProbe(o.host("/dev/kvm"))
	if err != nil {
		return fail(it, err.Error(), "enable virtualization in the BIOS, load kvm_amd or kvm_intel, and give the installer the host's /dev (deploy/daemonset.yaml mounts it at /host/dev)")
	}
	return ok(it, "/dev/kvm: "+detail)
}

func (o CheckOptions) checkTEEEnabled(t TEE) CheckItem {
	it := CheckItem{Name: ItemTEEEnabled}
	param := func(rel, what, fix string) CheckItem {
		b, err := os.ReadFile(o.host(rel))
		if err != nil {
			return fail(it, fmt.Sprintf("%s: %v", what, err), fix)
		}
		v := strings.TrimSpace(string(b))
		if v != "Y" && v != "y" && v != "1" {
			return fail(it, fmt.Sprintf("%s: /%s = %q", what, rel, printable(v)), fix)
		}
		return ok(it, fmt.Sprintf("%s: /%s = %s", what, rel, v))
	}
	switch t {
	case TEESNP:
		return param(snpHostParam, "SEV-SNP", "a host kernel with SEV-SNP host support (6.11+), SNP enabled in the BIOS and SEV firmware loaded; modprobe kvm_amd sev_snp=1")
	case TEETDX:
		return param(tdxHostParam, "TDX", "a host kernel with TDX host support (6.16+), TDX enabled in the BIOS; modprobe kvm_intel tdx=1")
	case TEEPEF:
		if _, err := os.Stat(o.host(pefUltravisor)); err != nil {
			return fail(it, fmt.Sprintf("PEF: %v", err), "boot the POWER host with the ultravisor (svm=on)")
		}
		return ok(it, "PEF: ultravisor present")
	}
	return fail(it, fmt.Sprintf("no hardware check for TEE %s", t), "use a hardware TEE")
}

var qemuVersionRE = regexp.MustCompile(`QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?`)

// ParseQEMUVersion reads major and minor from `qemu-system-* --version`.
func ParseQEMUVersion(out []byte) (major, minor int, version string, err error) {
	m := qemuVersionRE.FindSubmatch(out)
	if m == nil {
		return 0, 0, "", errors.New("no \"QEMU emulator version X.Y\" in its --version output")
	}
	major, err1 := strconv.Atoi(string(m[1]))
	minor, err2 := strconv.Atoi(string(m[2]))
	if err1 != nil || err2 != nil || major > 999 || minor > 999 {
		return 0, 0, "", fmt.Errorf("version %q out of range", m[0])
	}
	return major, minor, strings.TrimPrefix(string(m[0]), "QEMU emulator version "), nil
}

// QEMUObjects lists the object types of `qemu-system-* -object help`.
func QEMUObjects(out []byte) []string { return qemuhelp.Objects(out) }

func (o CheckOptions) runQEMU(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	argv := append(append(append([]string{}, o.QEMUPrefix...), o.QEMU), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &limitedBuffer{b: &out, n: 1 << 20}, &limitedBuffer{b: &out, n: 1 << 20}
	if err := cmd.Run(); err != nil {
		first, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
		return nil, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, printable(first))
	}
	return out.Bytes(), nil
}

// limitedBuffer keeps at most n bytes and discards the rest (QEMU's output is host input).
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (o CheckOptions) checkQEMU(ctx context.Context, req qemuRequirement) (string, CheckItem, CheckItem) {
	vit, oit := CheckItem{Name: ItemQEMUVersion}, CheckItem{Name: ItemQEMUObject}
	want := fmt.Sprintf("%d.%d", req.major, req.minor)
	fixVersion := fmt.Sprintf("install QEMU >= %s (it has %s) and give its path with --qemu (the node config's qemu)", want, req.object)
	out, err := o.runQEMU(ctx, "--version")
	if err != nil {
		return "", fail(vit, err.Error(), fixVersion), fail(oit, "QEMU did not run", fixVersion)
	}
	major, minor, version, err := ParseQEMUVersion(out)
	if err != nil {
		return "", fail(vit, fmt.Sprintf("%s: %v", o.QEMU, err), fixVersion), fail(oit, "QEMU version unknown", fixVersion)
	}
	if major < req.major || major == req.major && minor < req.minor {
		vit = fail(vit, fmt.Sprintf("%s is QEMU %s, older than %s (needed for %s)", o.QEMU, version, want, req.object), fixVersion)
	} else {
		vit = ok(vit, fmt.Sprintf("%s is QEMU %s (>= %s)", o.QEMU, version, want))
	}
	out, err = o.runQEMU(ctx, "-object", "help")
	if err != nil {
		return version, vit, fail(oit, err.Error(), fixVersion)
	}
	objs := QEMUObjects(out)
	for _, obj := range objs {
		if obj == req.object {
			return version, vit, ok(oit, fmt.Sprintf("-object help lists %s", req.object))
		}
	}
	return version, vit, fail(oit, fmt.Sprintf("%s -object help does not list %s (%d objects)", o.QEMU, req.object, len(objs)), fixVersion+"; a distribution build may leave it out")
}

// maxFirmwareSize bounds the firmware read (OVMF images are 2–4 MiB).
const maxFirmwareSize = 64 << 20

func (o CheckOptions) checkFirmware(t TEE) CheckItem {
	it := CheckItem{Name: ItemFirmware}
	data, err := readLimited(o.host(o.Firmware), maxFirmwareSize)
	if err != nil {
		return fail(it, fmt.Sprintf("%s: %v", o.Firmware, err), "give the firmware path with --firmware (docs/hardware.md: building it)")
	}
	fw, err := ovmf.Parse(data)
	if err != nil {
		return fail(it, fmt.Sprintf("%s: %v", o.Firmware, err), "rebuild the firmware")
	}
	if t == TEESNP {
		const fix = "build OVMF's AmdSev package (OvmfPkg/AmdSev/AmdSevX64.dsc): only it has the kernel-hashes table QEMU's kernel-hashes=on fills"
		switch {
		case len(fw.SEVSections()) == 0:
			return fail(it, o.Firmware+": no SEV metadata (not an OVMF built for SEV)", fix)
		case !fw.HasSEVSection(ovmf.SNPKernelHashes):
			return fail(it, o.Firmware+": SEV metadata without an SNP_KERNEL_HASHES section (an OvmfX64 build, not AmdSev)", fix)
		}
		if _, err := fw.SEVHashTableGPA(); err != nil {
			return fail(it, fmt.Sprintf("%s: %v", o.Firmware, err), fix)
		}
		if _, err := fw.SEVESResetEIP(); err != nil {
			return fail(it, fmt.Sprintf("%s: %v", o.Firmware, err), fix)
		}
		return ok(it, fmt.Sprintf("%s: AmdSev OVMF (%d SEV metadata sections, kernel-hashes table)", o.Firmware, len(fw.SEVSections())))
	}
	const fix = "use a TDVF build (OvmfPkg/IntelTdx/IntelTdxX64.dsc or a unified OVMF.fd with TDX metadata, not the CODE half)"
	if !fw.HasTDXMetadata() {
		return fail(it, o.Firmware+": no TDX metadata (not a TDVF)", fix)
	}
	sections, err := fw.TDXSections()
	if err != nil {
		return fail(it, fmt.Sprintf("%s: %v", o.Firmware, err), fix)
	}
	for _, s := range sections {
		if s.Type == ovmf.TDXBFV && s.Attributes&ovmf.TDXAttrMRExtend != 0 {
			return ok(it, fmt.Sprintf("%s: TDVF (%d TDX metadata sections, measured BFV)", o.Firmware, len(sections)))
		}
	}
	return fail(it, o.Firmware+": TDX metadata without a measured boot firmware volume", fix)
}

// DevCPUID reads CPUID through the Linux cpuid driver (/dev/cpu/N/cpuid: a 16-byte read at
// offset leaf | subleaf<<32 gives EAX, EBX, ECX, EDX). Pure Go cannot execute CPUID without
// assembly, and golang.org/x/sys/cpu does not expose leaf 0x8000001F.
type DevCPUID struct{ Path string }

// CPUID reads one leaf.
func (d DevCPUID) CPUID(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32, err error) {
	f, err := os.Open(d.Path)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer f.Close()
	var b [16]byte
	if _, err := f.ReadAt(b[:], int64(leaf)|int64(subleaf)<<32); err != nil {
		return 0, 0, 0, 0, fmt.Errorf("read %s leaf %#x: %w", d.Path, leaf, err)
	}
	le := binary.LittleEndian
	return le.Uint32(b[0:]), le.Uint32(b[4:]), le.Uint32(b[8:]), le.Uint32(b[12:]), nil
}

const (
	cpuidExtMax    = 0x80000000
	cpuidSEV       = 0x8000001F
	cpuidSEVSNPBit = 1 << 4
)

// ReadSNPHostParams reads the host's SEV-SNP support, cbitpos and physical address reduction
// from CPUID 0x8000001F.
func ReadSNPHostParams(r CPUIDReader) (*SNPHostParams, error) {
	maxLeaf, _, _, _, err := r.CPUID(cpuidExtMax, 0)
	if err != nil {
		return nil, err
	}
	if maxLeaf < cpuidSEV {
		return nil, fmt.Errorf("CPUID: highest extended leaf %#x has no leaf 0x8000001F (not an AMD CPU with memory encryption)", maxLeaf)
	}
	eax, ebx, _, _, err := r.CPUID(cpuidSEV, 0)
	if err != nil {
		return nil, err
	}
	if eax&cpuidSEVSNPBit == 0 {
		return nil, fmt.Errorf("CPUID 0x8000001F EAX=%#x: no SEV-SNP (bit 4)", eax)
	}
	p := &SNPHostParams{CBitPos: int(ebx & 0x3f), PhysAddrReduction: int(ebx>>6) & 0x3f}
	if p.CBitPos < 32 || p.CBitPos > 63 {
		return nil, fmt.Errorf("CPUID 0x8000001F EBX=%#x: cbitpos %d outside 32..63", ebx, p.CBitPos)
	}
	return p, nil
}

func (o CheckOptions) checkCBitPos() (*SNPHostParams, CheckItem) {
	it := CheckItem{Name: ItemCBitPos}
	p, err := ReadSNPHostParams(o.CPUID)
	if err != nil {
		return nil, fail(it, err.Error(), "load the cpuid driver (modprobe cpuid) and give the installer the host's /dev; SNP needs an AMD EPYC 7003 or later with SNP enabled in the BIOS")
	}
	return p, ok(it, fmt.Sprintf("cbitpos %d, physical address reduction %d (CPUID 0x8000001F; QEMU takes reduced-phys-bits=1)", p.CBitPos, p.PhysAddrReduction))
}

// qgsAddress is where the TDX Quote Generation Service listens.
type qgsAddress struct {
	unixPath  string
	cid, port uint32
}

func (a qgsAddress) String() string {
	if a.unixPath != "" {
		return "unix:" + a.unixPath
	}
	return fmt.Sprintf("vsock:%d:%d", a.cid, a.port)
}

func parseQGS(s string) (qgsAddress, error) {
	switch {
	case s == "":
		return qgsAddress{unixPath: DefaultQGSSocket}, nil
	case strings.HasPrefix(s, "unix:"):
		p := strings.TrimPrefix(s, "unix:")
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			return qgsAddress{}, fmt.Errorf("qgs %q: want unix:<clean absolute path>", s)
		}
		return qgsAddress{unixPath: p}, nil
	case strings.HasPrefix(s, "vsock:"):
		cid, port, found := strings.Cut(strings.TrimPrefix(s, "vsock:"), ":")
		c, err1 := strconv.ParseUint(cid, 10, 32)
		p, err2 := strconv.ParseUint(port, 10, 32)
		if !found || err1 != nil || err2 != nil {
			return qgsAddress{}, fmt.Errorf("qgs %q: want vsock:<cid>:<port>", s)
		}
		return qgsAddress{cid: uint32(c), port: uint32(p)}, nil
	}
	return qgsAddress{}, fmt.Errorf("qgs %q: want unix:<path> or vsock:<cid>:<port>", s)
}

func (o CheckOptions) checkQGS(ctx context.Context, a qgsAddress) CheckItem {
	it := CheckItem{Name: ItemQGS}
	const fix = "install and start Intel's QGS (sgx-dcap tdx-qgs) with PCCS configured; give its address with --qgs"
	if a.unixPath != "" {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.DialContext(ctx, "unix", o.host(a.unixPath))
		if err != nil {
			return fail(it, fmt.Sprintf("%s: %v", a, err), fix)
		}
		c.Close()
		return ok(it, fmt.Sprintf("%s accepts connections", a))
	}
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail(it, fmt.Sprintf("%s: socket: %v", a, err), "load the vhost_vsock module; "+fix)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: a.cid, Port: a.port}); err != nil {
		return fail(it, fmt.Sprintf("%s: connect: %v", a, err), fix)
	}
	return ok(it, fmt.Sprintf("%s accepts connections", a))
}
