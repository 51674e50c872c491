package kernel

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// Tree is an unpacked kernel package.
type Tree struct {
	// Root is the directory the package was unpacked into.
	Root string
	// Package is where the tree came from.
	Package Package
	// Release is the kernel release (`uname -r`), e.g. 6.1.0-56-amd64.
	Release string
}

var releaseRE = regexp.MustCompile(`^[0-9]+\.[0-9]+[0-9A-Za-z.+_-]*$`)

// OpenTree inspects an unpacked linux-image package: exactly one lib/modules/<release>
// directory and the matching boot/vmlinuz-<release>.
func OpenTree(root string, p Package) (*Tree, error) {
	ents, err := os.ReadDir(filepath.Join(root, "lib", "modules"))
	if err != nil {
		return nil, fmt.Errorf("kernel tree %s: %w", root, err)
	}
	var rels []string
	for _, e := range ents {
		if e.IsDir() {
			rels = append(rels, e.Name())
		}
	}
	if len(rels) != 1 {
		return nil, fmt.Errorf("kernel tree %s: lib/modules: want exactly one release directory, found %q", root, rels)
	}
	if !releaseRE.MatchString(rels[0]) {
		return nil, fmt.Errorf("kernel tree %s: lib/modules/%s: not a kernel release", root, rels[0])
	}
	t := &Tree{Root: root, Package: p, Release: rels[0]}
	if _, err := os.Stat(t.KernelPath()); err != nil {
		return nil, fmt.Errorf("kernel tree %s: %w", root, err)
	}
	return t, nil
}

// KernelPath is boot/vmlinuz-<release>.
func (t *Tree) KernelPath() string {
	return filepath.Join(t.Root, "boot", "vmlinuz-"+t.Release)
}

// ConfigPath is boot/config-<release>.
func (t *Tree) ConfigPath() string {
	return filepath.Join(t.Root, "boot", "config-"+t.Release)
}

// ModulesDir is lib/modules/<release>.
func (t *Tree) ModulesDir() string {
	return filepath.Join(t.Root, "lib", "modules", t.Release)
}
