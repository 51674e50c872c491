package snp

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/sealpod/sealpod/guest-image/measure/ovmf"
	"github.com/sealpod/sealpod/internal/testdeps"
)

func amdSevFirmware(t testing.TB, size int) *ovmf.Firmware {
	t.Helper()
	suffix, err := os.ReadFile(filepath.Join(sharedDir(t), "ovmf_AmdSev_suffix.bin"))
	if err != nil {
		t.Fatal(err)
	}
	// Metadata offsets count from the end, so deterministic filler in front keeps the suffix's
	// tables valid while giving a realistically sized image.
	img := make([]byte, size-len(suffix), size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range img {
		img[i] = byte(r.Uint32())
	}
	fw, err := ovmf.Parse(append(img, suffix...))
	if err != nil {
		t.Fatal(err)
	}
	return fw
}

func baseParams(fw *ovmf.Firmware, kernel, initrd []byte, cmdline string) Params {
	h := HashBoot(kernel, initrd, cmdline)
	return Params{Firmware: fw, Boot: &h, VCPUs: 2, VCPUSig: CPUSignature(23, 1, 2), GuestFeatures: 1}
}

// TestSensitivity: changing one byte of kernel, initrd or cmdline, the vCPU count, the vCPU
// type, the guest features, the VMM or one firmware byte changes the digest.
func TestSensitivity(t *testing.T) {
	fw := amdSevFirmware(t, 64*1024)
	kernel, initrd := bytes.Repeat([]byte{0x4b}, 10000), bytes.Repeat([]byte{0x49}, 20000)
	base, err := LaunchDigest(baseParams(fw, kernel, initrd, "console=hvc0"))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 1
		return c
	}
	fwData := flip(fw.Data(), 100)
	fw2, err := ovmf.Parse(fwData)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]Params{
		"kernel byte":    baseParams(fw, flip(kernel, 5000), initrd, "console=hvc0"),
		"initrd byte":    baseParams(fw, kernel, flip(initrd, 19999), "console=hvc0"),
		"cmdline byte":   baseParams(fw, kernel, initrd, "console=hvc1"),
		"firmware byte":  baseParams(fw2, kernel, initrd, "console=hvc0"),
		"no direct boot": func() Params { p := baseParams(fw, kernel, initrd, "console=hvc0"); p.Boot = nil; return p }(),
		"vcpus":          func() Params { p := baseParams(fw, kernel, initrd, "console=hvc0"); p.VCPUs = 3; return p }(),
		"vcpu type": func() Params {
			p := baseParams(fw, kernel, initrd, "console=hvc0")
			p.VCPUSig = CPUSignature(25, 1, 1)
			return p
		}(),
		"guest features": func() Params { p := baseParams(fw, kernel, initrd, "console=hvc0"); p.GuestFeatures = 0x21; return p }(),
		"vmm":            func() Params { p := baseParams(fw, kernel, initrd, "console=hvc0"); p.VMM = VMMEC2; return p }(),
	}
	seen := map[[DigestSize]byte]string{base: "base"}
	for name, p := range tests {
		d, err := LaunchDigest(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if other, dup := seen[d]; dup {
			t.Errorf("%s gives the same digest as %s", name, other)
		}
		seen[d] = name
	}
	again, err := LaunchDigest(baseParams(fw, kernel, initrd, "console=hvc0"))
	if err != nil || again != base {
		t.Errorf("not deterministic: %x vs %x (%v)", again, base, err)
	}
}

func TestParamErrors(t *testing.T) {
	fw := amdSevFirmware(t, 8192)
	noMeta, err := ovmf.Parse(make([]byte, 8192))
	if err != nil {
		t.Fatal(err)
	}
	odd, err := ovmf.Parse(append(make([]byte, 100), fw.Data()...))
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]Params{
		"no firmware":        {VCPUs: 1},
		"zero vcpus":         {Firmware: fw, VCPUs: 0},
		"too many vcpus":     {Firmware: fw, VCPUs: MaxVCPUs + 1},
		"no sev metadata":    {Firmware: noMeta, VCPUs: 1},
		"firmware not paged": {Firmware: odd, VCPUs: 1},
	}
	for name, p := range tests {
		if _, err := LaunchDigest(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestDebianOVMF: Debian's OVMF has SEV metadata but no SNP_KERNEL_HASHES section, so it can be
// measured for a firmware-only boot, and refuses a direct-boot kernel.
func TestDebianOVMF(t *testing.T) {
	data, err := os.ReadFile("/usr/share/OVMF/OVMF_CODE.fd")
	if err != nil {
		testdeps.Missing(t, "Debian ovmf package not installed (apt-get install -y ovmf): %v", err)
	}
	fw, err := ovmf.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	p := Params{Firmware: fw, VCPUs: 4, VCPUSig: CPUSignature(23, 1, 2), GuestFeatures: 1}
	d1, err := LaunchDigest(p)
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := FirmwareDigest(fw)
	if err != nil {
		t.Fatal(err)
	}
	p.FirmwareDigest = &fwd
	if d2, err := LaunchDigest(p); err != nil || d2 != d1 {
		t.Errorf("seeded with the firmware digest: %x, %v; want %x", d2, err, d1)
	}
	h := HashBoot([]byte("kernel"), nil, "")
	p.Boot = &h
	if _, err := LaunchDigest(p); !errors.Is(err, ErrNoKernelHashes) {
		t.Errorf("with a kernel: %v, want ErrNoKernelHashes", err)
	}
	// sim falls back to its documented construction for such a firmware.
	s, err := SimLaunchDigest(p)
	if err != nil {
		t.Fatal(err)
	}
	if s == d1 {
		t.Error("sim digest with a kernel equals the firmware-only SNP digest")
	}
}

func TestSim(t *testing.T) {
	withHashes := amdSevFirmware(t, 8192)
	h := HashBoot([]byte("kernel"), []byte("initrd"), "console=hvc0")
	sig := CPUSignature(23, 1, 2)

	// With a kernel-hashes firmware, sim is exactly SNP.
	p := Params{Firmware: withHashes, Boot: &h, VCPUs: 2, VCPUSig: sig, GuestFeatures: 1}
	snpD, err := LaunchDigest(p)
	if err != nil {
		t.Fatal(err)
	}
	simD, err := SimLaunchDigest(p)
	if err != nil || simD != snpD {
		t.Fatalf("sim %x (%v) != snp %x", simD, err, snpD)
	}

	// Without firmware: hashes page at SimHashesGPA, then VMSAs at the reset vector.
	noFW := Params{Boot: &h, VCPUs: 2, VCPUSig: sig, GuestFeatures: 1}
	d, err := SimLaunchDigest(noFW)
	if err != nil {
		t.Fatal(err)
	}
	c := newLaunchContext(nil)
	c.normalPages(SimHashesGPA, h.page(0))
	v := vmsaPage(bspEIP, 1, sig, VMMQEMU)
	c.vmsaPage(v)
	c.vmsaPage(v)
	if d != c.ld {
		t.Errorf("no-firmware sim digest %x does not follow the documented construction %x", d, c.ld)
	}
	h2 := HashBoot([]byte("kernel"), []byte("initrd"), "console=hvc1")
	noFW.Boot = &h2
	if d2, _ := SimLaunchDigest(noFW); d2 == d {
		t.Error("sim digest ignores the command line")
	}
	if _, err := SimLaunchDigest(Params{VCPUs: 1}); err == nil {
		t.Error("sim digest with neither firmware nor kernel accepted")
	}
}

func TestVCPUTypes(t *testing.T) {
	tests := map[string]uint32{"EPYC-v4": 0x00800f12, "epyc-milan": 0x00a00f11, "EPYC-Genoa": 0x00a10f10, "0x00800f12": 0x00800f12, "EPYC-Rome": 0x00830f10}
	for in, want := range tests {
		got, err := ParseVCPUType(in)
		if err != nil || got != want {
			t.Errorf("ParseVCPUType(%q) = %#x, %v; want %#x", in, got, err, want)
		}
	}
	if _, err := ParseVCPUType("Skylake"); err == nil {
		t.Error("unknown vCPU type accepted")
	}
}

func TestHashesTable(t *testing.T) {
	h := HashBoot(nil, nil, "")
	tab := h.table()
	if len(tab) != 176 {
		t.Fatalf("table size %d, want 176", len(tab))
	}
	if tab[16] != 168 || tab[17] != 0 {
		t.Errorf("table length field %d, want 168", tab[16])
	}
	page := h.page(0x400)
	if !bytes.Equal(page[0x400:0x400+176], tab) || len(page) != 4096 {
		t.Error("page does not hold the table at its offset")
	}
}

// BenchmarkSNPDigest: a realistic guest — 2 MiB firmware, 8 MiB kernel, 30 MiB initrd, 2 vCPUs —
// including the SHA-256 of kernel, initrd and cmdline.
func BenchmarkSNPDigest(b *testing.B) {
	fw := amdSevFirmware(b, 2<<20)
	kernel, initrd := make([]byte, 8<<20), make([]byte, 30<<20)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range kernel {
		kernel[i] = byte(r.Uint32())
	}
	for i := range initrd {
		initrd[i] = byte(r.Uint32())
	}
	b.SetBytes(int64(len(fw.Data()) + len(kernel) + len(initrd)))
	b.ResetTimer()
	for b.Loop() {
		h := HashBoot(kernel, initrd, "console=hvc0 quiet")
		p := Params{Firmware: fw, Boot: &h, VCPUs: 2, VCPUSig: 0x00800f12, GuestFeatures: 1}
		if _, err := LaunchDigest(p); err != nil {
			b.Fatal(err)
		}
	}
}
