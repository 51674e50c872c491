package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/sealpod/sealpod/agent/internal/imagetest"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// fakeRegistry is imagetest's registry; its Rewrite hook may answer a request instead of the
// registry (a malicious registry).
type fakeRegistry struct{ *imagetest.Registry }

func newFakeRegistry(t *testing.T) *fakeRegistry {
	t.Helper()
	return &fakeRegistry{imagetest.NewRegistry(t)}
}

// push writes an image with one layer holding the given files and returns its pinned ref.
func (fr *fakeRegistry) push(t *testing.T, repo string, files ...entry) (string, v1.Image) {
	t.Helper()
	img := imagetest.Image(t, mkTar(t, files...), v1.Config{})
	return fr.Push(t, repo, img), img
}

func TestPullUnpack(t *testing.T) {
	requireRoot(t)
	fr := newFakeRegistry(t)
	ref, _ := fr.push(t, "app", dir("etc/"), file("etc/motd", "hello"), symlink("motd", "etc/motd"))
	ctx := context.Background()
	img, err := Pull(ctx, ref, PullOptions{InsecureRegistries: []string{fr.Host}})
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest.String() != ref[strings.Index(ref, "@")+1:] {
		t.Errorf("digest %s, ref %s", img.Digest, ref)
	}
	root := t.TempDir()
	if err := Unpack(ctx, img, root, nil); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "motd")); err != nil || string(b) != "hello" {
		t.Errorf("motd: %q %v", b, err)
	}
}

func TestPullIndexSelectsPlatform(t *testing.T) {
	fr := newFakeRegistry(t)
	_, amd := fr.push(t, "amd", file("arch", "amd64"))
	_, arm := fr.push(t, "arm", file("arch", "arm64"))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	tag, err := name.NewTag(fr.Host + "/multi:latest")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, idx); err != nil {
		t.Fatal(err)
	}
	id, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	img, err := Pull(context.Background(), fr.Host+"/multi@"+id.String(),
		PullOptions{InsecureRegistries: []string{fr.Host}, Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := amd.Digest()
	if img.Digest != want {
		t.Errorf("selected %s, want the amd64 manifest %s", img.Digest, want)
	}
}

func TestPullRefusals(t *testing.T) {
	fr := newFakeRegistry(t)
	ref, _ := fr.push(t, "app", file("a", "a"))
	other, _ := fr.push(t, "other", file("b", "b"))
	_ = other
	ctx := context.Background()
	insecure := PullOptions{InsecureRegistries: []string{fr.Host}}

	t.Run("tag not pinned", func(t *testing.T) {
		_, err := Pull(ctx, fr.Host+"/app:latest", insecure)
		if !errors.Is(err, ErrNotPinned) {
			t.Fatalf("err = %v, want ErrNotPinned", err)
		}
	})
	t.Run("plain HTTP to a registry not listed as insecure", func(t *testing.T) {
		_, err := Pull(ctx, ref, PullOptions{})
		t.Logf("err: %v (errors.Is=%v)", err, errors.Is(err, ErrInsecureTransport))
		if !errors.Is(err, ErrInsecureTransport) {
			t.Fatalf("err = %v, want %v", err, ErrInsecureTransport)
		}
	})
	t.Run("manifest does not match the pinned digest", func(t *testing.T) {
		// The registry answers the pinned digest with another image's manifest.
		otherImg, err := remote.Get(mustDigest(t, other), remote.WithTransport(http.DefaultTransport))
		if err != nil {
			t.Fatal(err)
		}
		pinned := ref[strings.Index(ref, "@")+1:]
		fr.Rewrite(func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/manifests/"+pinned) {
				w.Header().Set("Content-Type", string(otherImg.MediaType))
				w.Header().Set("Docker-Content-Digest", pinned) // lie
				_, _ = w.Write(otherImg.Manifest)
				return true
			}
			return false
		})
		defer fr.Rewrite(nil)
		_, err = Pull(ctx, ref, insecure)
		if !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("err = %v, want ErrDigestMismatch", err)
		}
	})
}

func mustDigest(t *testing.T, ref string) name.Digest {
	t.Helper()
	d, err := name.NewDigest(ref)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestUnpackRefusesTamperedContent(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	t.Run("layer bytes changed by the registry", func(t *testing.T) {
		fr := newFakeRegistry(t)
		ref, img := fr.push(t, "app", file("data", strings.Repeat("A", 4096)))
		layers, _ := img.Layers()
		ld, _ := layers[0].Digest()
		// Same tar, one byte of file content changed, recompressed: a valid layer whose
		// digest is not the one in the manifest.
		tampered := bytes.Replace(mkTar(t, file("data", strings.Repeat("A", 4096))), []byte("AAAA"), []byte("AAAB"), 1)
		fr.Rewrite(func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+ld.String()) {
				_, _ = w.Write(tampered)
				return true
			}
			return false
		})
		pulled, err := Pull(ctx, ref, PullOptions{InsecureRegistries: []string{fr.Host}})
		if err != nil {
			t.Fatal(err)
		}
		err = Unpack(ctx, pulled, t.TempDir(), nil)
		if err == nil {
			t.Fatal("tampered layer accepted")
		}
		t.Logf("err: %v", err)
		if !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("err = %v, want a digest mismatch", err)
		}
	})
	// The compressed digest authenticates a compressed layer's bytes, so a config diff_id
	// that does not match them is not hashed for (applyLayer); an uncompressed layer's digest
	// is its diff_id, so the config must name that digest.
	for _, tc := range []struct {
		name       string
		compressed bool
		wantErr    bool
	}{
		{"gzip layer, wrong config diff_id (accepted: the digest authenticates its bytes)", true, false},
		{"uncompressed layer, config diff_id other than its digest", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fr := newFakeRegistry(t)
			tarball := mkTar(t, file("data", "x"))
			var layer v1.Layer
			if tc.compressed {
				layer = static.NewLayer(gzipped(t, tarball), types.OCILayer)
			} else {
				layer = static.NewLayer(tarball, types.OCIUncompressedLayer)
			}
			img, err := mutate.AppendLayers(empty.Image, layer)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			cf = cf.DeepCopy()
			cf.RootFS.DiffIDs[0] = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
			bad, err := mutate.ConfigFile(img, cf)
			if err != nil {
				t.Fatal(err)
			}
			ref := fr.Push(t, "bad", bad)
			pulled, err := Pull(ctx, ref, PullOptions{InsecureRegistries: []string{fr.Host}})
			if err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			err = Unpack(ctx, pulled, root, nil)
			if tc.wantErr {
				if !errors.Is(err, ErrDigestMismatch) {
					t.Fatalf("err = %v, want ErrDigestMismatch", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(filepath.Join(root, "data")); err != nil || string(b) != "x" {
				t.Errorf("data: %q %v", b, err)
			}
		})
	}
}

// gzipped compresses b (compress/gzip, default level).
func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestMirrorsOf(t *testing.T) {
	ms := []spec.RegistryMirror{{Registry: "gcr.io", Endpoint: "m1:5000"}, {Registry: "docker.io", Endpoint: "hub:5000"}, {Registry: "gcr.io", Endpoint: "m2"}}
	for ref, want := range map[string][]string{
		"gcr.io/google_samples/gb@sha256:aa":      {"m1:5000/google_samples/gb@sha256:aa", "m2/google_samples/gb@sha256:aa"},
		"index.docker.io/library/redis@sha256:aa": {"hub:5000/library/redis@sha256:aa"},
		"redis@sha256:aa":                         {"hub:5000/library/redis@sha256:aa"},
		"someone/app@sha256:aa":                   {"hub:5000/someone/app@sha256:aa"},
		"quay.io/x/y@sha256:aa":                   nil,
	} {
		if got := mirrorsOf(ref, ms); !slices.Equal(got, want) {
			t.Errorf("mirrorsOf(%s) = %v, want %v", ref, got, want)
		}
	}
}

// A sealed mirror serves the pinned image; an origin registry is used when the mirror fails,
// and a mirror that serves other bytes for the digest is not trusted.
func TestPullThroughMirror(t *testing.T) {
	origin, mirror := newFakeRegistry(t), newFakeRegistry(t)
	ref, img := origin.push(t, "team/app", file("a", "a"))
	mirror.Push(t, "team/app", img)
	originHits := 0
	origin.Rewrite(func(http.ResponseWriter, *http.Request) bool { originHits++; return false })
	ctx := context.Background()
	opts := PullOptions{
		Mirrors:            []spec.RegistryMirror{{Registry: origin.Host, Endpoint: mirror.Host}},
		InsecureRegistries: []string{origin.Host, mirror.Host},
	}
	got, err := Pull(ctx, ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	if originHits != 0 || !strings.HasPrefix(got.Ref.String(), mirror.Host+"/team/app@") {
		t.Fatalf("pulled %s with %d requests to the origin, want the mirror only", got.Ref, originHits)
	}

	// The mirror answers the digest with another manifest: refused, the origin serves it.
	other, _ := mirror.push(t, "team/other", file("b", "b"))
	otherImg, err := remote.Get(mustDigest(t, other), remote.WithTransport(http.DefaultTransport))
	if err != nil {
		t.Fatal(err)
	}
	mirror.Rewrite(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/manifests/sha256:") {
			w.Header().Set("Content-Type", string(otherImg.MediaType))
			_, _ = w.Write(otherImg.Manifest)
			return true
		}
		return false
	})
	if got, err = Pull(ctx, ref, opts); err != nil || !strings.HasPrefix(got.Ref.String(), origin.Host+"/") || originHits == 0 {
		t.Fatalf("after a lying mirror: %v %v (origin requests %d)", got, err, originHits)
	}

	// Neither has it: the error names both attempts.
	missing := origin.Host + "/team/app@sha256:" + strings.Repeat("0", 64)
	_, err = Pull(ctx, missing, opts)
	if err == nil || !strings.Contains(err.Error(), mirror.Host+"/team/app") || !strings.Contains(err.Error(), origin.Host+"/team/app") {
		t.Fatalf("err = %v, want both sources named", err)
	}
	// A mirror not listed as insecure is not reached over plain HTTP.
	opts.InsecureRegistries = []string{origin.Host}
	mirror.Rewrite(nil)
	if _, err = Pull(ctx, ref, opts); err != nil {
		t.Fatal(err)
	}
	if _, err = Pull(ctx, missing, opts); !errors.Is(err, ErrInsecureTransport) {
		t.Fatalf("err = %v, want ErrInsecureTransport for the mirror", err)
	}
}
