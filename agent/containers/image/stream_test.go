package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sealpod/sealpod/agent/internal/imagetest"
)

// layeredImage pushes an image of n layers (layer i holds dir li/ with a file of size
// pseudo-random, so incompressible, bytes) to a recording registry and returns the registry,
// the pinned reference, the layers' digests and their uncompressed tar streams, in order.
func layeredImage(t testing.TB, n, size int) (*imagetest.Recorder, string, []v1.Hash, [][]byte) {
	t.Helper()
	rec := imagetest.NewRecorder(t)
	rnd := rand.New(rand.NewPCG(1, 2))
	var tars [][]byte
	for i := 0; i < n; i++ {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(rnd.Uint32())
		}
		tars = append(tars, mkTar(t, dir(fmt.Sprintf("l%d/", i)), file(fmt.Sprintf("l%d/data", i), string(data))))
	}
	img := imagetest.LayeredImage(t, tars, v1.Config{})
	ref := rec.Push(t, "multi", img)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var digests []v1.Hash
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
	}
	rec.Reset()
	return rec, ref, digests, tars
}

// TestUnpackStreamed: layers are fetched while earlier ones are still being unpacked, and a
// layer whose bytes do not match its digest fails the unpack and leaves nothing behind, even
// though earlier (good) layers and the bad layer's own entries were already written.
func TestUnpackStreamed(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// bad is the index of the layer the registry tampers with (-1: none).
		bad int
		// slow is the index of the layer whose answer is delayed (-1: none).
		slow int
		// check runs after a successful unpack.
		check func(t *testing.T, rec *imagetest.Recorder, digests []v1.Hash)
	}{
		{name: "next layer fetched while the previous one is unpacked", bad: -1, slow: 0,
			check: func(t *testing.T, rec *imagetest.Recorder, digests []v1.Hash) {
				rec.WaitIdle(t)
				first := rec.Requests("/blobs/" + digests[0].String())
				second := rec.Requests("/blobs/" + digests[1].String())
				if len(first) != 1 || len(second) != 1 {
					t.Fatalf("layer requests %d and %d, want 1 each", len(first), len(second))
				}
				if !second[0].Start.Before(first[0].End) {
					t.Errorf("layer 1 requested %v after layer 0's answer ended: layers fetched one after the other",
						second[0].Start.Sub(first[0].End))
				}
			}},
		{name: "tampered middle layer", bad: 1, slow: -1},
		{name: "tampered last layer", bad: 2, slow: -1},
		{name: "tampered first layer, slow second", bad: 0, slow: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, ref, digests, tars := layeredImage(t, 3, 64<<10)
			if tc.slow >= 0 {
				slow := "/blobs/" + digests[tc.slow].String()
				rec.Delay(func(r *http.Request) time.Duration {
					if strings.HasSuffix(r.URL.Path, slow) {
						return 300 * time.Millisecond
					}
					return 0
				})
			}
			if tc.bad >= 0 {
				// A valid (uncompressed) tar with one byte of file content changed: its
				// entries unpack, only the digest shows the change.
				bad := "/blobs/" + digests[tc.bad].String()
				tampered := bytes.Clone(tars[tc.bad])
				tampered[len(tampered)-2048] ^= 0xff // inside the file's data
				rec.Rewrite(func(w http.ResponseWriter, r *http.Request) bool {
					if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, bad) {
						_, _ = w.Write(tampered)
						return true
					}
					return false
				})
			}
			img, err := Pull(ctx, ref, PullOptions{InsecureRegistries: []string{rec.Host}})
			if err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			err = Unpack(ctx, img, root, nil)
			if tc.bad < 0 {
				if err != nil {
					t.Fatal(err)
				}
				for i := range digests {
					if b, err := os.ReadFile(fmt.Sprintf("%s/l%d/data", root, i)); err != nil || len(b) != 64<<10 {
						t.Errorf("layer %d: %d bytes, %v", i, len(b), err)
					}
				}
				tc.check(t, rec, digests)
				return
			}
			if !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("err = %v, want ErrDigestMismatch", err)
			}
			left, err := os.ReadDir(root)
			if err != nil {
				t.Fatal(err)
			}
			if len(left) != 0 {
				var names []string
				for _, e := range left {
					names = append(names, e.Name())
				}
				t.Fatalf("after a digest mismatch the root still holds %v: a partial unpack is left", names)
			}
		})
	}
}
