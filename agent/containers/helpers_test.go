package containers

import (
	"os"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sealpod/sealpod/agent/internal/imagetest"
	"github.com/sealpod/sealpod/internal/testdeps"
)

func TestMain(m *testing.M) {
	MaybeInit() // the test binary is the containers' init and the pod's pause
	os.Exit(m.Run())
}

// requireRoot skips tests that need root, cgroups and busybox-static, saying why.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testdeps.Missing(t, "needs root (libcontainer creates namespaces, cgroups and mounts)")
	}
	if _, err := os.Stat("/sys/fs/cgroup"); err != nil {
		testdeps.Missing(t, "needs /sys/fs/cgroup")
	}
	if _, err := os.Stat(imagetest.BusyboxPath); err != nil {
		testdeps.Missing(t, "needs %s (Debian package busybox-static)", imagetest.BusyboxPath)
	}
}

// testRegistry is an in-process registry on 127.0.0.1 holding the busybox image; its Rewrite
// hook may replace a response (to simulate a malicious registry).
type testRegistry struct {
	*imagetest.Registry
	ref    string // host/repo@sha256:...
	digest v1.Hash
}

func newTestRegistry(t testing.TB) *testRegistry {
	t.Helper()
	tr := &testRegistry{Registry: imagetest.NewRegistry(t)}
	img := imagetest.BusyboxImage(t)
	tr.ref = tr.Push(t, "sealpod/busybox", img)
	var err error
	if tr.digest, err = img.Digest(); err != nil {
		t.Fatal(err)
	}
	return tr
}
