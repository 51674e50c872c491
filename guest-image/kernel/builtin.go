package kernel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A built-in variant of the minimal kernel: the initramfs (the agent) and the command line
// built into the kernel (CONFIG_INITRAMFS_SOURCE, CONFIG_CMDLINE + CMDLINE_OVERRIDE), so that
// the one digest TDVF takes of the kernel (RTMR[1]) covers all three on a Linux < 6.9, whose
// EFI stub measures neither a separate initrd nor the command line (docs/measurements.md).
//
// It is derived from the base build's kept tree (<entry>/build): the options are set in its
// .config and `make bzImage` recompiles only what depends on them (usr/initramfs_data.o,
// arch/x86/kernel/setup.o, the EFI stub, init/version.o) and relinks, in a couple of minutes
// instead of a full build. The variant is built in place — kbuild's objtool and .cmd files name
// the tree by absolute path, so a copy elsewhere would recompile everything — after the tree
// is saved as <entry>/build.base, which is moved back afterwards: every variant starts from the
// same pristine base tree, so the same inputs give the same bytes.

// Errors of BuildBuiltin callers may branch on.
var (
	ErrBuiltinInitramfs = errors.New("built-in initramfs: not an uncompressed newc cpio archive")
	ErrBuiltinCmdline   = errors.New("built-in command line: unusable")
)

// Limits of a built-in variant.
const (
	// MaxBuiltinCmdline is x86's COMMAND_LINE_SIZE (2048) less the terminating NUL.
	MaxBuiltinCmdline = 2047
	// MaxBuiltinInitramfs bounds the archive built into the kernel (initrd.MaxSize).
	MaxBuiltinInitramfs = 32 << 20
	// builtinInitramfsFile is where the archive is written in the build tree; the name must
	// end in .cpio for kbuild to take it as an archive (usr/Makefile).
	builtinInitramfsFile = "sealpod-initramfs.cpio"
	baseSaveDir          = treeBuildDir + ".base"
)

// Builtin is what a variant builds into the kernel.
type Builtin struct {
	// Initramfs is an uncompressed newc cpio archive (the bzImage is compressed as a whole).
	Initramfs []byte
	// Cmdline is the built-in command line. CMDLINE_OVERRIDE makes the kernel ignore the boot
	// loader's; it must contain the word "noinitrd", which makes the 6.1 EFI stub load no
	// host-supplied initrd (LINUX_EFI_INITRD_MEDIA) on top of the built-in one.
	Cmdline string
}

// Variant is a minimal kernel with a built-in initramfs and command line.
type Variant struct {
	// Base is the cache entry the variant was derived from.
	Base            *Built
	Image           []byte
	Config          []byte
	Release         string
	BzImageSHA256   string
	InitramfsSHA256 string
	Cmdline         string
	BuildSeconds    int
}

// Describe is one line for logs and SOURCES.txt.
func (v *Variant) Describe() string {
	return fmt.Sprintf("%s with built-in initramfs sha256:%s and command line %q", v.Base.Describe(), v.InitramfsSHA256[:16], v.Cmdline)
}

// Validate checks the archive and the command line before anything is built.
func (v Builtin) Validate() error {
	if len(v.Initramfs) < 110 || !bytes.HasPrefix(v.Initramfs, []byte("070701")) {
		return fmt.Errorf("%w (want the magic 070701; build it with initrd.CompressNone)", ErrBuiltinInitramfs)
	}
	if len(v.Initramfs) > MaxBuiltinInitramfs {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrBuiltinInitramfs, len(v.Initramfs), MaxBuiltinInitramfs)
	}
	c := v.Cmdline
	if c == "" || len(c) > MaxBuiltinCmdline {
		return fmt.Errorf("%w: %d bytes, want 1 to %d", ErrBuiltinCmdline, len(c), MaxBuiltinCmdline)
	}
	for i := 0; i < len(c); i++ {
		if c[i] < 0x20 || c[i] > 0x7e || c[i] == '"' || c[i] == '\\' {
			return fmt.Errorf("%w: byte %d is %q (printable ASCII without '\"' and '\\' only)", ErrBuiltinCmdline, i, c[i])
		}
	}
	if !slices.Contains(strings.Fields(c), "noinitrd") {
		return fmt.Errorf("%w: %q lacks \"noinitrd\" (without it the EFI stub loads an initrd the host offers, unmeasured)", ErrBuiltinCmdline, c)
	}
	return nil
}

// options are the configuration the variant adds to the base's .config.
func (v Builtin) options(initramfsPath string) []KconfigOption {
	return []KconfigOption{
		{Name: "CONFIG_BLK_DEV_INITRD", Value: "y"},
		{Name: "CONFIG_INITRAMFS_SOURCE", Value: strconv.Quote(initramfsPath)},
		{Name: "CONFIG_INITRAMFS_COMPRESSION_NONE", Value: "y"},
		{Name: "CONFIG_CMDLINE_BOOL", Value: "y"},
		{Name: "CONFIG_CMDLINE", Value: strconv.Quote(v.Cmdline)},
		{Name: "CONFIG_CMDLINE_OVERRIDE", Value: "y"},
	}
}

// BuildBuiltin builds the variant of the minimal kernel o describes with v built in. The base
// kernel is built first when the cache does not hold it with its tree (a full build); the
// variant itself is not cached (its initramfs is the agent, which changes with every build).
func BuildBuiltin(ctx context.Context, o BuildOptions, v Builtin) (*Variant, error) {
	if o.Arch != "" && o.Arch != ArchX86_64 {
		return nil, fmt.Errorf("built-in variant: %s: only x86_64 (the TDX measurement it exists for): %w", o.Arch, ErrUnknownArch)
	}
	if err := v.Validate(); err != nil {
		return nil, err
	}
	base, unlock, err := o.lockedBase(ctx, true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	start := time.Now()
	obj, saved := filepath.Join(base.Dir, treeBuildDir), filepath.Join(base.Dir, baseSaveDir)
	if err := restoreBase(obj, saved); err != nil {
		return nil, err
	}
	logPath := filepath.Join(base.Dir, "builtin.log")
	run, logf, err := o.runner(ctx, logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	src, err := o.ensureSource(run, base.Dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := os.RemoveAll(src); err != nil {
			o.Log.Warn("minimal kernel: could not remove the unpacked source", "dir", src, "err", err)
		}
	}()
	if err := saveBase(ctx, obj, saved); err != nil {
		return nil, err
	}
	defer func() {
		if err := restoreBase(obj, saved); err != nil {
			o.Log.Error("minimal kernel: could not restore the base build tree (the next variant build retries)", "err", err)
		}
	}()
	o.Log.Info("minimal kernel: building the built-in variant from the kept tree", "base", base.Key, "initramfsBytes", len(v.Initramfs))

	cpio := filepath.Join(obj, builtinInitramfsFile)
	if err := os.WriteFile(cpio, v.Initramfs, 0o644); err != nil {
		return nil, fmt.Errorf("minimal kernel: %w", err)
	}
	opts := v.options(cpio)
	cfgPath := filepath.Join(obj, ".config")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("minimal kernel: %w", err)
	}
	if err := os.WriteFile(cfgPath, setKconfig(cfg, opts), 0o644); err != nil {
		return nil, fmt.Errorf("minimal kernel: %w", err)
	}
	if err := run("olddefconfig", "make", makeArgs(src, obj)("olddefconfig")...); err != nil {
		return nil, err
	}
	var frag bytes.Buffer
	for _, opt := range opts {
		fmt.Fprintln(&frag, opt)
	}
	final, err := checkedConfig(obj, append(frag.Bytes(), o.Fragment...))
	if err != nil {
		return nil, err
	}
	img, release, err := o.makeBzImage(ctx, run, src, obj, logPath, start)
	if err != nil {
		return nil, err
	}
	out := &Variant{
		Base: base, Image: img, Config: final, Release: release,
		BzImageSHA256: sha256Hex(img), InitramfsSHA256: sha256Hex(v.Initramfs), Cmdline: v.Cmdline,
		BuildSeconds: int(time.Since(start).Seconds()),
	}
	o.Log.Info("minimal kernel: built-in variant built", "sha256", out.BzImageSHA256, "bzImageBytes", len(img), "elapsed", time.Since(start).Round(time.Second))
	return out, nil
}

// setKconfig replaces (or adds) the given options in a .config.
func setKconfig(config []byte, opts []KconfigOption) []byte {
	drop := make(map[string]bool, len(opts))
	for _, o := range opts {
		drop[o.Name] = true
	}
	var out bytes.Buffer
	for _, line := range strings.SplitAfter(string(config), "\n") {
		t := strings.TrimSpace(line)
		if m := kconfigSetRE.FindStringSubmatch(t); m != nil && drop[m[1]] {
			continue
		}
		if m := kconfigUnsetRE.FindStringSubmatch(t); m != nil && drop[m[1]] {
			continue
		}
		out.WriteString(line)
	}
	if out.Len() > 0 && !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
		out.WriteByte('\n')
	}
	for _, o := range opts {
		fmt.Fprintln(&out, o)
	}
	return out.Bytes()
}

// ensureSource unpacks the source to <dir>/src, the path the kept tree names, unless present,
// and patches it as build did: the kept tree was built from the patched source, and make would
// otherwise rebuild the patched files from the pristine ones.
func (o *BuildOptions) ensureSource(run func(what, name string, args ...string) error, dir string) (string, error) {
	src := filepath.Join(dir, treeSrcDir)
	if _, err := os.Stat(filepath.Join(src, "Makefile")); err == nil {
		return src, nil
	}
	tmp := src + ".unpack"
	for _, d := range []string{src, tmp} {
		if err := os.RemoveAll(d); err != nil {
			return "", fmt.Errorf("minimal kernel: %w", err)
		}
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", fmt.Errorf("minimal kernel: %w", err)
	}
	if err := o.unpack(run, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := applyPatches(run, tmp, dir, o.Patches); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, src); err != nil {
		return "", fmt.Errorf("minimal kernel: %w", err)
	}
	return src, nil
}

// saveBase copies the pristine tree obj to saved (through a temporary name, so that saved,
// when it exists, is always complete).
func saveBase(ctx context.Context, obj, saved string) error {
	tmp := saved + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("minimal kernel: %w", err)
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", obj, tmp).CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("minimal kernel: save the base tree: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(tmp, saved); err != nil {
		return fmt.Errorf("minimal kernel: save the base tree: %w", err)
	}
	return nil
}

// restoreBase moves a saved pristine tree back over obj (a variant build that was interrupted
// leaves one behind); without one, obj is the pristine tree already.
func restoreBase(obj, saved string) error {
	if _, err := os.Stat(saved); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := os.RemoveAll(obj); err != nil {
		return fmt.Errorf("minimal kernel: restore the base tree: %w", err)
	}
	if err := os.Rename(saved, obj); err != nil {
		return fmt.Errorf("minimal kernel: restore the base tree: %w", err)
	}
	return nil
}
