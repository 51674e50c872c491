package kernel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// sourceFile marks a complete unpacked tree and records where it came from.
const sourceFile = ".sealpod-source.json"

// ErrChecksum is returned when a downloaded package does not match the apt index.
var ErrChecksum = errors.New("checksum mismatch")

// DefaultCacheDir returns $XDG_CACHE_HOME/sealpod/guest (or $HOME/.cache/sealpod/guest).
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("guest cache directory: %w", err)
	}
	return filepath.Join(d, "sealpod", "guest"), nil
}

// Cache holds downloaded and unpacked kernel packages.
type Cache struct {
	Dir string
	Log *slog.Logger // nil = slog.Default()
}

func (c *Cache) log() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.Default()
}

func (c *Cache) treeDir(p Package) string {
	return filepath.Join(c.Dir, "trees", p.Name+"_"+strings.ReplaceAll(p.Version, ":", "%3a"))
}

// Prepare returns the unpacked tree of the package, downloading and unpacking it if the cache
// does not hold it yet. A package with an empty SHA256 (a pin) is served from the cache if
// present; otherwise it is looked up in the apt index first. Concurrent callers (several test
// binaries, `make guest`) serialise on a lock file.
func (c *Cache) Prepare(ctx context.Context, p Package) (*Tree, error) {
	if !pkgNameRE.MatchString(p.Name) || !pkgVersionRE.MatchString(p.Version) {
		return nil, fmt.Errorf("kernel package %q: invalid name or version", p.String())
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("guest cache %s: %w", c.Dir, err)
	}
	unlock, err := lock(filepath.Join(c.Dir, ".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	dir := c.treeDir(p)
	if t, err := openCached(dir, p); err == nil {
		return t, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		c.log().Warn("guest cache: discarding unusable tree", "dir", dir, "err", err)
	}
	if p.SHA256 == "" {
		if p, err = Lookup(ctx, p); err != nil {
			return nil, err
		}
	}
	deb, err := c.fetch(ctx, p)
	if err != nil {
		return nil, err
	}
	return c.unpack(ctx, p, deb, dir)
}

func openCached(dir string, p Package) (*Tree, error) {
	raw, err := os.ReadFile(filepath.Join(dir, sourceFile))
	if err != nil {
		return nil, err
	}
	var src Package
	if err := json.Unmarshal(raw, &src); err != nil {
		return nil, fmt.Errorf("%s: %w", sourceFile, err)
	}
	if src.Name != p.Name || src.Version != p.Version || (p.SHA256 != "" && src.SHA256 != p.SHA256) {
		return nil, fmt.Errorf("%s: records %s (sha256 %s), want %s (sha256 %s)", sourceFile, src, src.SHA256, p, p.SHA256)
	}
	return OpenTree(dir, src)
}

// Cached lists the packages whose unpacked trees are complete in the cache, sorted by
// directory name.
func (c *Cache) Cached() ([]Package, error) {
	ents, err := os.ReadDir(filepath.Join(c.Dir, "trees"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("guest cache: %w", err)
	}
	var out []Package
	for _, e := range ents {
		raw, err := os.ReadFile(filepath.Join(c.Dir, "trees", e.Name(), sourceFile))
		if err != nil {
			continue // incomplete or foreign directory
		}
		var p Package
		if json.Unmarshal(raw, &p) == nil && pkgNameRE.MatchString(p.Name) && pkgVersionRE.MatchString(p.Version) {
			out = append(out, p)
		}
	}
	return out, nil
}

// fetch returns the path of the verified .deb in the cache, downloading it if needed.
func (c *Cache) fetch(ctx context.Context, p Package) (string, error) {
	debs := filepath.Join(c.Dir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", fmt.Errorf("guest cache %s: %w", debs, err)
	}
	base := path.Base(p.Filename)
	if base == "." || base == "/" || !strings.HasSuffix(base, ".deb") || strings.ContainsAny(base, "\x00") {
		return "", fmt.Errorf("kernel package %s: file name %q: not a .deb", p, p.Filename)
	}
	dst := filepath.Join(debs, base)
	if err := VerifyFile(dst, p.SHA256); err == nil {
		return dst, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		c.log().Warn("guest cache: re-downloading", "deb", dst, "err", err)
	}
	tmp, err := os.MkdirTemp(debs, ".download-")
	if err != nil {
		return "", fmt.Errorf("guest cache %s: %w", debs, err)
	}
	defer os.RemoveAll(tmp)
	c.log().Info("downloading kernel package", "package", p.String())
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", p.String())
	cmd.Dir = tmp
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("apt-get download %s: %w: %s: %w", p, err, strings.TrimSpace(out.String()), ErrDownload)
	}
	got := filepath.Join(tmp, base)
	if err := VerifyFile(got, p.SHA256); err != nil {
		return "", fmt.Errorf("apt-get download %s: %w", p, err)
	}
	f, err := os.Open(got)
	if err != nil {
		return "", err
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return "", fmt.Errorf("sync %s: %w", got, err)
	}
	if err := os.Rename(got, dst); err != nil {
		return "", fmt.Errorf("guest cache: %w", err)
	}
	return dst, nil
}

// VerifyFile checks that the file name has the SHA-256 want (lowercase hex), as an apt index
// lists it for a package; a mismatch wraps ErrChecksum.
func VerifyFile(name, want string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%s: sha256 %s, apt index says %s: %w", name, got, want, ErrChecksum)
	}
	return nil
}

// unpack extracts the .deb into dir (via a temporary sibling and a rename).
func (c *Cache) unpack(ctx context.Context, p Package, deb, dir string) (*Tree, error) {
	trees := filepath.Dir(dir)
	if err := os.MkdirAll(trees, 0o755); err != nil {
		return nil, fmt.Errorf("guest cache %s: %w", trees, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("guest cache: remove stale %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(trees, ".unpack-")
	if err != nil {
		return nil, fmt.Errorf("guest cache %s: %w", trees, err)
	}
	defer os.RemoveAll(tmp)
	c.log().Info("unpacking kernel package", "deb", deb)
	cmd := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("dpkg-deb -x %s: %w: %s", deb, err, strings.TrimSpace(string(out)))
	}
	t, err := OpenTree(tmp, p)
	if err != nil {
		return nil, fmt.Errorf("kernel package %s: %w", p, err)
	}
	src, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	if err := writeFileSync(filepath.Join(tmp, sourceFile), src); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("guest cache: %w", err)
	}
	t.Root = dir
	return t, nil
}

func writeFileSync(name string, data []byte) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", name, err)
	}
	return f.Close()
}

func lock(name string) (func(), error) {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("guest cache lock %s: %w", name, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("guest cache lock %s: %w", name, err)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}
