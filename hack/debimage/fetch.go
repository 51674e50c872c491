package debimage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/sealpod/sealpod/guest-image/kernel"
)

// Errors callers may branch on: a .deb that does not match the apt index, and a download
// that failed (no network, a version gone from the mirror).
var (
	ErrChecksum = kernel.ErrChecksum
	ErrDownload = errors.New("package download failed")
)

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Deb is a package with its file in the cache, checked against the apt index.
type Deb struct {
	Package
	SHA256 string
	Path   string
}

// indexEntries looks up the packages' file names and SHA-256 in the apt index
// (`apt-cache show name:arch=version …`).
func indexEntries(ctx context.Context, run Runner, pkgs []Package) (map[Package]Deb, error) {
	args := []string{"show"}
	for _, p := range pkgs {
		args = append(args, aptSpec(p))
	}
	out, err := run(ctx, "/", "apt-cache", args...)
	if err != nil {
		return nil, fmt.Errorf("apt index: %w", err)
	}
	stanzas, err := kernel.ParseStanzas(out)
	if err != nil {
		return nil, err
	}
	want := map[Package]bool{}
	for _, p := range pkgs {
		want[p] = true
	}
	found := map[Package]Deb{}
	for _, s := range stanzas {
		p := Package{Name: s["Package"], Version: s["Version"], Arch: s["Architecture"]}
		if !want[p] {
			continue
		}
		base := path.Base(s["Filename"])
		if !sha256RE.MatchString(s["SHA256"]) || !strings.HasSuffix(base, ".deb") || !strings.HasPrefix(base, p.Name+"_") {
			return nil, fmt.Errorf("apt index entry of %s: file %q, sha256 %q", p, s["Filename"], s["SHA256"])
		}
		// apt-get download names the file name_version_arch.deb with the epoch's colon
		// escaped (libcap2_1%3a2.66-4_amd64.deb); the pool's name drops the epoch.
		file := p.Name + "_" + strings.ReplaceAll(p.Version, ":", "%3a") + "_" + p.Arch + ".deb"
		found[p] = Deb{Package: p, SHA256: s["SHA256"], Path: file}
	}
	for _, p := range pkgs {
		if _, ok := found[p]; !ok {
			return nil, fmt.Errorf("%w: %s (%s) is not in the apt index", ErrResolve, p, p.Arch)
		}
	}
	return found, nil
}

// Fetch returns the packages' .deb files in cacheDir, downloading (apt-get download) those
// not cached yet; every file is checked against the apt index's SHA-256, cached or not.
func Fetch(ctx context.Context, run Runner, cacheDir string, pkgs []Package) ([]Deb, error) {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("deb cache: %w", err)
	}
	entries, err := indexEntries(ctx, run, pkgs)
	if err != nil {
		return nil, err
	}
	var missing []Deb
	for _, p := range pkgs {
		d := entries[p]
		if err := kernel.VerifyFile(filepath.Join(cacheDir, d.Path), d.SHA256); err != nil {
			missing = append(missing, d)
		}
	}
	if len(missing) > 0 {
		tmp, err := os.MkdirTemp(cacheDir, ".download-")
		if err != nil {
			return nil, fmt.Errorf("deb cache: %w", err)
		}
		defer os.RemoveAll(tmp)
		args := []string{"download", "-q"}
		for _, d := range missing {
			args = append(args, aptSpec(d.Package))
		}
		if _, err := run(ctx, tmp, "apt-get", args...); err != nil {
			return nil, fmt.Errorf("%w: %d packages: %w", ErrDownload, len(missing), err)
		}
		for _, d := range missing {
			got := filepath.Join(tmp, d.Path)
			if err := kernel.VerifyFile(got, d.SHA256); err != nil {
				return nil, fmt.Errorf("apt-get download %s: %w", d.Package, err)
			}
			if err := os.Rename(got, filepath.Join(cacheDir, d.Path)); err != nil {
				return nil, fmt.Errorf("deb cache: %w", err)
			}
		}
	}
	out := make([]Deb, len(pkgs))
	for i, p := range pkgs {
		d := entries[p]
		d.Path = filepath.Join(cacheDir, d.Path)
		out[i] = d
	}
	return out, nil
}

// CacheDir is the default cache: $XDG_CACHE_HOME (or ~/.cache) then sealpod/debimage, with
// debs/ (downloaded packages) and images/ (built images, OCI layouts).
func CacheDir() string {
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "sealpod", "debimage")
}

// aptSpec names one version for apt: name:arch=version (name=version for arch all).
func aptSpec(p Package) string {
	if p.Arch == "all" {
		return p.String()
	}
	return p.Name + ":" + p.Arch + "=" + p.Version
}
