package ovmf

import (
	"os"
	"testing"
)

func addSeeds(f *testing.F) {
	f.Add([]byte{})
	f.Add(image(nil))
	f.Add(image(nil, entry(SEVESResetBlockGUID, u32(0xffffff00)), entry(SEVHashTableRVGUID, u32(0x80f400))))
	f.Add(tdvfImage(make([]byte, 4096), TDXSection{RawDataSize: 4096, MemoryAddress: 0xfffff000, MemoryDataSize: 4096, Attributes: TDXAttrMRExtend}))
	f.Add(sharedFixture(f, "ovmf_AmdSev_suffix.bin"))
	f.Add(sharedFixture(f, "ovmf_OvmfX64_suffix.bin"))
	// The tail of Debian's OVMF (where all the metadata lives), when installed.
	if code, err := os.ReadFile("/usr/share/OVMF/OVMF_CODE.fd"); err == nil && len(code) > 8192 {
		f.Add(code[len(code)-8192:])
	}
}

// FuzzParse: hostile firmware must never panic the footer-table and SEV-metadata parser.
func FuzzParse(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		fw, err := Parse(data)
		if err != nil {
			return
		}
		for _, s := range fw.SEVSections() {
			_ = s.Type.String()
		}
		_, _ = fw.SEVESResetEIP()
		_, _ = fw.SEVHashTableGPA()
	})
}

// FuzzTDXSections: hostile firmware must never panic the TDVF metadata parser, and every
// section it accepts must lie inside the image.
func FuzzTDXSections(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		fw, err := Parse(data)
		if err != nil {
			return
		}
		sections, err := fw.TDXSections()
		if err != nil {
			return
		}
		for _, s := range sections {
			b, err := fw.TDXSectionData(s)
			if err != nil || len(b) != int(s.RawDataSize) {
				t.Fatalf("accepted section %+v has no data in the %d-byte image: %v", s, len(data), err)
			}
		}
	})
}
