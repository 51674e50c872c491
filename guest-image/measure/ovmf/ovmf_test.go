package ovmf

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"

	"github.com/sealpod/sealpod/internal/repopath"
	"github.com/sealpod/sealpod/internal/testdeps"
)

func sharedFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(repopath.Shared(t, "snp-measure", name))
	if err != nil {
		t.Fatalf("shared fixture: %v", err)
	}
	return b
}

func TestGUIDRoundTrip(t *testing.T) {
	for _, s := range []string{"96b582de-1fb2-45f7-baea-a366c55a082d", "e47a6535-984a-4798-865e-4685a7bf8ec2"} {
		g, err := ParseGUID(s)
		if err != nil {
			t.Fatal(err)
		}
		if g.String() != s {
			t.Errorf("round trip %s -> %s", s, g)
		}
	}
	// The in-memory encoding of the footer GUID starts with the little-endian first group.
	if FooterTableGUID[0] != 0xde || FooterTableGUID[3] != 0x96 || FooterTableGUID[8] != 0xba {
		t.Errorf("footer GUID encoding %x", FooterTableGUID[:])
	}
	for _, bad := range []string{"", "96b582de1fb245f7baeaa366c55a082d", "zzb582de-1fb2-45f7-baea-a366c55a082d"} {
		if _, err := ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) accepted", bad)
		}
	}
}

// TestSharedFixtures parses the two virtee/sev-snp-measure firmware suffixes.
func TestSharedFixtures(t *testing.T) {
	tests := []struct {
		file        string
		wantHashes  bool
		wantHashGPA bool
	}{
		{"ovmf_AmdSev_suffix.bin", true, true},
		{"ovmf_OvmfX64_suffix.bin", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			fw, err := Parse(sharedFixture(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if !fw.HasFooterTable() {
				t.Fatal("no footer table")
			}
			if len(fw.SEVSections()) == 0 {
				t.Fatal("no SEV metadata")
			}
			if got := fw.HasSEVSection(SNPKernelHashes); got != tc.wantHashes {
				t.Errorf("HasSEVSection(SNP_KERNEL_HASHES) = %v, want %v", got, tc.wantHashes)
			}
			if !fw.HasSEVSection(SNPSecrets) || !fw.HasSEVSection(SNPCPUID) {
				t.Errorf("sections %v lack SECRETS or CPUID", fw.SEVSections())
			}
			eip, err := fw.SEVESResetEIP()
			if err != nil || eip == 0 {
				t.Errorf("SEVESResetEIP = %#x, %v", eip, err)
			}
			if tc.wantHashGPA {
				gpa, err := fw.SEVHashTableGPA()
				if err != nil || gpa == 0 {
					t.Errorf("SEVHashTableGPA = %#x, %v", gpa, err)
				}
			}
			if fw.GPA() != FourGiB-4096 {
				t.Errorf("GPA = %#x", fw.GPA())
			}
		})
	}
}

// TestDebianOVMF parses Debian's OVMF (apt-get install ovmf): SEV metadata without a kernel-
// hashes section, and TDX metadata that only fits the unified VARS+CODE image.
func TestDebianOVMF(t *testing.T) {
	code, err := os.ReadFile("/usr/share/OVMF/OVMF_CODE.fd")
	if err != nil {
		testdeps.Missing(t, "Debian ovmf package not installed (apt-get install -y ovmf): %v", err)
	}
	vars, err := os.ReadFile("/usr/share/OVMF/OVMF_VARS.fd")
	if err != nil {
		testdeps.Missing(t, "Debian ovmf package not installed: %v", err)
	}
	fw, err := Parse(code)
	if err != nil {
		t.Fatal(err)
	}
	if len(fw.SEVSections()) == 0 || fw.HasSEVSection(SNPKernelHashes) {
		t.Errorf("sections %v: want SEV metadata without SNP_KERNEL_HASHES", fw.SEVSections())
	}
	if !fw.HasTDXMetadata() {
		t.Fatal("no TDX metadata pointer")
	}
	if _, err := fw.TDXSections(); !errors.Is(err, ErrMalformed) {
		t.Errorf("TDXSections(CODE only) = %v, want ErrMalformed (data outside the image)", err)
	}
	unified, err := Parse(append(append([]byte{}, vars...), code...))
	if err != nil {
		t.Fatal(err)
	}
	sections, err := unified.TDXSections()
	if err != nil {
		t.Fatal(err)
	}
	var bfv, cfv, hob bool
	for _, s := range sections {
		switch s.Type {
		case TDXBFV:
			bfv = s.Attributes&TDXAttrMRExtend != 0 && s.MemoryAddress+s.MemoryDataSize == FourGiB
		case TDXCFV:
			cfv = true
		case TDXTDHOB:
			hob = s.Attributes == 0
		}
	}
	if !bfv || !cfv || !hob {
		t.Errorf("sections %+v: want measured BFV ending at 4 GiB, CFV, unmeasured TD_HOB", sections)
	}
}

// image builds a firmware image with the given footer table entries (data, guid) and extra
// bytes at the start; entries are laid out in order, the footer last.
func image(prefix []byte, entries ...[]byte) []byte {
	var table []byte
	for _, e := range entries {
		table = append(table, e...)
	}
	footer := make([]byte, 18)
	binary.LittleEndian.PutUint16(footer, uint16(len(table)+18))
	copy(footer[2:], FooterTableGUID[:])
	out := append(append(append([]byte{}, prefix...), table...), footer...)
	return append(out, make([]byte, 32)...)
}

func entry(g GUID, data []byte) []byte {
	hdr := make([]byte, 2)
	binary.LittleEndian.PutUint16(hdr, uint16(len(data)+18))
	return append(append(append([]byte{}, data...), hdr...), g[:]...)
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func TestMalformed(t *testing.T) {
	okMeta := func(count uint32, size uint32) []byte {
		b := []byte("ASEV")
		b = append(b, u32(size)...)
		b = append(b, u32(1)...)
		b = append(b, u32(count)...)
		return b
	}
	tests := map[string][]byte{
		"footer size below header": func() []byte {
			b := image(nil)
			binary.LittleEndian.PutUint16(b[len(b)-50:], 3)
			return b
		}(),
		"footer size beyond image": func() []byte {
			b := image(nil)
			binary.LittleEndian.PutUint16(b[len(b)-50:], 0xffff)
			return b
		}(),
		"entry size zero":                  image(nil, []byte{0, 0}, FooterTableGUID[:]),
		"duplicate entry":                  image(nil, entry(SEVESResetBlockGUID, u32(1)), entry(SEVESResetBlockGUID, u32(2))),
		"sev metadata offset beyond image": image(nil, entry(SEVMetadataGUID, u32(1<<20))),
		"sev metadata bad signature": func() []byte {
			meta := append([]byte("XXXX"), make([]byte, 12)...)
			return image(meta, entry(SEVMetadataGUID, u32(uint32(len(meta)+22+18+32))))
		}(),
		"sev metadata too many sections": func() []byte {
			meta := okMeta(1000, 16)
			return image(meta, entry(SEVMetadataGUID, u32(uint32(len(meta)+22+18+32))))
		}(),
		"sev metadata unknown section type": func() []byte {
			meta := append(okMeta(1, 28), append(append(u32(0x800000), u32(4096)...), u32(9)...)...)
			return image(meta, entry(SEVMetadataGUID, u32(uint32(len(meta)+22+18+32))))
		}(),
		"short sev metadata entry": image(nil, entry(SEVMetadataGUID, []byte{1, 2})),
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(data); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestNoTable(t *testing.T) {
	for name, data := range map[string][]byte{"empty": nil, "tiny": make([]byte, 10), "zeros": make([]byte, 8192)} {
		fw, err := Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fw.HasFooterTable() || len(fw.SEVSections()) != 0 || fw.HasTDXMetadata() {
			t.Errorf("%s: found metadata in an image without a table", name)
		}
		if _, err := fw.SEVESResetEIP(); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: SEVESResetEIP = %v, want ErrNotFound", name, err)
		}
		if _, err := fw.TDXSections(); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: TDXSections = %v, want ErrNotFound", name, err)
		}
	}
}

// tdvfImage builds an image whose footer points at a TDVF descriptor with the given sections.
func tdvfImage(prefix []byte, sections ...TDXSection) []byte {
	meta := []byte("TDVF")
	meta = append(meta, u32(uint32(16+32*len(sections)))...)
	meta = append(meta, u32(1)...)
	meta = append(meta, u32(uint32(len(sections)))...)
	for _, s := range sections {
		meta = append(meta, u32(s.DataOffset)...)
		meta = append(meta, u32(s.RawDataSize)...)
		meta = binary.LittleEndian.AppendUint64(meta, s.MemoryAddress)
		meta = binary.LittleEndian.AppendUint64(meta, s.MemoryDataSize)
		meta = append(meta, u32(uint32(s.Type))...)
		meta = append(meta, u32(s.Attributes)...)
	}
	body := append(append([]byte{}, prefix...), meta...)
	return image(body, entry(TDXMetadataGUID, u32(uint32(len(meta)+22+18+32))))
}

// TestTDXSections checks that the TDVF parser accepts a well-formed descriptor and rejects each
// kind of inconsistent section.
func TestTDXSections(t *testing.T) {
	data := make([]byte, 8192)
	good := TDXSection{DataOffset: 0, RawDataSize: 8192, MemoryAddress: 0xfff00000, MemoryDataSize: 8192, Type: TDXBFV, Attributes: TDXAttrMRExtend}
	fw, err := Parse(tdvfImage(data, good, TDXSection{MemoryAddress: 0x800000, MemoryDataSize: 4096, Type: TDXTDHOB}))
	if err != nil {
		t.Fatal(err)
	}
	s, err := fw.TDXSections()
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 2 || s[0] != good || s[1].Type != TDXTDHOB {
		t.Fatalf("sections %+v", s)
	}
	bad := map[string]TDXSection{
		"data beyond image":  {DataOffset: 0, RawDataSize: 1 << 30, MemoryAddress: 0, MemoryDataSize: 1 << 30, Type: TDXBFV},
		"unaligned address":  {MemoryAddress: 0x800001, MemoryDataSize: 4096, Type: TDXTempMem},
		"unaligned size":     {MemoryAddress: 0x800000, MemoryDataSize: 100, Type: TDXTempMem},
		"raw exceeds memory": {RawDataSize: 8192, MemoryAddress: 0x800000, MemoryDataSize: 4096, Type: TDXCFV},
		"measured raw short": {RawDataSize: 4096, MemoryAddress: 0x800000, MemoryDataSize: 8192, Type: TDXBFV, Attributes: TDXAttrMRExtend},
		"extend and aug":     {RawDataSize: 4096, MemoryAddress: 0x800000, MemoryDataSize: 4096, Type: TDXBFV, Attributes: TDXAttrMRExtend | TDXAttrPageAug},
		"unknown type":       {MemoryAddress: 0x800000, MemoryDataSize: 4096, Type: 42},
		"wraps":              {MemoryAddress: 0xfffffffffffff000, MemoryDataSize: 0x2000, Type: TDXTempMem},
		"too many pages":     {MemoryAddress: 0, MemoryDataSize: (MaxTDXPages + 1) * PageSize, Type: TDXPermMem, Attributes: TDXAttrPageAug},
	}
	for name, sec := range bad {
		t.Run(name, func(t *testing.T) {
			fw, err := Parse(tdvfImage(data, sec))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fw.TDXSections(); !errors.Is(err, ErrMalformed) {
				t.Fatalf("TDXSections = %v, want ErrMalformed", err)
			}
		})
	}
}
