package kernel

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Patch is one source patch applied to the unpacked kernel source before it is configured
// (`patch -p1`, in order of Name).
type Patch struct {
	Name string
	Data []byte
}

// The patches kept in the repository, per architecture (patches/<arch>/*.patch). They are
// written against DefaultSourcePackage and applied only when building from it (docs/guest.md).
//
//go:embed patches
var patchFS embed.FS

// DefaultPatches returns the repository's patches for arch, sorted by name.
func DefaultPatches(arch Arch) ([]Patch, error) {
	dir := path.Join("patches", string(arch))
	ents, err := fs.ReadDir(patchFS, dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("kernel patches %s: %w", dir, err)
	}
	var out []Patch
	for _, e := range ents {
		if e.IsDir() || path.Ext(e.Name()) != ".patch" {
			continue
		}
		data, err := patchFS.ReadFile(path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("kernel patch %s: %w", e.Name(), err)
		}
		out = append(out, Patch{Name: e.Name(), Data: data})
	}
	slices.SortFunc(out, func(a, b Patch) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// PatchesSHA256 identifies a patch set: the SHA-256 over each patch's name and contents (""
// for none, so that a build without patches keeps its cache key).
func PatchesSHA256(ps []Patch) string {
	if len(ps) == 0 {
		return ""
	}
	h := sha256.New()
	for _, p := range ps {
		fmt.Fprintf(h, "%s\n%d\n", p.Name, len(p.Data))
		h.Write(p.Data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// applyPatches applies ps in order to the source tree src with `patch -p1 --forward --batch`;
// a patch that does not apply cleanly fails the build (no fuzz, no rejects left behind).
func applyPatches(run func(what, name string, args ...string) error, src, workDir string, ps []Patch) error {
	for _, p := range ps {
		if filepath.Base(p.Name) != p.Name || p.Name == "" {
			return fmt.Errorf("minimal kernel: patch name %q: want a plain file name", p.Name)
		}
		f := filepath.Join(workDir, p.Name)
		if err := os.WriteFile(f, p.Data, 0o644); err != nil {
			return fmt.Errorf("minimal kernel: %w", err)
		}
		if err := run("patch "+p.Name, "patch", "-p1", "--forward", "--batch", "--fuzz=0", "--no-backup-if-mismatch", "-r", "-", "-d", src, "-i", f); err != nil {
			return err
		}
	}
	return nil
}
