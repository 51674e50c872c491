package measure

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/sealpod/sealpod/guest-image/measure/internal/testkernel"
	"github.com/sealpod/sealpod/guest-image/measure/tdx"
	"github.com/sealpod/sealpod/internal/repopath"
)

// tdxBootsGolden is the broker's test input for "a quote of another kernel or initrd is
// refused" (kbs/verify/tdx TestVerifyTDXBoots); the broker may not import guest code, so the
// values travel as a golden file that this test recomputes.
const tdxBootsGolden = "kbs/verify/tdx/testdata/rtmr-boots.json"

type tdxBoot struct {
	Note  string `json:"note"`
	RTMR1 string `json:"rtmr1"`
	RTMR2 string `json:"rtmr2"`
}

type tdxBootsFile struct {
	Source string             `json:"source"`
	Boots  map[string]tdxBoot `json:"boots"`
}

func computeTDXBoots(t *testing.T) tdxBootsFile {
	t.Helper()
	k61 := testkernel.BzImage("6.1.0-sealpod", 0x4000, true)
	k61b := bytes.Clone(k61)
	k61b[0x3000] ^= 1 // another built-in initramfs is another kernel image
	k612 := testkernel.BzImage("6.12.1", 0x4000, true)
	boots := map[string]struct {
		note   string
		boot   Boot
		header string
	}{
		"builtin":         {"6.1 EFI-stub kernel, initramfs and cmdline built in, QEMU-patched header", Boot{Kernel: k61, Cmdline: "console=hvc0"}, "qemu"},
		"builtin-other":   {"the same with one byte of the built-in initramfs changed", Boot{Kernel: k61b, Cmdline: "console=hvc0"}, "qemu"},
		"separate-initrd": {"6.12 EFI-stub kernel with a separate initrd, unmodified header", Boot{Kernel: k612, Initrd: []byte("initrd-a"), Cmdline: "console=hvc0"}, "unmodified"},
		"other-initrd":    {"the same with another initrd", Boot{Kernel: k612, Initrd: []byte("initrd-b"), Cmdline: "console=hvc0"}, "unmodified"},
	}
	out := tdxBootsFile{Source: "guest-image/measure TestTDXBootsGolden (tdxBootRTMRs, which measure.Compute uses, on testkernel images; SEALPOD_UPDATE_GOLDEN=1 rewrites)", Boots: map[string]tdxBoot{}}
	for name, b := range boots {
		hdr, err := tdx.ParseKernelHeader(b.header)
		if err != nil {
			t.Fatal(err)
		}
		boot := b.boot
		r1, r2, err := tdxBootRTMRs(&boot, hdr) // what Compute puts into RTMRs[1] and [2]
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out.Boots[name] = tdxBoot{Note: b.note, RTMR1: hex.EncodeToString(r1[:]), RTMR2: hex.EncodeToString(r2[:])}
	}
	return out
}

// TestTDXBootsGolden keeps the broker's golden RTMR values equal to what guest-image computes.
func TestTDXBootsGolden(t *testing.T) {
	got := computeTDXBoots(t)
	raw, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	raw = append(raw, '\n')
	path := filepath.Join(repopath.Root(t), tdxBootsGolden)
	if os.Getenv("SEALPOD_UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(path, raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, want) {
		t.Fatalf("%s is stale (SEALPOD_UPDATE_GOLDEN=1 go test -run TestTDXBootsGolden ./guest-image/measure/ rewrites it):\n%s", tdxBootsGolden, raw)
	}
}
