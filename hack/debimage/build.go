package debimage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// PackageList is where an image lists its packages (name version arch sha256 per line).
const PackageList = "/usr/share/sealpod/debimage-packages"

// DefaultPath is the image's PATH.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// DataReader returns a package's data tar (uncompressed).
type DataReader func(Deb) ([]byte, error)

// DpkgData reads a .deb's data tar with dpkg-deb --fsys-tarfile.
func DpkgData(ctx context.Context, run Runner) DataReader {
	return func(d Deb) ([]byte, error) {
		out, err := run(ctx, "/", "dpkg-deb", "--fsys-tarfile", d.Path)
		if err != nil {
			return nil, fmt.Errorf("package %s: %w", d.Package, err)
		}
		return out, nil
	}
}

// Build resolves, fetches and assembles the recipe's image; .debs are cached in cacheDir.
func Build(ctx context.Context, run Runner, cacheDir string, r *Recipe) (v1.Image, []Deb, error) {
	if err := r.Validate(); err != nil {
		return nil, nil, err
	}
	roots := append(append([]string{}, BasePackages...), r.Packages...)
	pkgs, err := Resolve(ctx, run, roots, append(append([]string{}, DefaultExclude...), r.Exclude...))
	if err != nil {
		return nil, nil, fmt.Errorf("recipe %s: %w", r.Name, err)
	}
	debs, err := Fetch(ctx, run, cacheDir, pkgs)
	if err != nil {
		return nil, nil, fmt.Errorf("recipe %s: %w", r.Name, err)
	}
	img, err := Assemble(r, debs, DpkgData(ctx, run))
	if err != nil {
		return nil, nil, err
	}
	return img, debs, nil
}

// Assemble builds the image from the packages' data: layer 1 the packages' files (merged
// /usr, without documentation), layer 2 the recipe's accounts, directories, files and the
// package list; the config runs the recipe's entrypoint as its numeric user.
func Assemble(r *Recipe, debs []Deb, data DataReader) (v1.Image, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	debs = append([]Deb{}, debs...)
	sort.Slice(debs, func(i, j int) bool { return debs[i].Name < debs[j].Name })
	pkgTree := NewTree()
	arch := ""
	var list strings.Builder
	for _, d := range debs {
		b, err := data(d)
		if err != nil {
			return nil, err
		}
		if err := pkgTree.AddTar(bytes.NewReader(b), d.Name); err != nil {
			return nil, fmt.Errorf("recipe %s: %w", r.Name, err)
		}
		if d.Arch != "all" {
			if arch != "" && arch != d.Arch {
				return nil, fmt.Errorf("recipe %s: packages of two architectures (%s, %s)", r.Name, arch, d.Arch)
			}
			arch = d.Arch
		}
		fmt.Fprintf(&list, "%s %s %s %s\n", d.Name, d.Version, d.Arch, d.SHA256)
	}
	if arch == "" {
		return nil, fmt.Errorf("recipe %s: no architecture-specific package (libc6 missing?)", r.Name)
	}

	extra := NewTree()
	pw, gr := r.passwd()
	steps := []error{
		extra.AddFile("/etc/passwd", 0o644, 0, 0, []byte(pw)),
		extra.AddFile("/etc/group", 0o644, 0, 0, []byte(gr)),
		extra.AddDir("/tmp", 0o1777, 0, 0),
		extra.AddFile(PackageList, 0o644, 0, 0, []byte(list.String())),
	}
	for _, d := range r.Dirs {
		steps = append(steps, extra.AddDir(d.Path, d.Mode, d.UID, d.GID))
	}
	for _, f := range r.Files {
		steps = append(steps, extra.AddFile(f.Path, f.Mode, f.UID, f.GID, []byte(f.Data)))
	}
	for _, err := range steps {
		if err != nil {
			return nil, fmt.Errorf("recipe %s: %w", r.Name, err)
		}
	}

	img := empty.Image
	for i, t := range []*Tree{pkgTree, extra} {
		var buf bytes.Buffer
		if err := t.WriteTar(&buf, i == 0); err != nil {
			return nil, fmt.Errorf("recipe %s: layer %d: %w", r.Name, i+1, err)
		}
		raw := buf.Bytes()
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil },
			tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			return nil, err
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = arch, "linux"
	cfg.Created = v1.Time{Time: Epoch}
	cfg.History = nil
	cfg.Config.Entrypoint = r.Entrypoint
	cfg.Config.Cmd = r.Cmd
	cfg.Config.User = r.User
	cfg.Config.WorkingDir = r.WorkingDir
	cfg.Config.Env = append([]string{DefaultPath}, r.Env...)
	if len(r.Ports) > 0 {
		cfg.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range r.Ports {
			cfg.Config.ExposedPorts[p] = struct{}{}
		}
	}
	cfg.Config.Labels = map[string]string{
		"io.sealpod.debimage.recipe":         r.Name,
		"org.opencontainers.image.base.name": "debian packages (" + PackageList + ")",
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return nil, err
	}
	return mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON), nil
}
