package kernel

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/guest-image/kernel/fakesource"
)

// fakeBuildOptions returns options that build the fake source (package fakesource: a stand-in
// kernel source whose Makefile has the targets the build runs) into a fresh cache, in a second.
func fakeBuildOptions(t *testing.T) BuildOptions {
	t.Helper()
	return BuildOptions{
		Tarball:  fakesource.Tarball(t, nil),
		Fragment: []byte("CONFIG_64BIT=y\nCONFIG_LOCALVERSION=\"-sealpod\"\n"),
		CacheDir: t.TempDir(),
		Jobs:     1,
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// fullBuilds counts how often the fake source's expensive step ran in a build tree.
func fullBuilds(t *testing.T, obj string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(obj, "full-builds"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "full\n")
}

// TestBuildKeepsTree: the cache entry keeps the O= build tree (so variants relink from it),
// drops the 1.5 GB source, records the tree in kernel.json, and a second call reuses the entry.
func TestBuildKeepsTree(t *testing.T) {
	o := fakeBuildOptions(t)
	ctx := testContext(t)
	b, err := BuildMinimal(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if !b.HasTree() {
		t.Fatalf("entry %s: the build tree was not kept", b.Dir)
	}
	obj := filepath.Join(b.Dir, treeBuildDir)
	if n := fullBuilds(t, obj); n != 1 {
		t.Fatalf("full builds: %d, want 1", n)
	}
	if _, err := os.Stat(filepath.Join(b.Dir, treeSrcDir)); !os.IsNotExist(err) {
		t.Errorf("the unpacked source is still in the entry: %v", err)
	}
	img, err := os.ReadFile(b.BzImagePath())
	if err != nil {
		t.Fatal(err)
	}
	built, err := os.ReadFile(filepath.Join(obj, "arch/x86/boot/bzImage"))
	if err != nil || string(img) != string(built) {
		t.Fatalf("bzImage differs from the tree's: %v", err)
	}
	again, err := BuildMinimal(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if again.Dir != b.Dir || !again.Tree || again.BzImageSHA256 != b.BzImageSHA256 {
		t.Fatalf("second call: %+v, want the cached entry %+v", again, b)
	}
	if n := fullBuilds(t, obj); n != 1 {
		t.Fatalf("second call rebuilt: full builds %d", n)
	}
	// An entry without its tree serves BuildMinimal as it is, and is rebuilt with NeedTree.
	if err := os.RemoveAll(obj); err != nil {
		t.Fatal(err)
	}
	if old, err := BuildMinimal(ctx, o); err != nil || old.HasTree() {
		t.Fatalf("entry without tree: %+v, %v", old, err)
	}
	o.NeedTree = true
	if b, err = BuildMinimal(ctx, o); err != nil || !b.HasTree() {
		t.Fatalf("NeedTree: %+v, %v", b, err)
	}
}

// TestHasTree: an entry from before the tree was kept (or whose tree is gone) has none.
func TestHasTree(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		tree   bool
		config bool
		want   bool
	}{
		{"old entry", false, false, false},
		{"recorded but removed", true, false, false},
		{"not recorded", false, true, false},
		{"kept", true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.MkdirAll(filepath.Join(d, treeBuildDir), 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.config {
				if err := os.WriteFile(filepath.Join(d, treeBuildDir, ".config"), []byte("CONFIG_64BIT=y\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			b := &Built{Dir: d, Tree: tc.tree}
			if got := b.HasTree(); got != tc.want {
				t.Fatalf("HasTree = %v, want %v", got, tc.want)
			}
		})
	}
}
