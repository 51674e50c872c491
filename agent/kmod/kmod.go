// Package kmod loads the kernel modules shipped in the guest's initrd, in the order the guest
// build (guest-image/cmd/mkguest) wrote to lib/modules/<release>/load-order: one module path
// per line, relative to that directory, every module after its dependencies. There is no udev
// and no modprobe in the guest: each file is handed to the kernel with finit_module(2).
//
// Usage in the agent (PID 1):
//
//	res, err := kmod.LoadAll(kmod.DefaultDir())
//
// A module that is already loaded (EEXIST) counts as present, and one whose device is absent
// (ENODEV, e.g. sev-guest outside an SEV-SNP guest) as not applicable; neither is an error.
// A guest kernel with everything built in has no lib/modules/<release> at all: LoadAll then
// reports Absent and no error. A directory without its load-order is an error (a broken build).
package kmod

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// LoadOrderFile is the name of the list inside lib/modules/<release>/.
const LoadOrderFile = "load-order"

// maxLoadOrder bounds the list (it is part of the measured initrd, but a parser is a parser).
const maxLoadOrder = 1 << 20

// ErrBadLoadOrder is returned for a malformed load-order file.
var ErrBadLoadOrder = errors.New("malformed load-order")

// DefaultDir returns /lib/modules/<release of the running kernel>.
func DefaultDir() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:])), nil
}

// ParseLoadOrder parses a load-order file: one relative, clean path per line ending in .ko
// (or .ko.xz / .ko.zst / .ko.gz for kernels that decompress modules); blank lines and lines
// starting with # are ignored; duplicates are errors.
func ParseLoadOrder(data []byte) ([]string, error) {
	if len(data) > maxLoadOrder {
		return nil, fmt.Errorf("%s: %d bytes: %w", LoadOrderFile, len(data), ErrBadLoadOrder)
	}
	var out []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "/") || path.Clean(line) != line || line == ".." || strings.HasPrefix(line, "../") ||
			strings.ContainsRune(line, 0) || !isModuleFile(line) {
			return nil, fmt.Errorf("%s line %d: %q: not a relative module path: %w", LoadOrderFile, n, line, ErrBadLoadOrder)
		}
		if seen[line] {
			return nil, fmt.Errorf("%s line %d: %q listed twice: %w", LoadOrderFile, n, line, ErrBadLoadOrder)
		}
		seen[line] = true
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", LoadOrderFile, ErrBadLoadOrder, err)
	}
	return out, nil
}

func isModuleFile(p string) bool {
	return strings.HasSuffix(p, ".ko") || compressed(p)
}

func compressed(p string) bool {
	return strings.HasSuffix(p, ".ko.xz") || strings.HasSuffix(p, ".ko.zst") || strings.HasSuffix(p, ".ko.gz")
}

// Result reports what LoadAll did.
type Result struct {
	// Loaded lists the modules inserted by this call, in order.
	Loaded []string
	// Present lists the modules the kernel already had (EEXIST).
	Present []string
	// NoDevice lists the modules whose init found no device and declined to load (ENODEV):
	// normal for hardware-specific drivers, e.g. sev-guest outside an SEV-SNP guest.
	NoDevice []string
	// Duration is the total time spent.
	Duration time.Duration
	// Absent: the module directory does not exist (a kernel with its drivers built in).
	Absent bool
}

// Count is the number of modules now in the kernel from the list (loaded + already present).
func (r *Result) Count() int { return len(r.Loaded) + len(r.Present) }

// Loader inserts modules. The zero value uses finit_module(2).
type Loader struct {
	// Finit replaces unix.FinitModule (tests).
	Finit func(fd int, params string, flags int) error
}

// LoadAll loads every module listed in dir/load-order with the default Loader.
func LoadAll(dir string) (*Result, error) {
	return (&Loader{}).LoadAll(dir)
}

// LoadAll loads every module listed in dir/load-order, in order. A module already loaded
// (EEXIST) is Present; one whose hardware is absent (ENODEV) is recorded in NoDevice and
// skipped. It stops at the first other refusal, naming the module; modules loaded before stay
// loaded.
func (l *Loader) LoadAll(dir string) (*Result, error) {
	start := time.Now()
	res := &Result{}
	raw, err := os.ReadFile(filepath.Join(dir, LoadOrderFile))
	if errors.Is(err, fs.ErrNotExist) {
		if _, derr := os.Stat(dir); errors.Is(derr, fs.ErrNotExist) {
			res.Absent = true
			res.Duration = time.Since(start)
			return res, nil
		}
	}
	if err != nil {
		return res, fmt.Errorf("kernel modules: %w", err)
	}
	list, err := ParseLoadOrder(raw)
	if err != nil {
		return res, fmt.Errorf("kernel modules %s: %w", dir, err)
	}
	finit := l.Finit
	if finit == nil {
		finit = unix.FinitModule
	}
	for _, rel := range list {
		present, err := loadOne(finit, filepath.Join(dir, filepath.FromSlash(rel)))
		if errors.Is(err, unix.ENODEV) {
			res.NoDevice = append(res.NoDevice, rel)
			continue
		}
		if err != nil {
			res.Duration = time.Since(start)
			return res, fmt.Errorf("kernel module %s: %w", rel, err)
		}
		if present {
			res.Present = append(res.Present, rel)
		} else {
			res.Loaded = append(res.Loaded, rel)
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

func loadOne(finit func(int, string, int) error, file string) (present bool, err error) {
	f, err := os.OpenFile(file, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	flags := 0
	if compressed(file) {
		// Needs CONFIG_MODULE_DECOMPRESS (Linux ≥ 5.17); otherwise the kernel says EINVAL.
		flags |= unix.MODULE_INIT_COMPRESSED_FILE
	}
	for {
		err = finit(int(f.Fd()), "", flags)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, unix.EEXIST):
		return true, nil
	default:
		return false, fmt.Errorf("finit_module: %w", err)
	}
}
