package containers

import (
	"context"
	"errors"
	"fmt"
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
	requireRoot(t)
	reg := newTestRegistry(t)
	// The registry answers the pinned digest with a different (valid) manifest (installed
	// before the pod starts: its images are pulled from StartPod on).
	pinned := reg.digest.String()
	reg.Rewrite(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/manifests/"+pinned) {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			_, _ = w.Write([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}`))
			return true
		}
		return false
	})
	f := newPodWith(t, reg, nil, spec.Container{Name: "app", Command: []string{"true"}})
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

// BenchmarkPodImages: a pod of one init container and two app containers, each with its own
// image of the busybox layer and three 1 MiB layers (4 bits of entropy per byte, so gzip
// has work), from a loopback registry that answers every request after 20 ms (a network
// round trip). One iteration: StartPod (what Unseal calls), hostGap (the host's time between
// the Unseal answer and the first CreateContainer), then, as the kubelet does, create, start
// and wait for the init container, then create both app containers. "sequential" pulls each
// image at its Create, layer after layer (the behaviour before prefetching); "prefetch" pulls
// all three from StartPod on, three at a time, the next layer downloading while one unpacks.
func BenchmarkPodImages(b *testing.B) {
	requireRoot(b)
	im := pushImages(b, 3, 3, 1<<20, 4)
	im.rec.Delay(func(*http.Request) time.Duration { return 20 * time.Millisecond })
	s := &spec.Spec{Version: spec.Version, Workload: "bench", Pod: "default/bench",
		InitContainers: []spec.Container{{Name: "init", Image: im.refs[0], Command: []string{"true"}}},
		Containers: []spec.Container{{Name: "app0", Image: im.refs[1], Command: []string{"true"}},
			{Name: "app1", Image: im.refs[2], Command: []string{"true"}}},
		Policy: spec.Policy{Logs: spec.LogsDeny}}
	ctx := context.Background()
	for _, mode := range []string{"sequential", "prefetch"} {
		for _, gap := range []time.Duration{0, 100 * time.Millisecond} {
			b.Run(fmt.Sprintf("%s/hostGap=%v", mode, gap), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					m, err := New(Options{StateDir: b.TempDir(), InsecureRegistries: []string{im.rec.Host}, CgroupParent: "sealpod-bench"})
					if err != nil {
						b.Fatal(err)
					}
					m.noPrefetch = mode == "sequential"
					b.StartTimer()
					if err := m.StartPod(s, PodOptions{}); err != nil {
						b.Fatal(err)
					}
					time.Sleep(gap)
					c, err := m.Create(ctx, "init")
					if err != nil {
						b.Fatal(err)
					}
					if err := c.Start(); err != nil {
						b.Fatal(err)
					}
					if code, err := c.Wait(ctx); err != nil || code != 0 {
						b.Fatalf("init: exit %d %v", code, err)
					}
					for _, n := range []string{"app0", "app1"} {
						if _, err := m.Create(ctx, n); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					if err := m.Close(ctx); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/pod")
			})
		}
	}
}
