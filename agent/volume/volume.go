// Package volume opens sealed persistent volumes inside the guest: dm-crypt (AES-XTS) over
// dm-integrity (HMAC-SHA256 per sector, data journal, MAC'd superblock), driven through the
// device-mapper ioctls, with keys derived from the workload's volume secret and the claim's
// identity (DeriveKeys). A device whose first 4096 bytes are zero is formatted on first use
// (ext4, or left as a zeroed block device for volumeMode Block); a device with a dm-integrity
// superblock is opened; anything else is refused. The format and key derivation are in
// docs/volumes.md.
//
//	v, err := volume.Open(ctx, "/dev/vdb", secret, volume.ClaimID{Namespace: "db", Claim: "data", Ordinal: 0},
//		volume.Options{Name: "data", MountPoint: "/run/sealpod/volumes/data", AllowFormat: true})
//	... v.Path is the mounted file system ...
//	err = v.Close()
//
// Open is the whole guest side of one volume; sealing, attaching the disk (the shim) and
// rollback detection (the broker's generations, which decide AllowFormat and read and write
// a generation record under v.Path) are separate layers.
package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"golang.org/x/sys/unix"
)

// Mode is the claim's volumeMode.
type Mode int

const (
	// ModeFilesystem: an ext4 file system mounted at Options.MountPoint.
	ModeFilesystem Mode = iota
	// ModeBlock: the decrypted block device itself (Volume.Path is its node).
	ModeBlock
)

// MinDeviceSize is the smallest backing device Open accepts.
const MinDeviceSize = 16 << 20

// Options tune Open.
type Options struct {
	// Name names the device-mapper devices (sealpod-<Name>-integrity, sealpod-<Name>-crypt):
	// 1..40 of [a-z0-9-]. Names are unique among open volumes.
	Name string
	// Mode is the claim's volumeMode.
	Mode Mode
	// MountPoint is where ModeFilesystem mounts (created 0700 if missing). Absolute.
	MountPoint string
	// AllowFormat lets Open format an empty device (first use). Without it an empty device
	// is ErrNotFormatted: a caller that knows the volume was used before (the broker's
	// generation > 0) must not format a device the host has zeroed.
	AllowFormat bool
}

// Errors callers branch on (errors.Is), besides ErrUnknownContent and ErrBadSuperblock.
var (
	// ErrWrongIdentity: the kernel refused the dm-integrity superblock's MAC: the volume was
	// formatted for another workload secret or claim identity, or its superblock was changed.
	ErrWrongIdentity = errors.New("volume does not open with this workload's secret and claim identity (dm-integrity superblock MAC mismatch)")
	// ErrNotFormatted: the device is empty and Options.AllowFormat is false.
	ErrNotFormatted = errors.New("device is empty (all zero) and formatting was not allowed")
)

// Volume is an open sealed volume.
type Volume struct {
	// Path is the mount point (ModeFilesystem) or the decrypted block device (ModeBlock).
	Path string
	// Device is the decrypted block device node (dm-crypt).
	Device string
	// Formatted is true when Open formatted the device (first use).
	Formatted bool
	// Sectors is the usable size in 512-byte sectors.
	Sectors uint64

	name    string
	mounted bool
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

func (o Options) validate() error {
	if !validName(o.Name) {
		return fmt.Errorf("volume options: name %q: want 1..40 of [a-z0-9-]", o.Name)
	}
	switch o.Mode {
	case ModeFilesystem:
		if !filepath.IsAbs(o.MountPoint) || filepath.Clean(o.MountPoint) != o.MountPoint {
			return fmt.Errorf("volume %s: mount point %q is not a clean absolute path", o.Name, o.MountPoint)
		}
	case ModeBlock:
		if o.MountPoint != "" {
			return fmt.Errorf("volume %s: mount point set for a block volume", o.Name)
		}
	default:
		return fmt.Errorf("volume %s: unknown mode %d", o.Name, o.Mode)
	}
	return nil
}

func integrityName(name string) string { return "sealpod-" + name + "-integrity" }
func cryptName(name string) string     { return "sealpod-" + name + "-crypt" }

// Open opens (and on first use formats) the sealed volume on the block device dev for the
// claim id, with keys derived from the workload's volume secret.
func Open(ctx context.Context, dev string, secret []byte, id ClaimID, opts Options) (*Volume, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	keys, err := DeriveKeys(secret, id)
	if err != nil {
		return nil, fmt.Errorf("open volume %s: %w", opts.Name, err)
	}
	defer keys.Wipe()
	v, err := open(ctx, dev, keys, opts)
	if err != nil {
		return nil, fmt.Errorf("open volume %s on %s: %w", opts.Name, dev, err)
	}
	return v, nil
}

func open(ctx context.Context, dev string, keys *Keys, opts Options) (v *Volume, err error) {
	devNum, size, head, err := inspect(dev)
	if err != nil {
		return nil, err
	}
	if size < MinDeviceSize {
		return nil, fmt.Errorf("device is %d bytes, minimum %d", size, MinDeviceSize)
	}
	state, sb, err := Probe(head)
	if err != nil {
		return nil, err
	}
	if state == StateEmpty && !opts.AllowFormat {
		return nil, ErrNotFormatted
	}
	c, err := openControl()
	if err != nil {
		return nil, err
	}
	defer c.Close()

	v = &Volume{name: opts.Name, Formatted: state == StateEmpty}
	iname, cname := integrityName(opts.Name), cryptName(opts.Name)
	if err := c.create(iname, "SEALPOD-VOLUME-"+iname); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, v.teardown(c))
		}
	}()
	if state == StateEmpty {
		// The kernel initializes the superblock and journal when it constructs the target on
		// a zeroed device; a one-sector table is enough for that. Then read the size it chose.
		t := integrityTarget(devNum, 1, keys)
		err := c.load(iname, []target{t})
		t.wipe()
		if err != nil {
			return v, fmt.Errorf("initialize dm-integrity: %w", err)
		}
		if _, _, head, err = inspect(dev); err != nil {
			return v, err
		}
		if _, sb, err = Probe(head); err != nil {
			return v, fmt.Errorf("after initializing dm-integrity: %w", err)
		}
		if sb == nil {
			return v, errors.New("dm-integrity did not write its superblock")
		}
	}
	v.Sectors = sb.ProvidedDataSectors
	t := integrityTarget(devNum, v.Sectors, keys)
	err = c.load(iname, []target{t})
	t.wipe()
	if errors.Is(err, unix.EILSEQ) {
		return v, fmt.Errorf("%w: %w", ErrWrongIdentity, err)
	}
	if err != nil {
		return v, err
	}
	inum, err := c.resume(iname)
	if err != nil {
		return v, err
	}
	if err := c.create(cname, "SEALPOD-VOLUME-"+cname); err != nil {
		return v, err
	}
	t = cryptTarget(fmt.Sprintf("%d:%d", unix.Major(inum), unix.Minor(inum)), v.Sectors, keys)
	err = c.load(cname, []target{t})
	t.wipe()
	if err != nil {
		return v, err
	}
	cnum, err := c.resume(cname)
	if err != nil {
		return v, err
	}
	if v.Device, err = waitNode(ctx, cnum); err != nil {
		return v, err
	}
	if v.Formatted {
		if err := format(ctx, v.Device, int64(v.Sectors)*sectorSize, opts.Mode); err != nil {
			return v, err
		}
	}
	if opts.Mode == ModeBlock {
		v.Path = v.Device
		return v, nil
	}
	if err := os.MkdirAll(opts.MountPoint, 0o700); err != nil {
		return v, err
	}
	if err := unix.Mount(v.Device, opts.MountPoint, "ext4", unix.MS_NOSUID|unix.MS_NODEV, "errors=remount-ro"); err != nil {
		return v, fmt.Errorf("mount ext4 at %s: %w", opts.MountPoint, err)
	}
	v.Path, v.mounted = opts.MountPoint, true
	return v, nil
}

// Close unmounts the volume and removes its device-mapper devices (dm-integrity flushes its
// journal on the way).
func (v *Volume) Close() error {
	c, err := openControl()
	if err != nil {
		return fmt.Errorf("close volume %s: %w", v.name, err)
	}
	defer c.Close()
	if err := v.teardown(c); err != nil {
		return fmt.Errorf("close volume %s: %w", v.name, err)
	}
	return nil
}

func (v *Volume) teardown(c *control) error {
	if v.mounted {
		if err := unix.Unmount(v.Path, 0); err != nil {
			return fmt.Errorf("unmount %s: %w", v.Path, err)
		}
		v.mounted = false
	}
	var errs []error
	for _, n := range []string{cryptName(v.name), integrityName(v.name)} {
		errs = append(errs, removeRetry(c, n))
	}
	return errors.Join(errs...)
}

// removeRetry removes a device, retrying briefly while it is busy (a just-closed opener).
func removeRetry(c *control, name string) error {
	var err error
	for range 50 {
		err = c.remove(name)
		if err == nil || errors.Is(err, unix.ENXIO) {
			return nil // removed, or never created
		}
		if !errors.Is(err, unix.EBUSY) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// inspect checks that dev is a block device and returns its "major:minor", size and first
// SuperblockSize bytes (read with O_DIRECT, so what the kernel wrote is seen, not a cached copy).
func inspect(dev string) (string, int64, []byte, error) {
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", 0, nil, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", 0, nil, fmt.Errorf("stat %s: %w", dev, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", 0, nil, fmt.Errorf("%s is not a block device", dev)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return "", 0, nil, fmt.Errorf("size of %s: %w", dev, err)
	}
	buf := alignedBuffer(SuperblockSize)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return "", 0, nil, fmt.Errorf("read %s: %w", dev, err)
	}
	return fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)), size, buf, nil
}

// alignedBuffer returns n bytes aligned to 4096 (O_DIRECT).
func alignedBuffer(n int) []byte {
	const align = 4096
	b := make([]byte, n+align)
	off := (align - int(uintptr(unsafe.Pointer(&b[0]))%align)) % align
	return b[off : off+n : off+n]
}

// waitNode waits for devtmpfs's node of device number num (/dev/dm-<minor>).
func waitNode(ctx context.Context, num uint64) (string, error) {
	p := fmt.Sprintf("/dev/dm-%d", unix.Minor(num))
	deadline := time.Now().Add(10 * time.Second)
	for {
		var st unix.Stat_t
		err := unix.Stat(p, &st)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == num {
			return p, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("device node %s for %d:%d did not appear", p, unix.Major(num), unix.Minor(num))
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// format prepares a new volume: every sector is written once through dm-crypt (zeros), so
// every sector has a valid tag and reads back as zeros (dm-integrity refuses to recalculate
// tags with a keyed hash); then ext4 for ModeFilesystem.
func format(ctx context.Context, devPath string, size int64, mode Mode) error {
	f, err := os.OpenFile(devPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(zeros)) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("wipe: %w", err)
		}
		n := min(int64(len(zeros)), size-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("wipe at %d: %w", off, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("wipe: %w", err)
	}
	if mode == ModeBlock {
		return nil
	}
	if _, err := ext4.Create(file.New(f, false), size, 0, sectorSize, ext4Params()); err != nil {
		return fmt.Errorf("mkfs ext4: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("mkfs ext4: %w", err)
	}
	return nil
}

// ext4Params: 4 KiB blocks, journal, no resize inode (volumes are not resized in place).
func ext4Params() *ext4.Params {
	return &ext4.Params{
		SectorsPerBlock: 8,
		Features:        []ext4.FeatureOpt{ext4.WithFeatureReservedGDTBlocksForExpansion(false)},
	}
}
