package debimage

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/sealpod/sealpod/internal/testdeps"
)

// synthetic returns two fake packages' debs and a DataReader serving their data tars.
func synthetic(t *testing.T, appVersion string) ([]Deb, DataReader) {
	debs := []Deb{
		{Package: Package{"redis-server", appVersion, "amd64"}, SHA256: strings.Repeat("a", 64)},
		{Package: Package{"libc6", "2.36-9", "amd64"}, SHA256: strings.Repeat("b", 64)},
	}
	data := map[string][]byte{
		"libc6": dataTar(t, tarEntry{name: "./lib/x86_64-linux-gnu/libc.so.6", typ: tar.TypeReg, mode: 0o755, data: "libc"}),
		"redis-server": dataTar(t, tarEntry{name: "./usr/bin/redis-server", typ: tar.TypeReg, mode: 0o755, data: "redis " + appVersion},
			tarEntry{name: "./etc/redis/redis.conf", typ: tar.TypeReg, mode: 0o640, data: "daemonize yes\n"}),
	}
	return debs, func(d Deb) ([]byte, error) {
		if b, ok := data[d.Name]; ok {
			return b, nil
		}
		return nil, fmt.Errorf("no data for %s", d.Name)
	}
}

func digest(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// imageFiles flattens the image and returns its regular files' contents and every entry's
// owner and mode.
func imageFiles(t *testing.T, img v1.Image) (map[string]string, map[string]string) {
	t.Helper()
	files, meta := map[string]string{}, map[string]string{}
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, meta
		}
		if err != nil {
			t.Fatal(err)
		}
		meta[strings.TrimSuffix(h.Name, "/")] = fmt.Sprintf("%d:%d %o", h.Uid, h.Gid, h.Mode)
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			files[h.Name] = string(b)
		}
	}
}

// TestAssembleDeterministic: the same packages and recipe give the same digest, whatever the
// order the packages come in; another package version gives another digest.
func TestAssembleDeterministic(t *testing.T) {
	r := Recipes["redis"]
	debs, data := synthetic(t, "5:7.0.15-1")
	a, err := Assemble(r, debs, data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Assemble(r, []Deb{debs[1], debs[0]}, data)
	if err != nil {
		t.Fatal(err)
	}
	if digest(t, a) != digest(t, b) {
		t.Fatalf("two builds of the same packages: %s and %s", digest(t, a), digest(t, b))
	}
	debs2, data2 := synthetic(t, "5:7.0.15-2")
	c, err := Assemble(r, debs2, data2)
	if err != nil {
		t.Fatal(err)
	}
	if digest(t, a) == digest(t, c) {
		t.Fatal("another package version gave the same digest")
	}
}

func TestAssembleRedisRecipe(t *testing.T) {
	debs, data := synthetic(t, "5:7.0.15-1")
	img, err := Assemble(Recipes["redis"], debs, data)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "999:999" || strings.Join(cfg.Config.Entrypoint, " ") != "/usr/bin/redis-server /etc/redis/container.conf" ||
		cfg.Architecture != "amd64" || !cfg.Created.Time.Equal(Epoch) {
		t.Fatalf("config: user %q entrypoint %q arch %q created %v", cfg.Config.User, cfg.Config.Entrypoint, cfg.Architecture, cfg.Created)
	}
	if _, ok := cfg.Config.ExposedPorts["6379/tcp"]; !ok {
		t.Errorf("ports %v", cfg.Config.ExposedPorts)
	}
	layers, _ := img.Layers()
	if len(layers) != 2 {
		t.Fatalf("%d layers, want 2 (packages, recipe)", len(layers))
	}
	files, meta := imageFiles(t, img)
	for path, want := range map[string]string{
		"etc/passwd":                          "redis:x:999:999::/var/lib/redis:/usr/sbin/nologin\n",
		"etc/group":                           "redis:x:999:\n",
		"etc/redis/container.conf":            "protected-mode no\n",
		"usr/share/sealpod/debimage-packages": "libc6 2.36-9 amd64 " + strings.Repeat("b", 64) + "\nredis-server 5:7.0.15-1 amd64",
		"usr/bin/redis-server":                "redis 5:7.0.15-1",
		"usr/lib/x86_64-linux-gnu/libc.so.6":  "libc",
	} {
		if !strings.Contains(files[path], want) {
			t.Errorf("/%s = %q, want it to contain %q", path, files[path], want)
		}
	}
	for path, want := range map[string]string{"var/lib/redis": "999:999 750", "run/redis": "999:999 755", "tmp": "0:0 1777", "lib": "0:0 777"} {
		if meta[path] != want {
			t.Errorf("/%s: %q, want %q", path, meta[path], want)
		}
	}
}

func TestRecipesValid(t *testing.T) {
	for name, r := range Recipes {
		if err := r.Validate(); err != nil || r.Name != name {
			t.Errorf("recipe %s: %v", name, err)
		}
	}
	bad := []struct {
		name string
		mod  func(r *Recipe)
		want string
	}{
		{"root user", func(r *Recipe) { r.User = "0:0" }, "numeric non-root"},
		{"named user", func(r *Recipe) { r.User = "redis" }, "numeric non-root"},
		{"relative entrypoint", func(r *Recipe) { r.Entrypoint = []string{"redis-server"} }, "absolute program path"},
		{"bad package", func(r *Recipe) { r.Packages = []string{"Redis"} }, "not a Debian package name"},
		{"account with colon", func(r *Recipe) { r.Accounts = []Account{{Name: "a:b", UID: 5, GID: 5, Home: "/"}} }, "account"},
		{"relative dir", func(r *Recipe) { r.Dirs = []Dir{{Path: "var/x"}} }, "not absolute"},
	}
	for _, tt := range bad {
		r := *Recipes["redis"]
		tt.mod(&r)
		if err := r.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}

// realBuild builds a recipe from Debian's packages (the machine's apt index, .debs cached
// under CacheDir).
func realBuild(t *testing.T, recipe string) (v1.Image, []Deb) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds from Debian packages: skipped with -short")
	}
	for _, b := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		testdeps.Binary(t, b, "Debian's apt and dpkg")
	}
	img, debs, err := Build(context.Background(), ExecRunner, filepath.Join(CacheDir(), "debs"), Recipes[recipe])
	if errors.Is(err, ErrResolve) || errors.Is(err, ErrDownload) {
		testdeps.Missing(t, "Debian's packages (apt-get update, a reachable mirror or ~/.cache/sealpod/debimage/debs): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return img, debs
}

// unpack writes the image's files into a new directory, owners kept (root).
func unpack(t *testing.T, img v1.Image) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("tar", "-x", "--same-owner", "-C", dir)
	cmd.Stdin = mutate.Extract(img)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("unpack: %v: %s", err, out)
	}
	return dir
}

// TestRedisImageRuns builds the redis recipe twice from the real packages (same digest),
// then runs the image's redis-server as its user (chroot, uid 999) on a loopback port and
// talks RESP to it: the packages' closure is complete and the recipe's config works.
func TestRedisImageRuns(t *testing.T) {
	testdeps.Root(t, "chroot and uid 999")
	img, debs := realBuild(t, "redis")
	img2, _ := realBuild(t, "redis")
	if digest(t, img) != digest(t, img2) {
		t.Fatalf("two builds of %d packages: %s and %s", len(debs), digest(t, img), digest(t, img2))
	}
	t.Logf("redis image %s from %d packages", digest(t, img), len(debs))
	root := unpack(t, img)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	cfg, _ := img.ConfigFile()
	args := append([]string{"--userspec=" + cfg.Config.User, root}, cfg.Config.Entrypoint...)
	cmd := exec.Command("chroot", append(args, "--bind", "127.0.0.1", "--port", port)...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var conn net.Conn
	for i := 0; i < 100; i++ {
		if conn, err = net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if conn == nil {
		t.Fatalf("redis-server did not listen: %v\n%s", err, log.String())
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")); err != nil {
		t.Fatal(err)
	}
	want := "+OK\r\n$5\r\nvalue\r\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != want {
		t.Fatalf("SET/GET answered %q, %v; want %q\n%s", got, err, want, log.String())
	}
	if st, err := os.Stat(filepath.Join(root, "var/lib/redis")); err != nil || !st.IsDir() {
		t.Fatalf("/var/lib/redis: %v", err)
	}
}

// TestNginxImageServes runs the nginx recipe's image as uid 33 in a network namespace of its
// own (it listens on 8080 on every address) and fetches its page.
func TestNginxImageServes(t *testing.T) {
	testdeps.Root(t, "chroot, uid 33 and a network namespace")
	testdeps.Binary(t, "unshare", "util-linux")
	testdeps.Binary(t, "curl", "curl")
	img, debs := realBuild(t, "nginx")
	t.Logf("nginx image %s from %d packages", digest(t, img), len(debs))
	root := unpack(t, img)
	cfg, _ := img.ConfigFile()
	script := `ip link set lo up
chroot --userspec=` + cfg.Config.User + ` "$1" ` + strings.Join(cfg.Config.Entrypoint, " ") + ` &
pid=$!
for i in $(seq 50); do curl -sf http://127.0.0.1:8080/ && break; sleep 0.1; done
kill $pid; wait $pid`
	out, err := exec.Command("unshare", "--net", "sh", "-c", script, "sh", root).CombinedOutput()
	if !strings.Contains(string(out), "nginx from Debian's package") {
		t.Fatalf("nginx page not served: %v\n%s", err, out)
	}
}
