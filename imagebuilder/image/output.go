package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RegistryOptions says how to reach a registry.
type RegistryOptions struct {
	// Insecure allows plain HTTP (test and local registries).
	Insecure bool
	// Keychain supplies credentials; nil means the usual docker config
	// (~/.docker/config.json, DOCKER_CONFIG, credential helpers).
	Keychain authn.Keychain
}

func (o RegistryOptions) nameOpts() []name.Option {
	if o.Insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

func (o RegistryOptions) remoteOpts(ctx context.Context) []remote.Option {
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	return []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc)}
}

// ParseReference parses an image reference with the registry options applied.
func ParseReference(ref string, o RegistryOptions) (name.Reference, error) {
	r, err := name.ParseReference(ref, o.nameOpts()...)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", ref, err)
	}
	return r, nil
}

// Push uploads img to ref and returns the pushed reference pinned by digest. When progress
// is not nil, it receives a progress bar.
func Push(ctx context.Context, ref string, img v1.Image, o RegistryOptions, progress io.Writer) (name.Digest, error) {
	r, err := ParseReference(ref, o)
	if err != nil {
		return name.Digest{}, err
	}
	opts := o.remoteOpts(ctx)
	var done chan struct{}
	if progress != nil {
		updates := make(chan v1.Update, 64)
		done = make(chan struct{})
		go func() {
			defer close(done)
			drawProgress(progress, "push "+r.Context().Name(), updates)
		}()
		opts = append(opts, remote.WithProgress(updates))
	}
	err = remote.Write(r, img, opts...)
	if done != nil {
		<-done
	}
	if err != nil {
		return name.Digest{}, fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return name.Digest{}, err
	}
	return r.Context().Digest(d.String()), nil
}

// drawProgress renders updates as a one-line bar until the channel closes.
func drawProgress(w io.Writer, label string, updates <-chan v1.Update) {
	var last time.Time
	var u v1.Update
	for u = range updates {
		if u.Error != nil {
			break
		}
		if time.Since(last) < 100*time.Millisecond && u.Complete < u.Total {
			continue
		}
		last = time.Now()
		fmt.Fprintf(w, "\r%s", progressLine(label, u.Complete, u.Total))
	}
	for range updates { // drain after an error
	}
	fmt.Fprintf(w, "\r%s\n", progressLine(label, u.Complete, u.Total))
}

func progressLine(label string, done, total int64) string {
	const width = 30
	frac := 0.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	frac = min(max(frac, 0), 1)
	n := int(frac * width)
	bar := make([]byte, width)
	for i := range bar {
		switch {
		case i < n:
			bar[i] = '='
		case i == n:
			bar[i] = '>'
		default:
			bar[i] = ' '
		}
	}
	return fmt.Sprintf("%s [%s] %3.0f%% %s/%s", label, bar, frac*100, humanBytes(done), humanBytes(total))
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

// WriteLayout writes img as an OCI image layout at dir, replacing what was there only once
// the new layout is complete. refName (may be empty) is recorded as the
// org.opencontainers.image.ref.name annotation.
func WriteLayout(dir string, img v1.Image, refName string) error {
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("write OCI layout %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return fmt.Errorf("write OCI layout %s: %w", dir, err)
	}
	defer os.RemoveAll(tmp)
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return fmt.Errorf("write OCI layout %s: %w", dir, err)
	}
	var opts []layout.Option
	if refName != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": refName}))
	}
	if err := p.AppendImage(img, opts...); err != nil {
		return fmt.Errorf("write OCI layout %s: %w", dir, err)
	}
	if err := syncTree(tmp); err != nil {
		return fmt.Errorf("write OCI layout %s: %w", dir, err)
	}
	old := ""
	if _, err := os.Stat(dir); err == nil {
		old = tmp + ".old"
		if err := os.Rename(dir, old); err != nil {
			return fmt.Errorf("write OCI layout %s: %w", dir, err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if old != "" {
			_ = os.Rename(old, dir)
		}
		return fmt.Errorf("write OCI layout %s: %w", dir, err)
	}
	if old != "" {
		_ = os.RemoveAll(old)
	}
	return nil
}

func syncTree(root string) error {
	return filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}

// WriteTarball writes img as an OCI archive (a tar of an OCI image layout, loadable with
// `ctr images import` and skopeo's oci-archive transport), atomically. Unlike a
// docker-archive it keeps the OCI manifest, so the image digest pinned in the sealed
// manifests stays the same.
func WriteTarball(file string, img v1.Image, ref string) error {
	stage, err := os.MkdirTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-")
	if err != nil {
		return fmt.Errorf("write OCI archive %s: %w", file, err)
	}
	defer os.RemoveAll(stage)
	lay := filepath.Join(stage, "layout")
	if err := WriteLayout(lay, img, ref); err != nil {
		return fmt.Errorf("write OCI archive %s: %w", file, err)
	}
	tmp := filepath.Join(stage, "archive.tar")
	if err := tarDir(lay, tmp); err != nil {
		return fmt.Errorf("write OCI archive %s: %w", file, err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("write OCI archive %s: %w", file, err)
	}
	return nil
}

// tarDir writes the regular files and directories below root into a tar file, sorted,
// with fixed metadata, and fsyncs it.
func tarDir(root, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		h := &tar.Header{Name: rel, ModTime: epoch, Uname: "root", Gname: "root", Format: tar.FormatPAX}
		if d.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, rel+"/", 0o755
			return tw.WriteHeader(h)
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, st.Size()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Sync()
}

// untarLayout unpacks an OCI archive into dir, refusing absolute paths, "..", links and
// special files.
func untarLayout(file, dir string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.FromSlash(h.Name)
		if !filepath.IsLocal(name) {
			return fmt.Errorf("entry %q escapes the archive", h.Name)
		}
		dst := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("entry %q: type %c not allowed in an OCI archive", h.Name, h.Typeflag)
		}
	}
}

// LoadLayout opens the one image of an OCI layout directory; a layout holding any other
// number of images is refused.
func LoadLayout(dir string) (v1.Image, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(m.Manifests) != 1 {
		return nil, fmt.Errorf("%d images, want exactly 1", len(m.Manifests))
	}
	return p.Image(m.Manifests[0].Digest)
}

// Load opens a secure image from an OCI layout directory, an OCI archive file or a registry
// reference. The returned cleanup function removes any temporary files; call it when done
// with the image.
func Load(ctx context.Context, src string, o RegistryOptions) (v1.Image, func(), error) {
	noop := func() {}
	if st, err := os.Stat(src); err == nil {
		if st.IsDir() {
			img, err := LoadLayout(src)
			if err != nil {
				return nil, noop, fmt.Errorf("open OCI layout %s: %w", src, err)
			}
			return img, noop, nil
		}
		tmp, err := os.MkdirTemp("", "sealpod-oci-archive-")
		if err != nil {
			return nil, noop, err
		}
		cleanup := func() { os.RemoveAll(tmp) }
		if err := untarLayout(src, tmp); err != nil {
			cleanup()
			return nil, noop, fmt.Errorf("open OCI archive %s: %w", src, err)
		}
		img, err := LoadLayout(tmp)
		if err != nil {
			cleanup()
			return nil, noop, fmt.Errorf("open OCI archive %s: %w", src, err)
		}
		return img, cleanup, nil
	}
	r, err := ParseReference(src, o)
	if err != nil {
		return nil, noop, err
	}
	img, err := remote.Image(r, o.remoteOpts(ctx)...)
	if err != nil {
		return nil, noop, fmt.Errorf("pull %s: %w", src, err)
	}
	return img, noop, nil
}

// Resolve returns the digest of the manifest a reference points at (HEAD request, falling
// back to GET for registries that do not answer HEAD).
func Resolve(ctx context.Context, ref name.Reference, o RegistryOptions) (v1.Hash, error) {
	desc, err := remote.Head(ref, o.remoteOpts(ctx)...)
	if err == nil {
		return desc.Digest, nil
	}
	d, gerr := remote.Get(ref, o.remoteOpts(ctx)...)
	if gerr != nil {
		return v1.Hash{}, fmt.Errorf("resolve %s: %w", ref, gerr)
	}
	return d.Digest, nil
}
