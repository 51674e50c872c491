package kernel

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// newc returns bytes that pass as a newc archive (the magic, a zero header, a trailer name)
// followed by marker, so that archives differ; the fake build only copies them.
func newc(marker string) []byte {
	hdr := "070701" + strings.Repeat("0", 104)
	return []byte(hdr + "TRAILER!!!" + marker)
}

const testCmdline = "console=ttyS0 quiet panic=-1 noinitrd"

// TestBuildBuiltin: the variant is derived from the kept tree without repeating the base's
// expensive step, has the initramfs and command line built in, leaves the base tree and the
// base kernel as they were, and the same inputs give the same bytes while another initramfs
// or command line gives other bytes.
func TestBuildBuiltin(t *testing.T) {
	o := fakeBuildOptions(t)
	ctx := testContext(t)
	base, err := BuildMinimal(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	baseConfig, err := os.ReadFile(filepath.Join(base.Dir, treeBuildDir, ".config"))
	if err != nil {
		t.Fatal(err)
	}
	a := Builtin{Initramfs: newc("A"), Cmdline: testCmdline}
	v1, err := BuildBuiltin(ctx, o, a)
	if err != nil {
		t.Fatal(err)
	}
	obj := filepath.Join(base.Dir, treeBuildDir)
	if n := fullBuilds(t, obj); n != 1 {
		t.Errorf("the variant rebuilt the base: full builds %d, want 1", n)
	}
	for _, want := range []string{
		`CONFIG_CMDLINE="` + testCmdline + `"`, "CONFIG_CMDLINE_BOOL=y", "CONFIG_CMDLINE_OVERRIDE=y",
		"CONFIG_INITRAMFS_COMPRESSION_NONE=y", `CONFIG_INITRAMFS_SOURCE="` + filepath.Join(obj, builtinInitramfsFile) + `"`,
	} {
		if !bytes.Contains(v1.Image, []byte(want+"\n")) || !bytes.Contains(v1.Config, []byte(want+"\n")) {
			t.Errorf("variant lacks %s", want)
		}
	}
	if !bytes.HasSuffix(v1.Image, a.Initramfs) {
		t.Errorf("variant image does not carry the initramfs")
	}
	if bytes.Contains(v1.Image, []byte("# CONFIG_CMDLINE_BOOL is not set")) {
		t.Errorf("the base's CMDLINE_BOOL line was kept next to the new one")
	}
	// The base is untouched: tree config, no saved copy or source left, cached kernel intact.
	after, err := os.ReadFile(filepath.Join(obj, ".config"))
	if err != nil || !bytes.Equal(after, baseConfig) {
		t.Errorf("base tree .config changed by the variant: %v", err)
	}
	for _, gone := range []string{baseSaveDir, treeSrcDir, baseSaveDir + ".tmp", filepath.Join(treeBuildDir, builtinInitramfsFile)} {
		if _, err := os.Stat(filepath.Join(base.Dir, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", gone, err)
		}
	}
	if _, err := openBuilt(base.Dir); err != nil {
		t.Errorf("base entry: %v", err)
	}
	v2, err := BuildBuiltin(ctx, o, a)
	if err != nil {
		t.Fatal(err)
	}
	if v2.BzImageSHA256 != v1.BzImageSHA256 || !bytes.Equal(v2.Image, v1.Image) {
		t.Errorf("same inputs, different bytes: %s vs %s", v1.BzImageSHA256, v2.BzImageSHA256)
	}
	for _, other := range []Builtin{
		{Initramfs: newc("B"), Cmdline: testCmdline},
		{Initramfs: a.Initramfs, Cmdline: testCmdline + " x=1"},
	} {
		v, err := BuildBuiltin(ctx, o, other)
		if err != nil {
			t.Fatal(err)
		}
		if v.BzImageSHA256 == v1.BzImageSHA256 {
			t.Errorf("%q: same bytes as another variant", other.Cmdline)
		}
	}
}

// TestBuildBuiltinRestoresInterrupted: a variant build that died left its changes in the tree
// and the saved pristine copy; the next build starts from the pristine copy.
func TestBuildBuiltinRestoresInterrupted(t *testing.T) {
	o := fakeBuildOptions(t)
	ctx := testContext(t)
	want, err := BuildBuiltin(ctx, o, Builtin{Initramfs: newc("A"), Cmdline: testCmdline})
	if err != nil {
		t.Fatal(err)
	}
	obj := filepath.Join(want.Base.Dir, treeBuildDir)
	if err := saveBase(ctx, obj, filepath.Join(want.Base.Dir, baseSaveDir)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(obj, ".config"), []byte("CONFIG_64BIT=y\nCONFIG_STALE=y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := BuildBuiltin(ctx, o, Builtin{Initramfs: newc("A"), Cmdline: testCmdline})
	if err != nil {
		t.Fatal(err)
	}
	if got.BzImageSHA256 != want.BzImageSHA256 {
		t.Fatalf("after an interrupted build: sha256 %s, want %s (built from the dirty tree)", got.BzImageSHA256, want.BzImageSHA256)
	}
}

// TestBuildBuiltinNeedsTree: a cache entry without a kept tree (built before trees were kept)
// is built again, with its tree, before a variant is derived.
func TestBuildBuiltinNeedsTree(t *testing.T) {
	o := fakeBuildOptions(t)
	ctx := testContext(t)
	base, err := BuildMinimal(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(base.Dir, treeBuildDir)); err != nil {
		t.Fatal(err)
	}
	v, err := BuildBuiltin(ctx, o, Builtin{Initramfs: newc("A"), Cmdline: testCmdline})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Base.HasTree() || fullBuilds(t, filepath.Join(base.Dir, treeBuildDir)) != 1 {
		t.Fatalf("base not rebuilt with its tree")
	}
}

func TestBuiltinValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    Builtin
		want error
	}{
		{"ok", Builtin{Initramfs: newc(""), Cmdline: testCmdline}, nil},
		{"no initramfs", Builtin{Cmdline: testCmdline}, ErrBuiltinInitramfs},
		{"compressed", Builtin{Initramfs: append([]byte{0x1f, 0x8b}, newc("")...), Cmdline: testCmdline}, ErrBuiltinInitramfs},
		{"too large", Builtin{Initramfs: append(newc(""), make([]byte, MaxBuiltinInitramfs)...), Cmdline: testCmdline}, ErrBuiltinInitramfs},
		{"empty cmdline", Builtin{Initramfs: newc("")}, ErrBuiltinCmdline},
		{"quote", Builtin{Initramfs: newc(""), Cmdline: `noinitrd x="y"`}, ErrBuiltinCmdline},
		{"backslash", Builtin{Initramfs: newc(""), Cmdline: `noinitrd x=\n`}, ErrBuiltinCmdline},
		{"newline", Builtin{Initramfs: newc(""), Cmdline: "noinitrd\nCONFIG_X=y"}, ErrBuiltinCmdline},
		{"no noinitrd", Builtin{Initramfs: newc(""), Cmdline: "console=ttyS0"}, ErrBuiltinCmdline},
		{"noinitrd as a value", Builtin{Initramfs: newc(""), Cmdline: "x=noinitrd"}, ErrBuiltinCmdline},
		{"too long", Builtin{Initramfs: newc(""), Cmdline: "noinitrd " + strings.Repeat("a", MaxBuiltinCmdline)}, ErrBuiltinCmdline},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.b.Validate()
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSetKconfig(t *testing.T) {
	in := "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x\"\n# comment\n"
	got := string(setKconfig([]byte(in), []KconfigOption{{Name: "CONFIG_B", Value: "y"}, {Name: "CONFIG_C", Value: `"y"`}, {Name: "CONFIG_D"}}))
	want := "CONFIG_A=y\n# comment\nCONFIG_B=y\nCONFIG_C=\"y\"\n# CONFIG_D is not set\n"
	if got != want {
		t.Fatalf("setKconfig:\n%s\nwant\n%s", got, want)
	}
}
