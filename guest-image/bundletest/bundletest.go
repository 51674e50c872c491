// Package bundletest writes small stand-in guest bundles (guest-image builds guest bundles;
// imagebuilder/bundle owns their format) for components that only carry
// the guest (sealing, image building, the demo before a real guest is built): the kernel
// and initrd are short text files that boot nothing, but the measurements are computed from
// them by the real measurement code, so the values are what a simulated AMD-SP booting
// these files would report.
package bundletest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/sealpod/sealpod/guest-image/measure"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/tee"
)

// WriteDir writes a stand-in guest bundle (no firmware) into dir, creating it.
func WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b := &bundle.Bundle{
		Config: bundle.Config{Version: bundle.Version, Cmdline: "console=hvc0 quiet", VCPUs: 1, MemoryMiB: 512},
		Kernel: []byte("stand-in kernel: boots nothing\n"),
		Initrd: []byte("stand-in initrd: boots nothing\n"),
	}
	m, err := measure.Compute(measure.BundleInputs(b, tee.Sim, tee.PEF))
	if err != nil {
		return fmt.Errorf("stand-in guest: %w", err)
	}
	b.Config.Measurements = m
	cfg, err := b.Config.Marshal()
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{bundle.KernelFile: b.Kernel, bundle.InitrdFile: b.Initrd, bundle.ConfigFile: cfg} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Write creates a stand-in guest bundle in a new temporary directory and returns it.
func Write(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}
