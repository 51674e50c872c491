// Package netnstest creates named network namespaces for tests (the netns and qemu packages'
// tests share it).
package netnstest

import (
	"fmt"
	"path/filepath"
	"runtime"
	"testing"

	vnetns "github.com/vishvananda/netns"
)

// New creates the named network namespace (a bind mount under /var/run/netns, like `ip netns
// add`) without moving the calling thread into it, and deletes it at cleanup. It returns the
// path of the bind mount.
func New(t testing.TB, name string) string {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		h, err := vnetns.NewNamed(name) // unshares this thread into the new namespace
		if err == nil {
			h.Close()
		}
		if rerr := vnetns.Set(orig); rerr != nil {
			errc <- fmt.Errorf("restore namespace: %w", rerr) // thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := vnetns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return filepath.Join("/var/run/netns", name)
}
