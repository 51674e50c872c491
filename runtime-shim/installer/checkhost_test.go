package installer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/sealpod/sealpod/guest-image/measure/ovmf"
	"github.com/sealpod/sealpod/internal/repopath"
	shimconfig "github.com/sealpod/sealpod/runtime-shim/config"
)

// fakeHost is a host root describing a node of one TEE, for the readiness check: the
// sysfs parameter, a fake /dev/kvm, a sparse /dev/cpu/0/cpuid, a fake QEMU script (outside the
// root, run directly), a firmware, the node config, the shim and containerd's config with the
// handler. Each field can be broken by a test before Check runs.
type fakeHost struct {
	root, qemu, firmware string
	opts                 CheckOptions
}

const firmwareHostPath = "/usr/share/sealpod/firmware.fd"

func write(t *testing.T, path string, data []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

// fakeQEMU writes a QEMU stand-in answering --version and -object help.
func fakeQEMU(t *testing.T, version string, objects ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	list := ""
	for _, o := range objects {
		list += "  " + o + "\n"
	}
	script := fmt.Sprintf(`#!/bin/sh
case "$1" in
--version) printf 'QEMU emulator version %s\nCopyright (c) 2003-2024 Fabrice Bellard and the QEMU Project developers\n' ;;
-object) [ "$2" = help ] || exit 1; printf 'List of user creatable objects:\n%s' ;;
*) echo "fake qemu: unexpected $*" >&2; exit 1 ;;
esac
`, version, list)
	write(t, p, []byte(script), 0o755)
	return p
}

// writeCPUID writes leaves into a sparse file laid out like /dev/cpu/N/cpuid.
func writeCPUID(t *testing.T, path string, leaves map[uint32][4]uint32) {
	t.Helper()
	write(t, path, nil, 0o600)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for leaf, regs := range leaves {
		var b [16]byte
		for i, r := range regs {
			binary.LittleEndian.PutUint32(b[4*i:], r)
		}
		if _, err := f.WriteAt(b[:], int64(leaf)); err != nil {
			t.Fatal(err)
		}
	}
}

func snpCPUID(eax, ebx uint32) map[uint32][4]uint32 {
	return map[uint32][4]uint32{0x80000000: {0x80000021}, 0x8000001F: {eax, ebx}}
}

// amdSevFirmware is the AmdSev OVMF suffix virtee/sev-snp-measure tests with (shared testdata).
func sharedFirmware(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(repopath.Shared(t, "snp-measure", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tdvf builds a minimal TDVF: an OVMF footer table whose TDX metadata entry points at a
// descriptor with a measured BFV covering the image and an unmeasured TD_HOB.
func tdvf(t *testing.T) []byte {
	t.Helper()
	const size = 8192
	u32 := func(b []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(b, v) }
	u64 := func(b []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(b, v) }
	section := func(b []byte, off, raw uint32, addr, mem uint64, typ, attr uint32) []byte {
		return u32(u32(u64(u64(u32(u32(b, off), raw), addr), mem), typ), attr)
	}
	meta := u32(u32(u32([]byte("TDVF"), 16+2*32), 1), 2)
	meta = section(meta, 0, size, ovmf.FourGiB-size, size, uint32(ovmf.TDXBFV), ovmf.TDXAttrMRExtend)
	meta = section(meta, 0, 0, 0x800000, 4096, uint32(ovmf.TDXTDHOB), 0)
	entry := func(g ovmf.GUID, data []byte) []byte {
		return append(append(append([]byte{}, data...), byte(len(data)+18), byte((len(data)+18)>>8)), g[:]...)
	}
	// [padding][meta][entry][footer][32 bytes]: the entry holds the offset of meta from the end.
	ent := entry(ovmf.TDXMetadataGUID, u32(nil, uint32(len(meta)+22+18+32)))
	footer := append([]byte{byte(len(ent) + 18), byte((len(ent) + 18) >> 8)}, ovmf.FooterTableGUID[:]...)
	tail := append(append(append(append([]byte{}, meta...), ent...), footer...), make([]byte, 32)...)
	img := append(make([]byte, size-len(tail)), tail...)
	fw, err := ovmf.Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.TDXSections(); err != nil {
		t.Fatalf("synthetic TDVF: %v", err)
	}
	return img
}

func newFakeHost(t *testing.T, tee TEE) *fakeHost {
	t.Helper()
	h := &fakeHost{root: t.TempDir()}
	accel := "kvm"
	cfg := shimconfig.Config{TEE: string(tee), Accel: accel}
	if tee == TEESim {
		cfg.Accel, cfg.SimKey = "tcg", DefaultSimKeyPath
	}
	h.qemu = fakeQEMU(t, "10.1.2", "authz-list", "sev-guest", "sev-snp-guest", "tdx-guest")
	cfg.QEMU = h.qemu
	data, err := jsonConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	write(t, h.path(shimconfig.DefaultPath), data, 0o644)
	write(t, h.path(DefaultShimDir+"/"+ShimBinaryName), []byte("#!/bin/sh\n"), 0o755)
	ctrd, err := AddRuntime([]byte("version = 2\n"), RuntimeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	write(t, h.path(DefaultConfigPath), ctrd, 0o644)
	write(t, h.path("/dev/kvm"), nil, 0o600)
	switch tee {
	case TEESNP:
		write(t, h.path("/"+snpHostParam), []byte("Y\n"), 0o444)
		write(t, h.path(firmwareHostPath), sharedFirmware(t, "ovmf_AmdSev_suffix.bin"), 0o644)
		writeCPUID(t, h.path("/dev/cpu/0/cpuid"), snpCPUID(0x1f, 51|1<<6))
		h.firmware = firmwareHostPath
	case TEETDX:
		write(t, h.path("/"+tdxHostParam), []byte("Y\n"), 0o444)
		write(t, h.path(firmwareHostPath), tdvf(t), 0o644)
		h.firmware = firmwareHostPath
	}
	h.opts = CheckOptions{
		HostRoot: h.root,
		TEE:      tee,
		Firmware: h.firmware,
		// A regular file cannot answer KVM_GET_API_VERSION: the probe is faked here and
		// ProbeKVM is tested on its own (TestProbeKVM).
		KVMProbe: func(p string) (string, error) {
			if _, err := os.Stat(p); err != nil {
				return "", err
			}
			return "fake KVM", nil
		},
	}
	return h
}

func (h *fakeHost) path(p string) string { return filepath.Join(h.root, p) }

// listenQGS serves a unix socket at the default QGS path under the fake root.
func (h *fakeHost) listenQGS(t *testing.T) { t.Helper(); h.listenQGSAt(t, DefaultQGSSocket) }

// listenQGSAt serves a unix socket at the host path qgs under the fake root.
func (h *fakeHost) listenQGSAt(t *testing.T, qgs string) {
	t.Helper()
	p := h.path(qgs)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func TestProbeKVM(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "kvm")
	write(t, regular, nil, 0o600)
	if _, err := ProbeKVM(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing /dev/kvm: %v", err)
	}
	if _, err := ProbeKVM(regular); err == nil {
		t.Error("a regular file passed as /dev/kvm")
	}
	// /dev/null is a character device that is not KVM: the ioctl must fail.
	if _, err := ProbeKVM("/dev/null"); err == nil {
		t.Error("/dev/null passed as /dev/kvm")
	}
}

type fakeCPUID map[uint32][4]uint32

func (f fakeCPUID) CPUID(leaf, _ uint32) (uint32, uint32, uint32, uint32, error) {
	r, ok := f[leaf]
	if !ok {
		return 0, 0, 0, 0, fmt.Errorf("leaf %#x: %w", leaf, fs.ErrNotExist)
	}
	return r[0], r[1], r[2], r[3], nil
}

func TestReadSNPHostParams(t *testing.T) {
	tests := []struct {
		name     string
		cpuid    fakeCPUID
		cbit, rp int
		wantErr  bool
	}{
		{"milan", fakeCPUID(snpCPUID(0x1f, 51|1<<6)), 51, 1, false},
		{"genoa cbit 51 reduction 6", fakeCPUID(snpCPUID(0x1001f, 51|6<<6)), 51, 6, false},
		{"intel: no leaf 0x8000001F", fakeCPUID{0x80000000: {0x80000008}}, 0, 0, true},
		{"sev without snp", fakeCPUID(snpCPUID(0x0f, 51|1<<6)), 0, 0, true},
		{"cbitpos out of range", fakeCPUID(snpCPUID(0x1f, 12)), 0, 0, true},
		{"unreadable", fakeCPUID{}, 0, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ReadSNPHostParams(tc.cpuid)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("accepted: %+v", p)
				}
				return
			}
			if err != nil || p.CBitPos != tc.cbit || p.PhysAddrReduction != tc.rp {
				t.Fatalf("got %+v, %v; want cbitpos %d reduction %d", p, err, tc.cbit, tc.rp)
			}
		})
	}
	// DevCPUID reads the same layout from a file (a sparse copy of /dev/cpu/0/cpuid).
	p := filepath.Join(t.TempDir(), "cpuid")
	writeCPUID(t, p, snpCPUID(0x1f, 47|1<<6))
	got, err := ReadSNPHostParams(DevCPUID{Path: p})
	if err != nil || got.CBitPos != 47 {
		t.Fatalf("DevCPUID: %+v %v", got, err)
	}
}

func TestParseQEMUVersion(t *testing.T) {
	tests := []struct {
		out          string
		major, minor int
		ok           bool
	}{
		{"QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright", 7, 2, true},
		{"QEMU emulator version 9.1.0\n", 9, 1, true},
		{"QEMU emulator version 10.1.50 (v10.1.0-123)\n", 10, 1, true},
		{"QEMU emulator version 10.1\n", 10, 1, true},
		{"qemu 9.1\n", 0, 0, false},
		{"", 0, 0, false},
		{"QEMU emulator version 99999.1\n", 0, 0, false},
	}
	for _, tc := range tests {
		major, minor, _, err := ParseQEMUVersion([]byte(tc.out))
		if (err == nil) != tc.ok || major != tc.major || minor != tc.minor {
			t.Errorf("ParseQEMUVersion(%q) = %d.%d, %v", tc.out, major, minor, err)
		}
	}
	objs := QEMUObjects([]byte("List of user creatable objects:\n  authz-list\n  sev-snp-guest\n\n  tdx-guest\n"))
	if len(objs) != 3 || objs[1] != "sev-snp-guest" || objs[2] != "tdx-guest" {
		t.Errorf("QEMUObjects = %q", objs)
	}
}

func TestParseQGS(t *testing.T) {
	for in, want := range map[string]string{
		"":                        "unix:" + DefaultQGSSocket,
		"unix:/run/qgs.sock":      "unix:/run/qgs.sock",
		"vsock:2:4050":            "vsock:2:4050",
		"unix:run/qgs.sock":       "",
		"unix:/run/../etc/passwd": "",
		"vsock:2":                 "",
		"vsock:x:4050":            "",
		"tcp:127.0.0.1:4050":      "",
	} {
		a, err := parseQGS(in)
		if got := a.String(); (want == "") != (err != nil) || err == nil && got != want {
			t.Errorf("parseQGS(%q) = %s, %v; want %q", in, got, err, want)
		}
	}
}

func FuzzParseQEMUVersion(f *testing.F) {
	f.Add([]byte("QEMU emulator version 7.2.22 (Debian)\n"))
	f.Add([]byte("List of user creatable objects:\n  sev-snp-guest\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		if major, minor, v, err := ParseQEMUVersion(out); err == nil && (major > 999 || minor > 999 || v == "") {
			t.Fatalf("accepted %d.%d %q", major, minor, v)
		}
		for _, o := range QEMUObjects(out) {
			if o == "" {
				t.Fatal("empty object name")
			}
		}
	})
}

func FuzzParseQGS(f *testing.F) {
	for _, s := range []string{"", "unix:/run/qgs.sock", "vsock:2:4050", "vsock::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseQGS(s)
		if err == nil && a.unixPath == "" && s != "" && a.String() == "" {
			t.Fatalf("parseQGS(%q) accepted an empty address", s)
		}
		if err == nil && a.unixPath != "" && !filepath.IsAbs(a.unixPath) {
			t.Fatalf("parseQGS(%q) accepted a relative path", s)
		}
	})
}
