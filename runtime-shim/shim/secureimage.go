package shim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/image"
)

// Limits of the files the shim reads from the secure image (the pod owner's, not the node's).
const (
	maxKernel    = 128 << 20
	maxInitrd    = 512 << 20
	maxFirmware  = 32 << 20
	maxGuestJSON = 64 << 10
	maxEnvelope  = api.MaxEnvelope // the agent's limit
)

// guestFiles are the guest bundle's files with their limits; the firmware is optional.
var guestFiles = []struct {
	name  string
	limit int64
}{{bundle.KernelFile, maxKernel}, {bundle.InitrdFile, maxInitrd}, {bundle.ConfigFile, maxGuestJSON}, {bundle.FirmwareFile, maxFirmware}}

// openRootfsFile opens name below root for reading, refusing anything but a regular file
// before a byte is read: O_NONBLOCK so a FIFO cannot block the pod's Create (and its boot),
// O_NOFOLLOW so the last component is no symbolic link (os.Root already keeps the others
// inside the image), fstat for the type and the size limit.
func openRootfsFile(root *os.Root, name string, limit int64) (*os.File, error) {
	// os.Root resolves a final symbolic link inside the root even with O_NOFOLLOW: Lstat
	// first, then check that the open file is the one Lstat saw.
	lst, err := root.Lstat(name)
	if err != nil {
		return nil, err
	}
	if lst.Mode()&os.ModeSymlink != 0 {
		return nil, fmt.Errorf("%s: is a symbolic link: %w", name, errdefs.ErrInvalidArgument)
	}
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW|syscall.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s: is a symbolic link: %w", name, errdefs.ErrInvalidArgument)
		}
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !os.SameFile(lst, st) {
		f.Close()
		return nil, fmt.Errorf("%s: replaced while being opened: %w", name, errdefs.ErrInvalidArgument)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file (%s): %w", name, st.Mode().Type(), errdefs.ErrInvalidArgument)
	}
	if st.Size() > limit {
		f.Close()
		return nil, fmt.Errorf("%s: %d bytes, larger than %d: %w", name, st.Size(), limit, errdefs.ErrInvalidArgument)
	}
	return f, nil
}

// copyLimited copies at most limit bytes of src to w, failing if src holds more (it may grow
// after fstat).
func copyLimited(w io.Writer, src *os.File, name string, limit int64) error {
	n, err := io.Copy(w, io.LimitReader(src, limit+1))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if n > limit {
		return fmt.Errorf("%s: larger than %d bytes: %w", name, limit, errdefs.ErrInvalidArgument)
	}
	return nil
}

// readRootfsFile reads a regular file of at most limit bytes below root.
func readRootfsFile(root *os.Root, name string, limit int64) ([]byte, error) {
	f, err := openRootfsFile(root, name, limit)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b limitedBuffer
	if err := copyLimited(&b, f, name, limit); err != nil {
		return nil, err
	}
	return b.b, nil
}

type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) { l.b = append(l.b, p...); return len(p), nil }

// copyRootfsFile copies a regular file of at most limit bytes below root to dst (mode 0400),
// streaming: the shim never holds a guest file in memory.
func copyRootfsFile(root *os.Root, name, dst string, limit int64) (retErr error) {
	f, err := openRootfsFile(root, name, limit)
	if err != nil {
		return err
	}
	defer f.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return err
	}
	defer func() {
		if err := out.Close(); retErr == nil && err != nil {
			retErr = err
		}
		if retErr != nil {
			os.Remove(dst)
		}
	}()
	return copyLimited(out, f, name, limit)
}

// loadSecureImage mounts the placeholder's rootfs (the secure image), copies the guest files
// into guestDir and returns the envelope of the workload.
func loadSecureImage(r *taskAPI.CreateTaskRequest, workload, guestDir string) ([]byte, error) {
	rootfs := filepath.Join(r.Bundle, "rootfs")
	if len(r.Rootfs) > 0 {
		var ms []mount.Mount
		for _, m := range r.Rootfs {
			ms = append(ms, mount.Mount{Type: m.Type, Source: m.Source, Options: m.Options})
		}
		if err := os.MkdirAll(rootfs, 0o711); err != nil {
			return nil, err
		}
		if err := mount.All(ms, rootfs); err != nil {
			return nil, fmt.Errorf("mount the secure image at %s: %w", rootfs, err)
		}
		defer func() { _ = mount.UnmountAll(rootfs, 0) }()
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return nil, fmt.Errorf("secure image rootfs %s: %w", rootfs, err)
	}
	defer root.Close()
	env, err := readRootfsFile(root, filepath.Join(image.SealedDir, workload+".json"), maxEnvelope)
	if err != nil {
		return nil, fmt.Errorf("secure image: envelope of workload %q: %w", workload, err)
	}
	if err := os.MkdirAll(guestDir, 0o700); err != nil {
		return nil, err
	}
	for _, g := range guestFiles {
		src := filepath.Join(image.GuestDir, g.name)
		if g.name == bundle.ConfigFile {
			src = workloadGuestJSON(root, workload)
		}
		err := copyRootfsFile(root, src, filepath.Join(guestDir, g.name), g.limit)
		if err != nil {
			if g.name == bundle.FirmwareFile && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("secure image: guest file %s: %w", g.name, err)
		}
	}
	// PEF: the workload's ESM blob, when the image has one (sim-pef needs it: simpef.go).
	err = copyRootfsFile(root, filepath.Join(image.PEFDir, workload+".cpio"), filepath.Join(guestDir, ESMCpioFile), maxESMCpio)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("secure image: ESM blob of workload %q: %w", workload, err)
	}
	return env, nil
}

// workloadGuestJSON is the guest.json the workload boots with: its own (sized for its pod at
// seal time, image.WorkloadGuestDir) when the image has one, else the bundle's.
func workloadGuestJSON(root *os.Root, workload string) string {
	p := filepath.Join(image.WorkloadGuestDir, workload+".json")
	if _, err := root.Lstat(p); errors.Is(err, os.ErrNotExist) {
		return filepath.Join(image.GuestDir, bundle.ConfigFile)
	}
	return p
}
