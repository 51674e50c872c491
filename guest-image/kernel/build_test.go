package kernel

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/internal/testdeps"
)

// goldenBuild is testdata/minimal-kernel.json: the inputs and the bzImage SHA-256 of a build on
// the development machine (2026-12-05, `mkguest kernel`), so that a build elsewhere from the
// same inputs is a second, independent build that must give the same bytes.
type goldenBuild struct {
	SourcePackage  string `json:"sourcePackage"`
	SourceVersion  string `json:"sourceVersion"`
	SourceSHA256   string `json:"sourceSHA256"`
	FragmentSHA256 string `json:"fragmentSHA256"`
	PatchesSHA256  string `json:"patchesSHA256"`
	Compiler       string `json:"compiler"`
	BzImageSHA256  string `json:"bzImageSHA256"`
}

// TestBuildMinimal builds the minimal kernel (or takes it from the cache that `make kernel`
// filled) and checks it: a bzImage with the Linux boot protocol header and an EFI stub
// (OVMF/TDVF boot it), the fragment fully applied, the repository's patches applied, and — when the inputs are those of the
// golden build — the same bytes as the golden build (reproducibility across machines).
func TestBuildMinimal(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the minimal kernel build")
	}
	if _, err := os.Stat(DefaultSourceTarball); err != nil {
		testdeps.Missing(t, "%s (Debian package %s; make deps installs it): %v", DefaultSourceTarball, DefaultSourcePackage, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	b, err := BuildMinimal(ctx, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(b.BzImagePath())
	if err != nil {
		t.Fatal(err)
	}
	// Boot protocol: "HdrS" at 0x202, protocol ≥ 2.12 (64-bit handover for the EFI stub);
	// "MZ" at 0 (the PE/COFF header of the EFI stub).
	if len(img) < 0x300 || string(img[0x202:0x206]) != "HdrS" || string(img[:2]) != "MZ" {
		t.Fatalf("%s is not a bzImage with an EFI stub", b.BzImagePath())
	}
	if v := binary.LittleEndian.Uint16(img[0x206:]); v < 0x020c {
		t.Errorf("boot protocol %#x, want >= 0x20c", v)
	}
	// LZ4 (decompressed 0.15 s sooner than gzip under TCG), -O2 (no byte-at-a-time inline
	// copies under TCG) and the guessing unwinder (no ORC tables) make it 4.4 MiB; with the
	// agent's 7 MB initrd the bundle stays far under issue 18's 14.8 MB.
	if len(img) > 5<<20 {
		t.Errorf("bzImage is %d bytes: the minimal kernel should stay under 5 MiB", len(img))
	}
	final, err := os.ReadFile(b.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	if bad, err := CheckKconfig(MinimalConfig, final); err != nil || len(bad) > 0 {
		t.Fatalf("config: %v %q", err, bad)
	}
	if ps, _ := DefaultPatches(ArchX86_64); b.PatchesSHA256 != PatchesSHA256(ps) || len(b.Patches) != len(ps) {
		t.Errorf("patches %v (sha256 %s), want the repository's %d", b.Patches, b.PatchesSHA256, len(ps))
	}
	if !strings.HasSuffix(b.Release, "-sealpod") {
		t.Errorf("release %q, want the -sealpod local version", b.Release)
	}
	t.Logf("%s: %d bytes, sha256 %s", b.Describe(), len(img), b.BzImageSHA256)

	data, err := os.ReadFile(filepath.Join("testdata", "minimal-kernel.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g goldenBuild
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	same := g.SourceSHA256 == b.SourceSHA256 && g.FragmentSHA256 == b.FragmentSHA256 && g.PatchesSHA256 == b.PatchesSHA256 && g.Compiler == b.Compiler
	if !same {
		// Debian published a new linux-source-6.1 or gcc, or the fragment changed: nothing to
		// compare with until testdata/minimal-kernel.json is refreshed (docs/guest.md).
		t.Logf("inputs differ from the golden build (%s %s, %s): reproducibility not compared; refresh testdata/minimal-kernel.json",
			g.SourcePackage, g.SourceVersion, g.Compiler)
		return
	}
	if b.BzImageSHA256 != g.BzImageSHA256 {
		t.Fatalf("bzImage sha256 %s, the golden build of the same inputs gave %s: the build is not reproducible", b.BzImageSHA256, g.BzImageSHA256)
	}
}

// TestOpenBuilt: a cache entry is used only when complete and intact.
func TestOpenBuilt(t *testing.T) {
	dir := t.TempDir()
	if _, err := openBuilt(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty dir: %v", err)
	}
	img := []byte("bzImage bytes")
	meta := []byte(`{"key":"k","bzImageSHA256":"` + sha256Hex(img) + `","release":"6.1.192-sealpod"}`)
	if err := os.WriteFile(filepath.Join(dir, "bzImage"), img, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, builtFile), meta, 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := openBuilt(dir)
	if err != nil || b.Release != "6.1.192-sealpod" || b.Dir != dir {
		t.Fatalf("intact entry: %+v, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bzImage"), bytes.ToUpper(img), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := openBuilt(dir); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("changed bzImage: %v", err)
	}
}
