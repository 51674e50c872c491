package snp

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sealpod/sealpod/guest-image/measure/ovmf"
)

// FuzzLaunchDigest: whatever firmware bytes the parser accepts, the digest computation (metadata
// sections, hashes-table address, AP reset vector) must return a digest or an error, never panic.
func FuzzLaunchDigest(f *testing.F) {
	dir := sharedDir(f)
	for _, name := range []string{"ovmf_AmdSev_suffix.bin", "ovmf_OvmfX64_suffix.bin"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(2), true)
	}
	f.Add(make([]byte, 4096), uint8(1), false)
	f.Fuzz(func(t *testing.T, data []byte, vcpus uint8, kernel bool) {
		fw, err := ovmf.Parse(data)
		if err != nil {
			return
		}
		p := Params{Firmware: fw, VCPUs: int(vcpus%8) + 1, VCPUSig: 0x00800f12, GuestFeatures: 1}
		if kernel {
			h := HashBoot([]byte("k"), []byte("i"), "c")
			p.Boot = &h
		}
		_, _ = LaunchDigest(p)
		_, _ = SimLaunchDigest(p)
	})
}
