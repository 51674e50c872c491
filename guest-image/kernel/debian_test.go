package kernel_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sealpod/sealpod/guest-image/kernel"
	"github.com/sealpod/sealpod/guest-image/kernel/kerneltest"
)

// TestDebianKernel resolves the default module set in Debian's real kernel package. It needs
// the package in the cache or apt access; it skips (saying why) only when the package cannot be
// fetched.
func TestDebianKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the Debian kernel package download")
	}
	tree := kerneltest.Tree(t)
	ix, err := kernel.NewIndex(tree.ModulesDir(), tree.Release)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ix.Resolve(kernel.DefaultModules, kernel.DefaultOptionalModules)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, m := range r.Order {
		got[m.Name] = true
		if _, err := os.Stat(filepath.Join(tree.ModulesDir(), m.Path)); err != nil {
			t.Error(err)
		}
	}
	for _, want := range append(kernel.DefaultModules, "virtio", "virtio_ring", "vmw_vsock_virtio_transport_common", "failover", "net_failover") {
		if !got[want] {
			t.Errorf("module %s not in the load order %v", want, r.Order)
		}
	}
	t.Logf("kernel %s: %d modules, builtin %v, absent %v", tree.Release, len(r.Order), r.Builtin, r.Absent)
}
