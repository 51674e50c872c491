package containers

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/containers/image"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// BenchmarkPullUnpackStartTrue: pull (verified) + unpack + create + start + wait for
// `busybox true`, then delete; one container per iteration.
func BenchmarkPullUnpackStartTrue(b *testing.B) {
	requireRoot(b)
	reg := newTestRegistry(b)
	m, err := New(Options{StateDir: b.TempDir(), InsecureRegistries: []string{reg.Host}, CgroupParent: "sealpod-bench"})
	if err != nil {
		b.Fatal(err)
	}
	s := &spec.Spec{Version: spec.Version, Workload: "bench", Pod: "default/bench",
		Containers: []spec.Container{{Name: "true", Image: reg.ref, Command: []string{"true"}}},
		Policy:     spec.Policy{Logs: spec.LogsDeny}}
	if err := m.StartPod(s, PodOptions{}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Cleanup(func() { _ = m.Close(ctx) })
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := m.Create(ctx, "true")
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(); err != nil {
			b.Fatal(err)
		}
		if code, err := c.Wait(ctx); err != nil || code != 0 {
			b.Fatalf("exit %d %v", code, err)
		}
		b.StopTimer()
		if err := m.Delete(ctx, "true"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/container")
}

func TestCreateRefusesDigestMismatch(t *testing.T) {
	f := newPod(t, spec.Container{Name: "app", Command: []string{"true"}})
	// The registry now answers the pinned digest with a different (valid) manifest.
	pinned := f.reg.digest.String()
	f.reg.Rewrite(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/manifests/"+pinned) {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			_, _ = w.Write([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}`))
			return true
		}
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := f.m.Create(ctx, "app")
	if !errors.Is(err, image.ErrDigestMismatch) {
		t.Fatalf("err = %v, want image.ErrDigestMismatch", err)
	}
	if _, err := os.Stat(filepath.Join(f.state, "c", "app")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rootfs dir left after a refused pull: %v", err)
	}
	if _, err := f.m.Get("app"); !errors.Is(err, ErrUnknownContainer) {
		t.Errorf("refused container is registered: %v", err)
	}
}
