package kernel

import (
	"bufio"
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
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sealpod/sealpod/internal/atomicfile"
)

// The minimal guest kernel: Debian's linux-source-6.1 tarball, `make tinyconfig` plus
// MinimalConfig, built with fixed KBUILD_BUILD_* values so that the same source, fragment and
// compiler give the same bzImage bytes (docs/guest.md). Built once per key and cached.

// Defaults of the minimal kernel build.
const (
	DefaultSourcePackage = "linux-source-6.1"
	DefaultSourceTarball = "/usr/src/linux-source-6.1.tar.xz"
	// buildRecipe changes whenever the build steps below change, so old cache entries are
	// not reused for a different recipe.
	buildRecipe = "sealpod-minimal-kernel/1"
	// builtFile marks a complete cache entry (written last) and describes it.
	builtFile = "kernel.json"
)

// The fixed values kbuild embeds in the kernel instead of the time, user and host.
var reproducibleEnv = []string{
	"KBUILD_BUILD_TIMESTAMP=Thu Jan  1 00:00:00 UTC 1970",
	"KBUILD_BUILD_USER=sealpod",
	"KBUILD_BUILD_HOST=sealpod",
	"KBUILD_BUILD_VERSION=1",
	"LC_ALL=C",
	"TZ=UTC",
}

// env is the build environment: the reproducible values and the architecture's ARCH (and
// CROSS_COMPILE). A calling make's MAKEFLAGS are dropped: `make guest ARCH=ppc64le` puts
// ARCH=ppc64le into them, which the kernel's make would take over the ARCH given here.
func (o *BuildOptions) env() []string {
	var e []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "MAKEFLAGS", "MFLAGS", "GNUMAKEFLAGS", "MAKEOVERRIDES", "MAKELEVEL", "ARCH", "CROSS_COMPILE":
			continue
		}
		e = append(e, kv)
	}
	e = append(e, reproducibleEnv...)
	return append(e, o.Arch.spec().env...)
}

// BuildOptions describe one minimal kernel build.
type BuildOptions struct {
	// Tarball is the kernel source (default DefaultSourceTarball, from DefaultSourcePackage).
	Tarball string
	// SourcePackage is the Debian package the tarball comes from, recorded with its version
	// (default DefaultSourcePackage; "" with a Tarball given: none).
	SourcePackage string
	// Arch is the guest architecture (default ArchX86_64; ArchPPC64LE cross-compiles the
	// pseries kernel, whose image is the vmlinux ELF).
	Arch Arch
	// Fragment is applied on top of tinyconfig (default MinimalConfig, or
	// MinimalConfigPPC64LE for ppc64le).
	Fragment []byte
	// Patches are applied to the unpacked source first (default: DefaultPatches of Arch when
	// building from DefaultSourceTarball; none for another tarball, which they were not
	// written for).
	Patches []Patch
	// CacheDir holds the built kernels: <CacheDir>/<key>/{bzImage,config,kernel.json} and the
	// kept build tree <CacheDir>/<key>/build (variants are relinked from it: BuildBuiltin).
	CacheDir string
	// Jobs is make's -j (default the number of CPUs).
	Jobs int
	// NeedTree rebuilds a cached entry that did not keep its build tree (made before trees
	// were kept), so that a later BuildBuiltin never waits for a full build (`mkguest kernel`).
	NeedTree bool
	Log      *slog.Logger
}

// Built is a minimal kernel in the cache.
type Built struct {
	Dir string `json:"-"`
	// Key identifies the inputs: recipe, source tarball, fragment and compiler.
	Key            string `json:"key"`
	SourcePackage  string `json:"sourcePackage,omitempty"`
	SourceVersion  string `json:"sourceVersion,omitempty"`
	SourceSHA256   string `json:"sourceSHA256"`
	FragmentSHA256 string `json:"fragmentSHA256"`
	// PatchesSHA256 identifies the patches applied (PatchesSHA256; "" for none), Patches
	// names them in order.
	PatchesSHA256   string   `json:"patchesSHA256,omitempty"`
	Patches         []string `json:"patches,omitempty"`
	Compiler        string   `json:"compiler"`
	Release         string   `json:"release"`
	BzImageSHA256   string   `json:"bzImageSHA256"`
	BuildSeconds    int      `json:"buildSeconds"`
	FragmentOptions int      `json:"fragmentOptions"`
	// Tree is set when <Dir>/build holds the kept build tree (see treeBuildDir).
	Tree bool `json:"tree,omitempty"`
	// Arch is set for architectures other than x86_64 (entries without it are x86_64).
	Arch Arch `json:"arch,omitempty"`
}

// arch is the entry's architecture.
func (b *Built) arch() Arch {
	if b.Arch == "" {
		return ArchX86_64
	}
	return b.Arch
}

// BzImagePath is the kernel the guest boots: the bzImage (x86_64) or the vmlinux ELF
// (ppc64le); BzImageSHA256 is its SHA-256.
func (b *Built) BzImagePath() string { return filepath.Join(b.Dir, b.arch().spec().file) }

// ConfigPath is the kernel's full .config.
func (b *Built) ConfigPath() string { return filepath.Join(b.Dir, "config") }

// Describe is one line for logs and SOURCES.txt.
func (b *Built) Describe() string {
	src := b.SourcePackage + "=" + b.SourceVersion
	if b.SourcePackage == "" {
		src = "tarball sha256:" + b.SourceSHA256
	}
	inputs := "fragment sha256:" + b.FragmentSHA256[:16]
	if b.PatchesSHA256 != "" {
		inputs += fmt.Sprintf(", %d patches sha256:%s", len(b.Patches), b.PatchesSHA256[:16])
	}
	if b.arch() != ArchX86_64 {
		return fmt.Sprintf("sealpod-minimal %s %s from %s (%s, %s)", b.arch(), b.Release, src, inputs, b.Compiler)
	}
	return fmt.Sprintf("sealpod-minimal %s from %s (%s, %s)", b.Release, src, inputs, b.Compiler)
}

func (o *BuildOptions) defaults() error {
	defaultSource := o.Tarball == ""
	if defaultSource {
		o.Tarball = DefaultSourceTarball
		if o.SourcePackage == "" {
			o.SourcePackage = DefaultSourcePackage
		}
	}
	if o.Arch == "" {
		o.Arch = ArchX86_64
	}
	if o.Patches == nil && defaultSource {
		ps, err := DefaultPatches(o.Arch)
		if err != nil {
			return err
		}
		o.Patches = ps
	}
	if o.Fragment == nil {
		o.Fragment = o.Arch.spec().fragment
	}
	if o.Jobs <= 0 {
		o.Jobs = runtime.NumCPU()
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return nil
}

// DefaultKernelCacheDir is $XDG_CACHE_HOME/sealpod/kernel (or $HOME/.cache/sealpod/kernel).
func DefaultKernelCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("kernel cache directory: %w", err)
	}
	return filepath.Join(d, "sealpod", "kernel"), nil
}

// BuildMinimal returns the minimal kernel for the options, building it first when the cache
// does not hold it (about 10 minutes on 2 cores). Concurrent callers serialise on a lock, so
// parallel test binaries build it once.
func BuildMinimal(ctx context.Context, o BuildOptions) (*Built, error) {
	b, unlock, err := o.lockedBase(ctx, o.NeedTree)
	if err != nil {
		return nil, err
	}
	unlock()
	return b, nil
}

// lockedBase returns the cache entry for the options, building it when absent (or, with
// needTree, when it did not keep its build tree), with the cache lock held: the caller calls
// unlock when done with the entry.
func (o *BuildOptions) lockedBase(ctx context.Context, needTree bool) (*Built, func(), error) {
	if err := o.defaults(); err != nil {
		return nil, nil, err
	}
	if o.CacheDir == "" {
		d, err := DefaultKernelCacheDir()
		if err != nil {
			return nil, nil, err
		}
		o.CacheDir = d
	}
	if _, err := ParseArch(string(o.Arch)); err != nil {
		return nil, nil, fmt.Errorf("minimal kernel: %w", err)
	}
	if _, err := ParseKconfig(o.Fragment); err != nil {
		return nil, nil, fmt.Errorf("minimal kernel: %w", err)
	}
	want, err := o.identify(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("kernel cache %s: %w", o.CacheDir, err)
	}
	unlock, err := lock(filepath.Join(o.CacheDir, o.Arch.spec().lockFile))
	if err != nil {
		return nil, nil, err
	}
	want.Dir = filepath.Join(o.CacheDir, want.Key)
	b, err := openBuilt(want.Dir)
	switch {
	case err == nil && (!needTree || b.HasTree()):
		return b, unlock, nil
	case err == nil:
		o.Log.Warn("kernel cache: the entry has no build tree to derive variants from; building it again", "dir", want.Dir)
	case !errors.Is(err, os.ErrNotExist):
		o.Log.Warn("kernel cache: rebuilding an unusable entry", "dir", want.Dir, "err", err)
	}
	if b, err = o.build(ctx, want); err != nil {
		unlock()
		return nil, nil, err
	}
	return b, unlock, nil
}

// identify computes the cache key from everything that goes into the kernel's bytes.
func (o *BuildOptions) identify(ctx context.Context) (*Built, error) {
	f, err := os.Open(o.Tarball)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && o.SourcePackage != "" {
			return nil, fmt.Errorf("minimal kernel: source %s: %w (install the Debian package %s: make deps)", o.Tarball, err, o.SourcePackage)
		}
		return nil, fmt.Errorf("minimal kernel: source: %w", err)
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("minimal kernel: read %s: %w", o.Tarball, err)
	}
	b := &Built{SourcePackage: o.SourcePackage, SourceSHA256: hex.EncodeToString(h.Sum(nil))}
	b.FragmentSHA256 = sha256Hex(o.Fragment)
	b.PatchesSHA256 = PatchesSHA256(o.Patches)
	for _, p := range o.Patches {
		b.Patches = append(b.Patches, p.Name)
	}
	if b.SourcePackage != "" {
		out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Version}", b.SourcePackage).Output()
		if err != nil {
			return nil, fmt.Errorf("minimal kernel: version of %s: %w", b.SourcePackage, err)
		}
		b.SourceVersion = strings.TrimSpace(string(out))
	}
	spec := o.Arch.spec()
	out, err := exec.CommandContext(ctx, spec.compiler, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("minimal kernel: %s --version: %w (install %s: make deps)", spec.compiler, err, spec.compilerPackage)
	}
	b.Compiler, _, _ = strings.Cut(string(out), "\n")
	if o.Arch != ArchX86_64 {
		b.Arch = o.Arch
	}
	in := []string{spec.recipe, b.SourceSHA256, b.FragmentSHA256, b.Compiler}
	if b.PatchesSHA256 != "" { // without patches the key stays that of before patches existed
		in = append(in, "patches "+b.PatchesSHA256)
	}
	k := sha256.Sum256([]byte(strings.Join(in, "\n")))
	b.Key = hex.EncodeToString(k[:12])
	return b, nil
}

func openBuilt(dir string) (*Built, error) {
	data, err := os.ReadFile(filepath.Join(dir, builtFile))
	if err != nil {
		return nil, err
	}
	b := &Built{}
	if err := json.Unmarshal(data, b); err != nil {
		return nil, fmt.Errorf("%s: %w", builtFile, err)
	}
	b.Dir = dir
	img, err := os.ReadFile(b.BzImagePath())
	if err != nil {
		return nil, err
	}
	if sha256Hex(img) != b.BzImageSHA256 {
		return nil, fmt.Errorf("bzImage: sha256 differs from %s", builtFile)
	}
	return b, nil
}

// The kept build tree of a cache entry: <dir>/build is the O= output directory of the base
// kernel, kept so that variants (BuildBuiltin) recompile only what their options change and
// relink; <dir>/src is the unpacked source, which the build tree names by absolute path. The
// source is removed after each build (1.5 GB; unpacking it again takes ~25 s) and unpacked to
// the same path when a variant needs it.
const (
	treeBuildDir = "build"
	treeSrcDir   = "src"
)

// HasTree reports whether the entry kept its build tree (entries built before the tree was
// kept have only bzImage, config and kernel.json).
func (b *Built) HasTree() bool {
	if !b.Tree {
		return false
	}
	_, err := os.Stat(filepath.Join(b.Dir, treeBuildDir, ".config"))
	return err == nil
}

// build unpacks the source into <dir>/src, configures <dir>/build, checks the configuration
// and builds bzImage there; bzImage and config are copied next to them, kernel.json is written
// last, and the source is removed again (the build tree stays, see treeBuildDir).
func (o *BuildOptions) build(ctx context.Context, b *Built) (*Built, error) {
	start := time.Now()
	if err := os.RemoveAll(b.Dir + ".work"); err != nil { // the layout of older versions
		return nil, fmt.Errorf("minimal kernel: %w", err)
	}
	if err := os.RemoveAll(b.Dir); err != nil {
		return nil, fmt.Errorf("minimal kernel: %w", err)
	}
	src, obj := filepath.Join(b.Dir, treeSrcDir), filepath.Join(b.Dir, treeBuildDir)
	for _, d := range []string{src, obj} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("minimal kernel: %w", err)
		}
	}
	o.Log.Info("minimal kernel: building once (about 10 minutes on 2 cores; cached afterwards)", "key", b.Key, "dir", b.Dir)
	logPath := filepath.Join(b.Dir, "build.log")
	run, logf, err := o.runner(ctx, logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	if err := o.unpack(run, src); err != nil {
		return nil, err
	}
	if err := applyPatches(run, src, b.Dir, o.Patches); err != nil {
		return nil, err
	}
	fragPath := filepath.Join(b.Dir, "fragment.config")
	if err := os.WriteFile(fragPath, o.Fragment, 0o644); err != nil {
		return nil, fmt.Errorf("minimal kernel: %w", err)
	}
	mk := makeArgs(src, obj)
	if err := o.baseConfig(run, src, obj, b.Dir); err != nil {
		return nil, err
	}
	if err := run("merge fragment", filepath.Join(src, "scripts/kconfig/merge_config.sh"), "-m", "-O", obj, filepath.Join(obj, ".config"), fragPath); err != nil {
		return nil, err
	}
	if err := run("olddefconfig", "make", mk("olddefconfig")...); err != nil {
		return nil, err
	}
	final, err := checkedConfig(obj, o.Fragment)
	if err != nil {
		return nil, err
	}
	frag, _ := ParseKconfig(o.Fragment)
	b.FragmentOptions = len(frag)

	img, release, err := o.makeBzImage(ctx, run, src, obj, logPath, start)
	if err != nil {
		return nil, err
	}
	b.Release = release
	b.BzImageSHA256 = sha256Hex(img)
	b.BuildSeconds = int(time.Since(start).Seconds())
	b.Tree = true
	meta, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{o.Arch.spec().file, img}, {"config", final}, {builtFile, append(meta, '\n')}} {
		if err := atomicfile.Write(filepath.Join(b.Dir, f.name), f.data, 0o644); err != nil {
			return nil, fmt.Errorf("minimal kernel: %w", err)
		}
	}
	logf.Close()
	if err := os.RemoveAll(src); err != nil {
		o.Log.Warn("minimal kernel: could not remove the unpacked source", "dir", src, "err", err)
	}
	o.Log.Info("minimal kernel built", "release", b.Release, "bzImageBytes", len(img), "sha256", b.BzImageSHA256, "elapsed", time.Since(start).Round(time.Second))
	return b, nil
}

// runner creates the build log at logPath and returns a function that runs one build step
// with the reproducible environment, its output appended to that log (whose tail an error
// carries). The caller closes the log.
func (o *BuildOptions) runner(ctx context.Context, logPath string) (func(what, name string, args ...string) error, io.Closer, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, nil, fmt.Errorf("minimal kernel: %w", err)
	}
	return func(what, name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = o.env()
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("minimal kernel: %s: %w\n%s", what, err, tail(logPath, 20))
		}
		return nil
	}, logf, nil
}

// unpack extracts the source tarball into dir (which must exist).
func (o *BuildOptions) unpack(run func(what, name string, args ...string) error, dir string) error {
	return run("unpack "+o.Tarball, "tar", "-xJf", o.Tarball, "-C", dir, "--strip-components=1", "--no-same-owner")
}

func makeArgs(src, obj string) func(args ...string) []string {
	return func(args ...string) []string { return append([]string{"-C", src, "O=" + obj}, args...) }
}

// checkedConfig reads obj/.config and checks that every option of the fragment kept its value.
func checkedConfig(obj string, fragment []byte) ([]byte, error) {
	final, err := os.ReadFile(filepath.Join(obj, ".config"))
	if err != nil {
		return nil, fmt.Errorf("minimal kernel: %w", err)
	}
	bad, err := CheckKconfig(fragment, final)
	if err != nil {
		return nil, fmt.Errorf("minimal kernel: %w", err)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("minimal kernel: the configuration lost %d option(s) of the fragment:\n  %s", len(bad), strings.Join(bad, "\n  "))
	}
	return final, nil
}

// makeBzImage runs `make bzImage` (ppc64le: `make vmlinux`) in obj (with progress logs) and
// returns the image and the kernel release.
func (o *BuildOptions) makeBzImage(ctx context.Context, run func(what, name string, args ...string) error, src, obj, logPath string, start time.Time) ([]byte, string, error) {
	mk := makeArgs(src, obj)
	spec := o.Arch.spec()
	stop := o.progress(logPath, start)
	err := run("make "+spec.target, "make", mk(fmt.Sprintf("-j%d", o.Jobs), spec.target)...)
	stop()
	if err != nil {
		return nil, "", err
	}
	cmd := exec.CommandContext(ctx, "make", mk("-s", "kernelrelease")...)
	cmd.Env = o.env()
	out, err := cmd.Output()
	if err != nil {
		return nil, "", fmt.Errorf("minimal kernel: kernelrelease: %w", err)
	}
	release := strings.TrimSpace(string(out))
	if !releaseRE.MatchString(release) {
		return nil, "", fmt.Errorf("minimal kernel: kernelrelease %q: not a kernel release", release)
	}
	img, err := os.ReadFile(filepath.Join(obj, spec.image))
	if err != nil {
		return nil, "", fmt.Errorf("minimal kernel: %w", err)
	}
	if err := spec.check(img); err != nil {
		return nil, "", fmt.Errorf("minimal kernel: %s: %w", spec.image, err)
	}
	return img, release, nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// progress logs the build's advance every 30 s until stopped.
func (o *BuildOptions) progress(logPath string, start time.Time) (stop func()) {
	done := make(chan struct{})
	var stopped atomic.Bool
	go func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				o.Log.Info("minimal kernel: building", "elapsed", time.Since(start).Round(time.Second), "objects", countLines(logPath, "  CC "))
			}
		}
	}()
	return func() {
		if stopped.CompareAndSwap(false, true) {
			close(done)
		}
	}
}

func countLines(name, prefix string) int {
	f, err := os.Open(name)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			n++
		}
	}
	return n
}

// tail returns the last n lines of a file, for build errors.
func tail(name string, n int) string {
	data, err := os.ReadFile(name)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
