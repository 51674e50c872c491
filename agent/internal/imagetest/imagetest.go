// Package imagetest serves container images from an in-process registry on 127.0.0.1 for the
// agent's tests: a busybox image (Debian's busybox-static) or any one-layer image, optional
// basic auth and a hook to answer requests as a malicious registry would.
package imagetest

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// BusyboxPath is Debian's busybox-static binary (apt-get install busybox-static).
const BusyboxPath = "/bin/busybox"

// BusyboxImage is a linux/amd64 image of BusyboxLayer with PATH=/bin and
// IMAGE_VAR=from-image in its environment and sh as its command.
func BusyboxImage(t testing.TB) v1.Image {
	t.Helper()
	return Image(t, BusyboxLayer(t), v1.Config{Env: []string{"PATH=/bin", "IMAGE_VAR=from-image"}, Cmd: []string{"sh"}})
}

// BusyboxLayer is a tar stream of the static busybox with applet symlinks in /bin, an
// /etc/passwd and /etc/group with root and nobody, a sticky world-writable /tmp and empty
// /proc, /sys and /dev.
func BusyboxLayer(t testing.TB) []byte {
	t.Helper()
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, data []byte) {
		h.ModTime = time.Unix(1700000000, 0)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin/", "etc/", "tmp/", "proc/", "sys/", "dev/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		add(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: mode}, nil)
	}
	add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))}, bin)
	for _, a := range []string{"sh", "echo", "sleep", "true", "cat", "env", "hostname", "touch", "id", "tty", "ls", "sync"} {
		add(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil)
	}
	for _, f := range []struct{ name, data string }{
		{"etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
		{"etc/group", "root:x:0:\nnogroup:x:65534:\n"},
	} {
		add(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(f.data))}, []byte(f.data))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Image is a linux/amd64 image of one layer, the tar stream layer, with config as its
// runtime configuration.
func Image(t testing.TB, layer []byte, config v1.Config) v1.Image {
	t.Helper()
	return LayeredImage(t, [][]byte{layer}, config)
}

// Registry is an in-process registry over plain HTTP on 127.0.0.1.
type Registry struct {
	// Host is "127.0.0.1:port".
	Host string

	mu         sync.Mutex
	user, pass string
	rewrite    func(w http.ResponseWriter, r *http.Request) bool
}

// NewRegistry starts a registry until the test ends.
func NewRegistry(t testing.TB) *Registry {
	t.Helper()
	r := &Registry{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		user, pass, rewrite := r.user, r.pass, r.rewrite
		r.mu.Unlock()
		if user != "" {
			if u, p, ok := req.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="imagetest"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
		}
		if rewrite != nil && rewrite(w, req) {
			return
		}
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// RequireAuth makes every request need HTTP basic auth with user and pass.
func (r *Registry) RequireAuth(user, pass string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.user, r.pass = user, pass
}

// Rewrite installs a hook that may answer a request itself (return true).
func (r *Registry) Rewrite(f func(w http.ResponseWriter, req *http.Request) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rewrite = f
}

// Push writes img to repo and returns its digest-pinned reference host/repo@sha256:....
func (r *Registry) Push(t testing.TB, repo string, img v1.Image) string {
	t.Helper()
	tag, err := name.NewTag(r.Host + "/" + repo + ":latest")
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	auth := authn.Anonymous
	if r.user != "" {
		auth = authn.FromConfig(authn.AuthConfig{Username: r.user, Password: r.pass})
	}
	r.mu.Unlock()
	if err := remote.Write(tag, img, remote.WithContext(context.Background()), remote.WithAuth(auth)); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return r.Host + "/" + repo + "@" + d.String()
}
