package containers

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sealpod/sealpod/agent/containers/image"
	"github.com/sealpod/sealpod/agent/errkind"
	"github.com/sealpod/sealpod/agent/internal/imagetest"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// testImages are distinct images in a recording registry: each is the busybox layer plus a
// layer of its own (a file of incompressible bytes), so each has its own digests.
type testImages struct {
	rec    *imagetest.Recorder
	refs   []string
	layers [][]v1.Hash // per image, its layers' digests
	extra  [][]byte    // per image, its own layer (uncompressed tar)
	// inFlight, if a case's setup makes it, is closed when a slow download has begun.
	inFlight chan struct{}
}

// pushImages pushes n images: the busybox layer, then extraLayers layers of their own, each
// with img/id (the image's index) and img/data (extraBytes bytes of entropy bits each).
func pushImages(t testing.TB, n, extraLayers, extraBytes, bits int) *testImages {
	t.Helper()
	im := &testImages{rec: imagetest.NewRecorder(t)}
	busybox := imagetest.BusyboxLayer(t)
	rnd := rand.New(rand.NewPCG(7, uint64(n)))
	for i := 0; i < n; i++ {
		layers := [][]byte{busybox}
		for k := 0; k < extraLayers; k++ {
			data := make([]byte, extraBytes)
			for j := range data {
				data[j] = byte(rnd.Uint32() >> (32 - bits))
			}
			layers = append(layers, tarOf(t, map[string][]byte{"img/id": []byte(fmt.Sprint(i)), "img/data": data}))
		}
		extra := layers[1]
		img := imagetest.LayeredImage(t, layers, v1.Config{Env: []string{"PATH=/bin"}, Cmd: []string{"sh"}})
		im.refs = append(im.refs, im.rec.Push(t, fmt.Sprintf("sealpod/img%d", i), img))
		ls, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		var ds []v1.Hash
		for _, l := range ls {
			d, err := l.Digest()
			if err != nil {
				t.Fatal(err)
			}
			ds = append(ds, d)
		}
		im.layers = append(im.layers, ds)
		im.extra = append(im.extra, extra)
	}
	im.rec.Reset()
	return im
}

// tarOf is a tar stream of the directory img/ with img/id and img/data from files.
func tarOf(t testing.TB, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "img/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"img/id", "img/data"} {
		data := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// count is how many GETs of path suffix the registry answered.
func (im *testImages) count(suffix string) int {
	n := 0
	for _, r := range im.rec.Requests(suffix) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.Path, suffix) {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// prefetchPod starts a pod whose init and app containers run the images at the given
// indexes (init containers "init0"…, app containers "app0"…, each running true).
func prefetchPod(t *testing.T, im *testImages, initImgs, appImgs []int) *podFixture {
	t.Helper()
	s := &spec.Spec{}
	for i, n := range initImgs {
		s.InitContainers = append(s.InitContainers, spec.Container{Name: fmt.Sprintf("init%d", i), Image: im.refs[n], Command: []string{"true"}})
	}
	for i, n := range appImgs {
		s.Containers = append(s.Containers, spec.Container{Name: fmt.Sprintf("app%d", i), Image: im.refs[n], Command: []string{"true"}})
	}
	return startSpec(t, s, nil, Options{InsecureRegistries: []string{im.rec.Host}})
}

func createAll(t *testing.T, f *podFixture, names ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, n := range names {
		if _, err := f.m.Create(ctx, n); err != nil {
			t.Fatalf("create %s: %v", n, err)
		}
	}
}

// stagedLeft lists what is left in the state dir's image staging area.
func stagedLeft(f *podFixture) []string {
	left, _ := filepath.Glob(filepath.Join(f.state, "images", "*"))
	return left
}

// TestPrefetch: from StartPod (which the agent calls right after unsealing) every image of
// the sealed spec is pulled, a few at a time; Create waits for and takes its image's pull;
// failures of that pull are Create's errors and leave nothing unpacked.
func TestPrefetch(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name     string
		images   int
		initImgs []int
		appImgs  []int
		setup    func(t *testing.T, im *testImages)
		run      func(t *testing.T, f *podFixture, im *testImages)
	}{
		{name: "pulls start at StartPod, before any Create", images: 2, initImgs: []int{0}, appImgs: []int{1},
			run: func(t *testing.T, f *podFixture, im *testImages) {
				waitFor(t, 30*time.Second, "pull of every image without a Create", func() bool {
					for i := range im.refs {
						if im.count(im.layers[i][1].String()) == 0 {
							return false
						}
					}
					return true
				})
				createAll(t, f, "init0", "app0")
				for i := range im.refs {
					for _, d := range im.layers[i] {
						if n := im.count(fmt.Sprintf("/img%d/blobs/%s", i, d)); n != 1 {
							t.Errorf("image %d layer %s fetched %d times, want once (Create pulled again)", i, d, n)
						}
					}
				}
			}},
		{name: "at most three images at once", images: 5, appImgs: []int{0, 1, 2, 3, 4},
			setup: func(t *testing.T, im *testImages) {
				im.rec.Delay(func(r *http.Request) time.Duration {
					if strings.Contains(r.URL.Path, "/manifests/") {
						return 400 * time.Millisecond
					}
					return 0
				})
			},
			run: func(t *testing.T, f *podFixture, im *testImages) {
				waitFor(t, 30*time.Second, "manifest requests of all 5 images", func() bool {
					return len(im.rec.Requests("/manifests/")) >= 5
				})
				got := imagetest.MaxOverlap(im.rec.Requests("/manifests/"))
				t.Logf("images resolved at once: %d", got)
				if got < 2 || got > 3 {
					t.Errorf("%d manifests fetched at once, want 2..3 (parallel, bounded by 3)", got)
				}
				createAll(t, f, "app0", "app1", "app2", "app3", "app4")
			}},
		{name: "Create shares the in-flight pull; a second container of the image gets its own copy", images: 1, appImgs: []int{0, 0},
			setup: func(t *testing.T, im *testImages) {
				slow := "/blobs/" + im.layers[0][1].String()
				var once sync.Once
				im.inFlight = make(chan struct{})
				im.rec.Delay(func(r *http.Request) time.Duration {
					if strings.HasSuffix(r.URL.Path, slow) {
						once.Do(func() { close(im.inFlight) })
						return 500 * time.Millisecond
					}
					return 0
				})
			},
			run: func(t *testing.T, f *podFixture, im *testImages) {
				select {
				case <-im.inFlight:
				case <-time.After(30 * time.Second):
					t.Fatal("no layer download in flight within 30s of StartPod")
				}
				createAll(t, f, "app0")
				im.rec.WaitIdle(t)
				if n := im.count("/manifests/" + im.refs[0][strings.Index(im.refs[0], "@")+1:]); n != 1 {
					t.Errorf("manifest fetched %d times, want once", n)
				}
				createAll(t, f, "app1")
				im.rec.WaitIdle(t)
				for _, d := range im.layers[0] {
					if n := im.count("/blobs/" + d.String()); n != 2 {
						t.Errorf("layer %s fetched %d times, want twice (one rootfs per container)", d, n)
					}
				}
				if n := len(im.rec.Requests("/manifests/")); n != 1 {
					t.Errorf("%d manifest requests, want 1 (the image is resolved once)", n)
				}
				for _, c := range []string{"app0", "app1"} {
					b, err := os.ReadFile(filepath.Join(f.state, "c", c, "rootfs", "img", "id"))
					if err != nil || string(b) != "0" {
						t.Errorf("%s rootfs: img/id %q %v", c, b, err)
					}
				}
				if left := stagedLeft(f); len(left) != 0 {
					t.Errorf("staged images left after every container took one: %v", left)
				}
			}},
		{name: "corrupted layer fails Create and leaves nothing unpacked", images: 1, appImgs: []int{0},
			setup: func(t *testing.T, im *testImages) {
				bad := "/blobs/" + im.layers[0][1].String()
				tampered := bytes.Clone(im.extra[0])
				tampered[len(tampered)-2048] ^= 0xff // inside img/data
				im.rec.Rewrite(func(w http.ResponseWriter, r *http.Request) bool {
					if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, bad) {
						_, _ = w.Write(tampered)
						return true
					}
					return false
				})
			},
			run: func(t *testing.T, f *podFixture, im *testImages) {
				_, err := f.m.Create(context.Background(), "app0")
				if !errors.Is(err, image.ErrDigestMismatch) || errkind.Of(err) != image.ErrDigestMismatch {
					t.Fatalf("err = %v (kind %q), want the kind %q", err, errkind.Text(err), image.ErrDigestMismatch)
				}
				if left := stagedLeft(f); len(left) != 0 {
					t.Errorf("partial unpack left: %v", left)
				}
				if _, err := os.Stat(filepath.Join(f.state, "c", "app0")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("container dir left: %v", err)
				}
			}},
		{name: "pull error surfaces on Create", images: 1, appImgs: []int{0},
			setup: func(t *testing.T, im *testImages) {
				im.rec.Rewrite(func(w http.ResponseWriter, r *http.Request) bool {
					if strings.Contains(r.URL.Path, "/manifests/") {
						http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"gone"}]}`, http.StatusNotFound)
						return true
					}
					return false
				})
			},
			run: func(t *testing.T, f *podFixture, im *testImages) {
				waitFor(t, 30*time.Second, "manifest request from StartPod", func() bool { return len(im.rec.Requests("/manifests/")) > 0 })
				_, err := f.m.Create(context.Background(), "app0")
				if !errors.Is(err, image.ErrNotFound) || errkind.Of(err) != image.ErrNotFound {
					t.Fatalf("err = %v (kind %q), want the kind %q", err, errkind.Text(err), image.ErrNotFound)
				}
				if n := len(im.rec.Requests("/manifests/")); n != 1 {
					t.Errorf("%d manifest requests, want 1: Create reports the pull it waited for", n)
				}
				// The kubelet retries: a new Create pulls again (and the registry now has it).
				im.rec.Rewrite(nil)
				createAll(t, f, "app0")
			}},
		{name: "Close stops the pulls and removes what they unpacked", images: 2, appImgs: []int{0, 1},
			setup: func(t *testing.T, im *testImages) {
				im.rec.Delay(func(r *http.Request) time.Duration {
					if strings.HasSuffix(r.URL.Path, im.layers[1][1].String()) {
						return 3 * time.Second
					}
					return 0
				})
			},
			run: func(t *testing.T, f *podFixture, im *testImages) {
				waitFor(t, 30*time.Second, "first image pulled", func() bool { return im.count(im.layers[0][1].String()) > 0 })
				t0 := time.Now()
				if err := f.m.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
				if d := time.Since(t0); d > 2500*time.Millisecond {
					t.Errorf("Close took %v: it waited for a pull instead of canceling it", d)
				}
				if _, err := os.Stat(filepath.Join(f.state, "images")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("staging area left after Close: %v", err)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im := pushImages(t, tc.images, 1, 256<<10, 8)
			if tc.setup != nil {
				tc.setup(t, im)
			}
			f := prefetchPod(t, im, tc.initImgs, tc.appImgs)
			tc.run(t, f, im)
		})
	}
}
