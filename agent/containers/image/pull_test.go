package image

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type fakeRegistry struct {
	host string
	// rewrite may answer a request instead of the registry (a malicious registry).
	rewrite func(w http.ResponseWriter, r *http.Request) bool
}

func newFakeRegistry(t *testing.T) *fakeRegistry {
	t.Helper()
	fr := &fakeRegistry{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fr.rewrite != nil && fr.rewrite(w, r) {
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	fr.host = strings.TrimPrefix(srv.URL, "http://")
	return fr
}

// push writes an image with one layer holding the given files and returns its pinned ref.
func (fr *fakeRegistry) push(t *testing.T, repo string, files ...entry) (string, v1.Image) {
	t.Helper()
	data := mkTar(t, files...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return fr.pushImage(t, repo, img), img
}

func (fr *fakeRegistry) pushImage(t *testing.T, repo string, img v1.Image) string {
	t.Helper()
	tag, err := name.NewTag(fr.host + "/" + repo + ":latest")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return fr.host + "/" + repo + "@" + d.String()
}

func TestPullUnpack(t *testing.T) {
	requireRoot(t)
	fr := newFakeRegistry(t)
	ref, _ := fr.push(t, "app", dir("etc/"), file("etc/motd", "hello"), symlink("motd", "etc/motd"))
	ctx := context.Background()
	img, err := Pull(ctx, ref, PullOptions{InsecureRegistries: []string{fr.host}})
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
	tag, err := name.NewTag(fr.host + "/multi:latest")
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
	img, err := Pull(context.Background(), fr.host+"/multi@"+id.String(),
		PullOptions{InsecureRegistries: []string{fr.host}, Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}})
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
	insecure := PullOptions{InsecureRegistries: []string{fr.host}}

	t.Run("tag not pinned", func(t *testing.T) {
		_, err := Pull(ctx, fr.host+"/app:latest", insecure)
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
		fr.rewrite = func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/manifests/"+pinned) {
				w.Header().Set("Content-Type", string(otherImg.MediaType))
				w.Header().Set("Docker-Content-Digest", pinned) // lie
				_, _ = w.Write(otherImg.Manifest)
				return true
			}
			return false
		}
		defer func() { fr.rewrite = nil }()
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
		fr.rewrite = func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+ld.String()) {
				_, _ = w.Write(tampered)
				return true
			}
			return false
		}
		pulled, err := Pull(ctx, ref, PullOptions{InsecureRegistries: []string{fr.host}})
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
	t.Run("config diff_id does not match the layer", func(t *testing.T) {
		fr := newFakeRegistry(t)
		_, img := fr.push(t, "app", file("data", "x"))
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.RootFS.DiffIDs[0] = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
		bad, err := mutate.ConfigFile(img, cf)
		if err != nil {
			t.Fatal(err)
		}
		ref := fr.pushImage(t, "bad", bad)
		pulled, err := Pull(ctx, ref, PullOptions{InsecureRegistries: []string{fr.host}})
		if err != nil {
			t.Fatal(err)
		}
		if err := Unpack(ctx, pulled, t.TempDir(), nil); !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("err = %v, want ErrDigestMismatch", err)
		}
	})
}
