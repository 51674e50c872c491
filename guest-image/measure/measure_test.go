package measure

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/internal/repopath"

	"github.com/sealpod/sealpod/guest-image/measure/internal/testkernel"
	"github.com/sealpod/sealpod/guest-image/measure/snp"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/internal/testdeps"
)

func sharedDir(t testing.TB) string { return repopath.Shared(t, "snp-measure") }

// TestComputeSNPVector runs a shared vector through the facade (the path `make guest`, the CLI
// and the sim AMD-SP use).
func TestComputeSNPVector(t *testing.T) {
	dir := sharedDir(t)
	raw, err := os.ReadFile(filepath.Join(dir, "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Vectors []struct {
			Name     string  `json:"name"`
			Expected *string `json:"expected"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	want := ""
	for _, v := range doc.Vectors {
		if v.Name == "snp_default" && v.Expected != nil {
			want = *v.Expected
		}
	}
	if want == "" {
		t.Fatal("vector snp_default missing")
	}
	fw, err := os.ReadFile(filepath.Join(dir, "ovmf_AmdSev_suffix.bin"))
	if err != nil {
		t.Fatal(err)
	}
	in := Inputs{Firmware: fw, Boot: &Boot{Kernel: []byte{}, Cmdline: "console=ttyS0 loglevel=7"},
		VCPUs: 1, VCPUType: "EPYC-v4", GuestFeatures: 0x21, TEEs: []tee.TEE{"snp", "sim"}}
	m, err := Compute(in)
	if err != nil {
		t.Fatal(err)
	}
	if m.SNP != want {
		t.Fatalf("snp %s, want %s", m.SNP, want)
	}
	if m.Sim != want {
		t.Errorf("sim %s, want the snp digest %s for a kernel-hashes firmware", m.Sim, want)
	}
	if m.TDX != nil || m.PEF != nil {
		t.Error("computed TEEs that were not requested")
	}
}

// bzImage is an EFI-stub kernel (see testkernel) carrying version.
func bzImage(version string, size int) []byte { return testkernel.BzImage(version, size, true) }

func debianUnifiedOVMF(t *testing.T) []byte {
	vars, err1 := os.ReadFile("/usr/share/OVMF/OVMF_VARS.fd")
	code, err2 := os.ReadFile("/usr/share/OVMF/OVMF_CODE.fd")
	if err1 != nil || err2 != nil {
		testdeps.Missing(t, "Debian ovmf package not installed (apt-get install -y ovmf): %v %v", err1, err2)
	}
	return append(vars, code...)
}

// TestComputeAuto: with no TEEs requested, Compute measures what the inputs support.
func TestComputeAuto(t *testing.T) {
	fw := debianUnifiedOVMF(t)
	boot := &Boot{Kernel: bzImage("6.12.1", 8192), Cmdline: "console=hvc0"}
	m, err := Compute(Inputs{Firmware: fw, Boot: boot, VCPUs: 2})
	if err != nil {
		t.Fatal(err)
	}
	if m.Sim == "" || m.TDX == nil || m.PEF == nil {
		t.Fatalf("auto measurements %+v: want sim, tdx and pef", m)
	}
	if m.SNP != "" {
		t.Error("snp measured for a firmware that cannot measure the kernel")
	}
	if len(m.TDX.RTMRs) != 4 || m.TDX.RTMRs[1] == "" || m.TDX.RTMRs[2] == "" || m.TDX.RTMRs[0] != "" || m.TDX.RTMRs[3] != "" {
		t.Errorf("rtmrs %q: want RTMR[1] and RTMR[2] pinned", m.TDX.RTMRs)
	}
	cfg := bundle.Config{Version: 1, VCPUs: 2, MemoryMiB: 512, Cmdline: boot.Cmdline, Measurements: m}
	if err := cfg.Validate(); err != nil {
		t.Errorf("measurements do not validate as guest.json: %v", err)
	}
	// Without a kernel, SNP of Debian's OVMF is measurable and selected.
	m2, err := Compute(Inputs{Firmware: fw, VCPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	if m2.SNP == "" || m2.TDX == nil || m2.TDX.RTMRs != nil || m2.PEF != nil {
		t.Errorf("firmware-only auto measurements %+v", m2)
	}
	// The CODE half of the split image has a TDX pointer that does not fit: auto mode measures
	// the other TEEs, an explicit tdx request fails.
	code, err := os.ReadFile("/usr/share/OVMF/OVMF_CODE.fd")
	if err != nil {
		t.Fatal(err)
	}
	m4, err := Compute(Inputs{Firmware: code, VCPUs: 1})
	if err != nil || m4.SNP == "" || m4.TDX != nil {
		t.Errorf("OVMF_CODE.fd auto: %+v, %v", m4, err)
	}
	if _, err := Compute(Inputs{Firmware: code, VCPUs: 1, TEEs: []tee.TEE{"tdx"}}); err == nil {
		t.Error("OVMF_CODE.fd with --tee tdx accepted")
	}
}

// TestComputeTDXBoot: RTMR[1] and RTMR[2] are pinned together, or neither is, for each kind
// of boot (kernel version, separate initrd or not, how QEMU hands over the kernel header).
func TestComputeTDXBoot(t *testing.T) {
	fw := debianUnifiedOVMF(t)
	zero := strings.Repeat("0", 96)
	k61, k612 := bzImage("6.1.0-27-amd64 (debian)", 8192), bzImage("6.12.1", 8192)
	for name, tc := range map[string]struct {
		boot   Boot
		header string
		pinned bool
		r2zero bool
	}{
		// Linux 6.1 with initramfs and command line built in: RTMR[1] covers all, RTMR[2] = 0.
		"6.1 built-in initramfs":         {Boot{Kernel: k61, Cmdline: "ignored"}, "", true, true},
		"6.1 separate initrd":            {Boot{Kernel: k61, Initrd: []byte("i")}, "unmodified", false, false},
		"6.12 separate initrd, qemu hdr": {Boot{Kernel: k612, Initrd: []byte("i")}, "qemu", false, false},
		"6.12 separate initrd, unmod.":   {Boot{Kernel: k612, Initrd: []byte("i"), Cmdline: "c"}, "unmodified", true, false},
		"6.12 no initrd no cmdline":      {Boot{Kernel: k612}, "", true, true},
		"vga= rewrites the header":       {Boot{Kernel: k61, Cmdline: "vga=791"}, "", false, false},
		"not an EFI stub":                {Boot{Kernel: testkernel.BzImage("6.1.0", 8192, false)}, "", false, false},
		"no setup header":                {Boot{Kernel: []byte("kernel")}, "", false, false},
	} {
		t.Run(name, func(t *testing.T) {
			b := tc.boot
			m, err := Compute(Inputs{Firmware: fw, Boot: &b, VCPUs: 1, TDXKernelHeader: tc.header, TEEs: []tee.TEE{"tdx"}})
			if err != nil {
				t.Fatal(err)
			}
			if !tc.pinned {
				if m.TDX.RTMRs != nil {
					t.Fatalf("rtmrs %q pinned for a boot they do not bind", m.TDX.RTMRs)
				}
				return
			}
			r := m.TDX.RTMRs
			if len(r) != 4 || r[0] != "" || r[3] != "" || r[1] == "" || r[1] == zero || r[2] == "" || (r[2] == zero) != tc.r2zero {
				t.Fatalf("rtmrs %q", r)
			}
		})
	}
	if _, err := Compute(Inputs{Firmware: fw, Boot: &Boot{Kernel: k61}, VCPUs: 1, TDXKernelHeader: "grub", TEEs: []tee.TEE{"tdx"}}); err == nil {
		t.Error("unknown TDX kernel header accepted")
	}
}

func TestComputeErrors(t *testing.T) {
	dir := sharedDir(t)
	x64, err := os.ReadFile(filepath.Join(dir, "ovmf_OvmfX64_suffix.bin"))
	if err != nil {
		t.Fatal(err)
	}
	boot := &Boot{Kernel: []byte("k"), Cmdline: "c"}
	tests := map[string]struct {
		in   Inputs
		want error
	}{
		"snp kernel without hashes section": {Inputs{Firmware: x64, Boot: boot, VCPUs: 1, TEEs: []tee.TEE{"snp"}}, snp.ErrNoKernelHashes},
		"tdx without firmware":              {Inputs{Boot: boot, VCPUs: 1, TEEs: []tee.TEE{"tdx"}}, ErrNoFirmware},
		"unknown tee":                       {Inputs{Boot: boot, VCPUs: 1, TEEs: []tee.TEE{"sgx"}}, nil},
		"bad vcpu type":                     {Inputs{Boot: boot, VCPUs: 1, VCPUType: "Skylake", TEEs: []tee.TEE{"sim"}}, nil},
		"bad vmm":                           {Inputs{Boot: boot, VCPUs: 1, VMM: "xen", TEEs: []tee.TEE{"sim"}}, nil},
		"bad firmware digest":               {Inputs{Firmware: x64, VCPUs: 1, FirmwareDigest: "abcd", TEEs: []tee.TEE{"snp"}}, nil},
		"zero vcpus":                        {Inputs{Boot: boot, TEEs: []tee.TEE{"sim"}}, nil},
		"pef without kernel":                {Inputs{Firmware: x64, VCPUs: 1, TEEs: []tee.TEE{"pef"}}, nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Compute(tc.in)
			if err == nil {
				t.Fatal("accepted")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// TestOneByteChanges: changing one byte of kernel, initrd or cmdline changes every measurement
// that covers it (sim without firmware, snp with a kernel-hashes firmware, tdx RTMR[2], pef).
func TestOneByteChanges(t *testing.T) {
	fw, err := os.ReadFile(filepath.Join(sharedDir(t), "ovmf_AmdSev_suffix.bin"))
	if err != nil {
		t.Fatal(err)
	}
	kernel, initrd, cmdline := bzImage("6.10.0", 16384), bytes.Repeat([]byte("I"), 5000), "console=hvc0 quiet"
	measureAll := func(k, i []byte, c string) []string {
		t.Helper()
		boot := &Boot{Kernel: k, Initrd: i, Cmdline: c}
		a, err := Compute(Inputs{Boot: boot, VCPUs: 1, TEEs: []tee.TEE{"sim", "pef"}})
		if err != nil {
			t.Fatal(err)
		}
		b, err := Compute(Inputs{Firmware: fw, Boot: boot, VCPUs: 1, TEEs: []tee.TEE{"snp"}})
		if err != nil {
			t.Fatal(err)
		}
		out := []string{a.Sim, b.SNP, a.PEF.Kernel + a.PEF.Initrd + a.PEF.Cmdline}
		if tfw, err := os.ReadFile("/usr/share/OVMF/OVMF_VARS.fd"); err == nil {
			code, err := os.ReadFile("/usr/share/OVMF/OVMF_CODE.fd")
			if err == nil {
				c, err := Compute(Inputs{Firmware: append(tfw, code...), Boot: boot, VCPUs: 1, TDXKernelHeader: "unmodified", TEEs: []tee.TEE{"tdx"}})
				if err != nil {
					t.Fatal(err)
				}
				if c.TDX.RTMRs == nil {
					t.Fatal("tdx: RTMRs not pinned")
				}
				out = append(out, c.TDX.RTMRs[1], c.TDX.RTMRs[2])
			}
		}
		return out
	}
	base := measureAll(kernel, initrd, cmdline)
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 0x80; return c }
	cases := map[string][]string{
		"kernel":  measureAll(flip(kernel, 9000), initrd, cmdline),
		"initrd":  measureAll(kernel, flip(initrd, 0), cmdline),
		"cmdline": measureAll(kernel, initrd, "console=hvc0 quieT"),
	}
	for name, got := range cases {
		for i := range base {
			// RTMR[1] (index 3) covers only the kernel, RTMR[2] (index 4) only initrd and cmdline.
			if (name == "kernel" && i == 4) || (name != "kernel" && i == 3) {
				if got[i] != base[i] {
					t.Errorf("%s change moved measurement %d", name, i)
				}
				continue
			}
			if got[i] == base[i] {
				t.Errorf("%s change did not change measurement %d (%s)", name, i, got[i])
			}
		}
	}
	if again := measureAll(kernel, initrd, cmdline); !slices.Equal(again, base) {
		t.Error("not deterministic")
	}
}

// TestBundleInputs: a bundle written to disk and loaded measures like the same inputs given
// directly (the path make guest and the sim AMD-SP share).
func TestBundleInputs(t *testing.T) {
	dir := t.TempDir()
	cfg := bundle.Config{Version: 1, Cmdline: "console=hvc0 quiet", VCPUs: 2, MemoryMiB: 512, VCPUType: "EPYC-Milan"}
	raw, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{bundle.ConfigFile: raw, bundle.KernelFile: []byte("kernel"), bundle.InitrdFile: []byte("initrd")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b, err := bundle.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Compute(BundleInputs(b, tee.Sim))
	if err != nil {
		t.Fatal(err)
	}
	want, err := Compute(Inputs{Boot: &Boot{Kernel: []byte("kernel"), Initrd: []byte("initrd"), Cmdline: "console=hvc0 quiet"},
		VCPUs: 2, VCPUType: "EPYC-Milan", TEEs: []tee.TEE{"sim"}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Sim == "" || got.Sim != want.Sim {
		t.Fatalf("bundle sim %q, direct %q", got.Sim, want.Sim)
	}
	other, err := Compute(Inputs{Boot: &Boot{Kernel: []byte("kernel"), Initrd: []byte("initrd"), Cmdline: "console=hvc0 quiet"},
		VCPUs: 2, TEEs: []tee.TEE{"sim"}})
	if err != nil || other.Sim == got.Sim {
		t.Errorf("vCPU type from guest.json not used (%v)", err)
	}
}
