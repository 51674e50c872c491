// Command devregistry is the local OCI registry of the demo and the end-to-end suites
// (there is no Docker engine or public registry here). It serves the registry API on a
// loopback address, and packs a static binary into an image and pushes it.
//
//	devregistry serve --listen 127.0.0.1:5000 --dir out/registry
//	devregistry push-binary --binary bin/hello --ref 127.0.0.1:5000/sealpod/hello:1.0 [--user 65532:65532]
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path"
	"regexp"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: devregistry serve|push-binary [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "push-binary":
		err = pushBinary(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "devregistry:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:5000", "address to listen on (loopback)")
	dir := fs.String("dir", "", "store blobs in this directory (manifests stay in memory)")
	_ = fs.Parse(args)
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--listen %s: only loopback addresses", *listen)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	opts := []registry.Option{registry.Logger(slog.NewLogLogger(log.Handler(), slog.LevelDebug))}
	if *dir != "" {
		if err := os.MkdirAll(*dir, 0o755); err != nil {
			return err
		}
		opts = append(opts, registry.WithBlobHandler(registry.NewDiskBlobHandler(*dir)))
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: registry.New(opts...), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	log.Info("registry listening", "addr", ln.Addr().String())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

var numericUser = regexp.MustCompile(`^[0-9]{1,10}:[0-9]{1,10}$`)

func pushBinary(args []string) error {
	fs := flag.NewFlagSet("push-binary", flag.ExitOnError)
	bin := fs.String("binary", "", "static binary to pack")
	ref := fs.String("ref", "", "image reference to push to")
	entry := fs.String("path", "/hello", "path of the binary in the image (the entrypoint)")
	arch := fs.String("arch", "amd64", "the image's architecture (GOARCH of the binary: amd64, ppc64le)")
	user := fs.String("user", "", "the image's numeric user, uid:gid (e.g. 65532:65532 for Pod Security restricted's runAsNonRoot)")
	_ = fs.Parse(args)
	if *user != "" && !numericUser.MatchString(*user) {
		return fmt.Errorf("--user %q: want numeric uid:gid", *user)
	}
	data, err := os.ReadFile(*bin)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	p := path.Clean("/" + *entry)[1:]
	if err := tw.WriteHeader(&tar.Header{Name: p, Mode: 0o755, Size: int64(len(data)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(data); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	raw := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = *arch, "linux"
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.Entrypoint = []string{"/" + p}
	cfg.Config.User = *user
	cfg.History = nil
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	r, err := name.ParseReference(*ref, name.Insecure)
	if err != nil {
		return err
	}
	if err := remote.Write(r, img); err != nil {
		return err
	}
	d, _ := img.Digest()
	fmt.Println(r.Context().Name() + "@" + d.String())
	return nil
}
