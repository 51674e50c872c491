package kernel

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/guest-image/kernel/fakesource"
)

// TestDefaultPatches: the x86_64 guest kernel carries the repository's patches in name order,
// each a unified diff against the source's top directory; ppc64le carries none (its cache key
// stays that of before patches existed).
func TestDefaultPatches(t *testing.T) {
	x86, err := DefaultPatches(ArchX86_64)
	if err != nil || len(x86) == 0 {
		t.Fatalf("x86_64 patches: %d, %v", len(x86), err)
	}
	for i, p := range x86 {
		if i > 0 && x86[i-1].Name >= p.Name {
			t.Errorf("patches out of order: %s before %s", x86[i-1].Name, p.Name)
		}
		if !bytes.Contains(p.Data, []byte("\n--- a/")) || !bytes.Contains(p.Data, []byte("\n+++ b/")) {
			t.Errorf("%s: not a -p1 unified diff", p.Name)
		}
	}
	ppc, err := DefaultPatches(ArchPPC64LE)
	if err != nil || len(ppc) != 0 {
		t.Fatalf("ppc64le patches: %d, %v", len(ppc), err)
	}
	if PatchesSHA256(nil) != "" || PatchesSHA256(x86) == "" {
		t.Error("PatchesSHA256: want \"\" for none, a digest for some")
	}
	renamed := []Patch{{Name: "x" + x86[0].Name, Data: x86[0].Data}}
	if PatchesSHA256(renamed) == PatchesSHA256(x86[:1]) {
		t.Error("PatchesSHA256 ignores the patch name")
	}
}

// TestPatchesInKey: patches change the cache key, a tarball other than the default source
// gets none by default, and the same patches give the same key.
func TestPatchesInKey(t *testing.T) {
	tarball := fakesource.Tarball(t, nil)
	ctx := testContext(t)
	plain := BuildOptions{Tarball: tarball}
	if err := plain.defaults(); err != nil {
		t.Fatal(err)
	}
	if plain.Patches != nil {
		t.Fatalf("another tarball got the default patches: %v", plain.Patches)
	}
	ps := []Patch{{Name: "0001-a.patch", Data: []byte("--- a/x\n+++ b/x\n")}}
	keys := map[string]string{}
	for name, o := range map[string]BuildOptions{"plain": plain, "patched": {Tarball: tarball, Patches: ps}, "again": {Tarball: tarball, Patches: ps}} {
		if err := o.defaults(); err != nil {
			t.Fatal(err)
		}
		b, err := o.identify(ctx)
		if err != nil {
			t.Fatal(err)
		}
		keys[name] = b.Key
		if name != "plain" && (b.PatchesSHA256 != PatchesSHA256(ps) || len(b.Patches) != 1 || !strings.Contains(b.Describe(), "1 patches")) {
			t.Errorf("%s: %+v, %s", name, b, b.Describe())
		}
	}
	if keys["plain"] == keys["patched"] || keys["patched"] != keys["again"] {
		t.Fatalf("keys %v", keys)
	}
}

// TestApplyPatches: a patch that applies changes the tree; one that does not fails with its
// name and leaves no reject or backup files behind.
func TestApplyPatches(t *testing.T) {
	if _, err := exec.LookPath("patch"); err != nil {
		t.Fatalf("patch(1) not installed (Debian package patch; make deps): %v", err)
	}
	src, work := t.TempDir(), t.TempDir()
	f := filepath.Join(src, "mm", "init.c")
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, []byte("a\npoison();\nc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	run := func(what, name string, args ...string) error {
		cmd := exec.Command(name, args...)
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Run(); err != nil {
			return &os.PathError{Op: what, Path: name, Err: err}
		}
		return nil
	}
	good := Patch{Name: "0001-good.patch", Data: []byte("A description.\n\n--- a/mm/init.c\n+++ b/mm/init.c\n@@ -1,3 +1,3 @@\n a\n-poison();\n+nothing();\n c\n")}
	if err := applyPatches(run, src, work, []Patch{good}); err != nil {
		t.Fatalf("apply: %v\n%s", err, log.String())
	}
	if got, _ := os.ReadFile(f); string(got) != "a\nnothing();\nc\n" {
		t.Fatalf("patched file %q", got)
	}
	bad := Patch{Name: "0002-stale.patch", Data: []byte("--- a/mm/init.c\n+++ b/mm/init.c\n@@ -1,3 +1,3 @@\n a\n-poison();\n+other();\n c\n")}
	err := applyPatches(run, src, work, []Patch{bad})
	if err == nil || !strings.Contains(err.Error(), "0002-stale.patch") {
		t.Fatalf("stale patch: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(src, "mm", "*"))
	if len(left) != 1 {
		t.Fatalf("files left next to the patched one: %v", left)
	}
	if err := applyPatches(run, src, work, []Patch{{Name: "../escape.patch", Data: good.Data}}); err == nil {
		t.Fatal("a patch name with a path was taken")
	}
}
