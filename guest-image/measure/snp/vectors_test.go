package snp

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/sealpod/sealpod/internal/repopath"

	"github.com/sealpod/sealpod/guest-image/measure/ovmf"
)

// sharedDir returns ../shared/testdata/snp-measure relative to the module root.
// sharedDir returns ../shared/testdata/snp-measure.
func sharedDir(t testing.TB) string { return repopath.Shared(t, "snp-measure") }

type vector struct {
	Name          string  `json:"name"`
	Mode          string  `json:"mode"`
	VCPUs         int     `json:"vcpus"`
	VCPUSig       *string `json:"vcpu_sig"`
	Firmware      string  `json:"firmware"`
	Kernel        *string `json:"kernel"`
	Initrd        *string `json:"initrd"`
	Cmdline       *string `json:"cmdline"`
	GuestFeatures string  `json:"guest_features"`
	VMM           string  `json:"vmm"`
	Expected      *string `json:"expected"`
	SNPOVMFHash   string  `json:"snp_ovmf_hash"`
}

func loadVectors(t testing.TB) (string, []vector) {
	dir := sharedDir(t)
	raw, err := os.ReadFile(filepath.Join(dir, "vectors.json"))
	if err != nil {
		t.Fatalf("read shared vectors: %v", err)
	}
	var doc struct {
		Vectors []vector `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("vectors.json: %v", err)
	}
	if len(doc.Vectors) == 0 {
		t.Fatal("vectors.json: no vectors")
	}
	return dir, doc.Vectors
}

func (v vector) params(t *testing.T, dir string) Params {
	t.Helper()
	if v.Mode != "snp" {
		t.Fatalf("mode %q not supported", v.Mode)
	}
	data, err := os.ReadFile(filepath.Join(dir, v.Firmware))
	if err != nil {
		t.Fatal(err)
	}
	fw, err := ovmf.Parse(data)
	if err != nil {
		t.Fatalf("parse %s: %v", v.Firmware, err)
	}
	vmm, err := ParseVMM(v.VMM)
	if err != nil {
		t.Fatal(err)
	}
	feat, err := strconv.ParseUint(v.GuestFeatures, 0, 64)
	if err != nil {
		t.Fatalf("guest_features: %v", err)
	}
	p := Params{Firmware: fw, VCPUs: v.VCPUs, GuestFeatures: feat, VMM: vmm}
	if v.VCPUSig != nil {
		sig, err := ParseVCPUType(*v.VCPUSig)
		if err != nil {
			t.Fatal(err)
		}
		p.VCPUSig = sig
	}
	if v.SNPOVMFHash != "" {
		b, err := hex.DecodeString(v.SNPOVMFHash)
		if err != nil || len(b) != DigestSize {
			t.Fatalf("snp_ovmf_hash: bad hex (%v)", err)
		}
		p.FirmwareDigest = (*[DigestSize]byte)(b)
	}
	if v.Kernel != nil {
		if *v.Kernel != "empty" || (v.Initrd != nil && *v.Initrd != "empty") {
			t.Fatalf("only empty kernel/initrd files are used by the vectors")
		}
		cmdline := ""
		if v.Cmdline != nil {
			cmdline = *v.Cmdline
		}
		h := HashBoot(nil, nil, cmdline)
		p.Boot = &h
	}
	return p
}

// TestVectors reproduces every vector of the shared virtee/sev-snp-measure suite.
func TestVectors(t *testing.T) {
	dir, vectors := loadVectors(t)
	for _, v := range vectors {
		t.Run(v.Name, func(t *testing.T) {
			p := v.params(t, dir)
			got, err := LaunchDigest(p)
			if v.Expected == nil {
				if !errors.Is(err, ErrNoKernelHashes) {
					t.Fatalf("LaunchDigest = %x, %v; want ErrNoKernelHashes", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("LaunchDigest: %v", err)
			}
			if hex.EncodeToString(got[:]) != *v.Expected {
				t.Fatalf("digest %x\nwant   %s", got, *v.Expected)
			}
		})
	}
}

// TestFirmwareDigestMatchesVector checks that the precomputed firmware digest the vectors carry
// is what FirmwareDigest computes from the 4 KiB firmware placed to end at 4 GiB, so seeding
// with it and measuring the pages directly are the same computation.
func TestFirmwareDigestMatchesVector(t *testing.T) {
	dir, vectors := loadVectors(t)
	checked := 0
	for _, v := range vectors {
		if v.SNPOVMFHash == "" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, v.Firmware))
		if err != nil {
			t.Fatal(err)
		}
		fw, err := ovmf.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		got, err := FirmwareDigest(fw)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(got[:]) != v.SNPOVMFHash {
			t.Fatalf("%s: firmware digest %x, want %s", v.Name, got, v.SNPOVMFHash)
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no vector carries snp_ovmf_hash")
	}
}
