// Package fakesource gives tests a stand-in kernel source tarball for the minimal-kernel build
// (package kernel: BuildMinimal, BuildBuiltin): a Makefile with the targets the build runs
// (tinyconfig, olddefconfig, bzImage, kernelrelease) and a merge_config.sh, so that the cache,
// the kept build tree and the built-in variant are tested in seconds. Only tests import it.
package fakesource

import (
	_ "embed"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var (
	//go:embed tree/Makefile
	makefile []byte
	//go:embed tree/merge_config.sh
	mergeConfig []byte
	//go:embed tree/tiny-base.config
	tinyBase []byte
)

// Tarball writes the fake source as a .tar.xz and returns its path. The "bzImage" it builds is
// template (when not nil, e.g. a synthetic EFI-stub bzImage that the measurement code parses)
// followed by the .config and the built-in initramfs; without a template it starts with "MZ".
// It skips the test when make, tar, xz or gcc (the build asks gcc --version) is missing. The
// ppc64le build's "vmlinux" is template followed by the .config and the ARCH and CROSS_COMPILE
// make saw (tree/Makefile).
func Tarball(t testing.TB, template []byte) string {
	t.Helper()
	for _, tool := range []string{"make", "tar", "xz", "gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s: %v", tool, err)
		}
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "linux-fake")
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"Makefile", makefile, 0o644},
		{"scripts/kconfig/merge_config.sh", mergeConfig, 0o755},
		{"kernel/configs/tiny-base.config", tinyBase, 0o644},
	}
	if template != nil {
		files = append(files, struct {
			name string
			data []byte
			mode os.FileMode
		}{"template.bin", template, 0o644})
	}
	for _, f := range files {
		p := filepath.Join(root, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	tarball := filepath.Join(dir, "linux-fake.tar.xz")
	if out, err := exec.Command("tar", "-cJf", tarball, "-C", dir, "linux-fake").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	return tarball
}
