// Package volume opens sealed persistent volumes inside the guest: dm-crypt (AES-XTS) over
// dm-integrity (HMAC-SHA256 per sector, data journal, MAC'd superblock), driven through the
// device-mapper ioctls, with keys derived from the workload's volume secret and the claim's
// identity (DeriveKeys). The first 4 KiB of the decrypted device are Sealpod's volume header
// (Header: claim identity digest, mode, generation); the user data (ext4, or the raw device
// for volumeMode Block) is a dm-linear device after it. Every open runs the broker's two-phase
// generation protocol (Generations), which refuses an older copy of the volume (ErrRollback).
// A device whose first 4096 bytes are zero is formatted on first use; a device with a
// dm-integrity superblock is opened; anything else is refused. The format, key derivation and
// rollback protocol are in docs/volumes.md.
//
//	v, err := volume.Open(ctx, "/dev/vdb", secret, "db/data-web-0", volume.Options{
//		Name: "data", AllowFormat: true, Generations: broker, MountPoint: "/run/sealpod/volumes/data"})
//	... v.MountPoint holds the file system (v.Device is the ext4 device) ...
//	err = v.Close()
package volume

import (
	"context"
	"crypto/sha256"
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
	// Name names the device-mapper devices (sealpod-<Name>-integrity, sealpod-<Name>-crypt and
	// the user device sealpod-<Name>-volume): 1..40 of [a-z0-9-]. Unique among open volumes.
	Name string
	// Mode is the claim's volumeMode; it is recorded in the header at format and must match.
	Mode Mode
	// AllowFormat lets Open format a device without a volume (first use). Formatting also
	// needs the broker's committed generation to be 0: an empty device for a claim that was
	// used before is ErrRollback, never formatted. Without AllowFormat an empty device is
	// ErrNotFormatted.
	AllowFormat bool
	// ReadOnly: ModeFilesystem mounts read-only (when MountPoint is set); ModeBlock makes the
	// user device read-only. The header's generation is written either way.
	ReadOnly bool
	// MountPoint, for ModeFilesystem only, is optional: when set (a clean absolute path,
	// created 0700 if missing) Open mounts the ext4 file system there and Close unmounts it.
	MountPoint string
	// Generations is the broker's generation counter for rollback detection. Required.
	Generations Generations
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
	// Device is the user device node: the ext4 file system (ModeFilesystem) or the decrypted
	// block device (ModeBlock), a dm-linear mapping after the header.
	Device string
	// MountPoint is where Open mounted the file system ("" unless Options.MountPoint).
	MountPoint string
	// Formatted is true when Open formatted the device (first use).
	Formatted bool
	// Generation is the generation the broker has committed and the header holds.
	Generation uint64
	// Sectors is the user device's size in 512-byte sectors.
	Sectors uint64

	name string
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
		if o.MountPoint != "" && (!filepath.IsAbs(o.MountPoint) || filepath.Clean(o.MountPoint) != o.MountPoint) {
			return fmt.Errorf("volume %s: mount point %q is not a clean absolute path", o.Name, o.MountPoint)
		}
	case ModeBlock:
		if o.MountPoint != "" {
			return fmt.Errorf("volume %s: mount point set for a block volume", o.Name)
		}
	default:
		return fmt.Errorf("volume %s: unknown mode %d", o.Name, o.Mode)
	}
	if o.Generations == nil {
		return fmt.Errorf("volume %s: no generations (rollback detection is required)", o.Name)
	}
	return nil
}

func integrityName(name string) string { return "sealpod-" + name + "-integrity" }
func cryptName(name string) string     { return "sealpod-" + name + "-crypt" }
func userName(name string) string      { return "sealpod-" + name + "-volume" }

// Open opens (and on first use formats) the sealed volume on the block device dev for the
// claim identity ("<namespace>/<claim>", ValidateIdentity), with keys derived from the
// workload's volume secret, and advances its generation with opts.Generations: Begin, check
// the header's generation against the broker's (ErrRollback), write the pending generation
// into the header (O_DIRECT, flushed), Commit.
func Open(ctx context.Context, dev string, secret []byte, identity string, opts Options) (*Volume, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	keys, err := DeriveKeys(secret, identity)
	if err != nil {
		return nil, fmt.Errorf("open volume %s: %w", opts.Name, err)
	}
	defer keys.Wipe()
	v, err := open(ctx, dev, keys, identity, opts)
	if err != nil {
		return nil, fmt.Errorf("open volume %s (%s) on %s: %w", opts.Name, identity, dev, err)
	}
	return v, nil
}

func open(ctx context.Context, dev string, keys *Keys, identity string, opts Options) (v *Volume, err error) {
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
	committed, pending, err := begin(ctx, opts.Generations, identity)
	if err != nil {
		return nil, err
	}
	if state == StateEmpty {
		if err := planFormat(identity, committed, opts.AllowFormat); err != nil {
			return nil, err
		}
	}
	c, err := openControl()
	if err != nil {
		return nil, err
	}
	defer c.Close()

	v = &Volume{name: opts.Name}
	defer func() {
		if err != nil {
			err = errors.Join(err, v.teardown(c))
		}
	}()
	cryptDev, sectors, err := activate(ctx, c, dev, devNum, state == StateEmpty, sb, keys, opts.Name)
	if err != nil {
		return v, err
	}
	if sectors <= HeaderSectors {
		return v, fmt.Errorf("device provides %d sectors, no room after the header", sectors)
	}
	v.Sectors = sectors - HeaderSectors
	if err := c.create(userName(opts.Name), "SEALPOD-VOLUME-"+userName(opts.Name)); err != nil {
		return v, err
	}
	t := linearTarget(cryptDev.num, HeaderSectors, v.Sectors)
	if err := c.load(userName(opts.Name), []target{t}, opts.Mode == ModeBlock && opts.ReadOnly); err != nil {
		return v, err
	}
	unum, err := c.resume(userName(opts.Name))
	if err != nil {
		return v, err
	}
	if v.Device, err = waitNode(ctx, unum); err != nil {
		return v, err
	}

	// A new device, or one whose first format did not finish (no header, or a header sector
	// that was never written): format, if the broker never committed this claim.
	hio := devHeader(cryptDev.path)
	v.Formatted = state == StateEmpty
	if !v.Formatted {
		raw, err := hio.readHeader()
		_, herr := decodeHeader(raw)
		if errors.Is(err, unix.EIO) || errors.Is(err, unix.EILSEQ) || (err == nil && errors.Is(herr, errNoHeader)) {
			v.Formatted = planFormat(identity, committed, opts.AllowFormat) == nil
		}
	}
	if v.Formatted {
		if err := format(ctx, cryptDev.path, v.Device, int64(sectors)*sectorSize, opts.Mode); err != nil {
			return v, err
		}
		h := Header{IdentityDigest: sha256.Sum256([]byte(identity)), Mode: opts.Mode, DataOffset: HeaderSectors, DataSectors: v.Sectors}
		if err := hio.writeHeader(h.encode()); err != nil {
			return v, fmt.Errorf("write volume header: %w", err)
		}
	}
	if v.Generation, err = advance(ctx, opts.Generations, identity, committed, pending, hio, opts.Mode, sectors); err != nil {
		return v, err
	}

	if opts.Mode == ModeBlock || opts.MountPoint == "" {
		return v, nil
	}
	if err := os.MkdirAll(opts.MountPoint, 0o700); err != nil {
		return v, err
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if opts.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(v.Device, opts.MountPoint, "ext4", flags, "errors=remount-ro"); err != nil {
		return v, fmt.Errorf("mount ext4 at %s: %w", opts.MountPoint, err)
	}
	v.MountPoint = opts.MountPoint
	return v, nil
}

// dmDevice is an active device-mapper device: "major:minor" and its node.
type dmDevice struct{ num, path string }

// activate loads dm-integrity (initializing it on an empty device) and dm-crypt over dev
// (devNum "major:minor") and returns the dm-crypt device and its size in sectors.
func activate(ctx context.Context, c *control, dev, devNum string, empty bool, sb *Superblock, keys *Keys, name string) (dmDevice, uint64, error) {
	iname, cname := integrityName(name), cryptName(name)
	if err := c.create(iname, "SEALPOD-VOLUME-"+iname); err != nil {
		return dmDevice{}, 0, err
	}
	if empty {
		// The kernel initializes the superblock and journal when it constructs the target on
		// a zeroed device; a one-sector table is enough for that. Then read the size it chose.
		t := integrityTarget(devNum, 1, keys)
		err := c.load(iname, []target{t}, false)
		t.wipe()
		if err != nil {
			return dmDevice{}, 0, fmt.Errorf("initialize dm-integrity: %w", err)
		}
		_, _, head, err := inspect(dev)
		if err != nil {
			return dmDevice{}, 0, err
		}
		if _, sb, err = Probe(head); err != nil {
			return dmDevice{}, 0, fmt.Errorf("after initializing dm-integrity: %w", err)
		}
		if sb == nil {
			return dmDevice{}, 0, errors.New("dm-integrity did not write its superblock")
		}
	}
	sectors := sb.ProvidedDataSectors
	t := integrityTarget(devNum, sectors, keys)
	err := c.load(iname, []target{t}, false)
	t.wipe()
	if errors.Is(err, unix.EILSEQ) {
		return dmDevice{}, 0, fmt.Errorf("%w: %w", ErrWrongIdentity, err)
	}
	if err != nil {
		return dmDevice{}, 0, err
	}
	inum, err := c.resume(iname)
	if err != nil {
		return dmDevice{}, 0, err
	}
	if err := c.create(cname, "SEALPOD-VOLUME-"+cname); err != nil {
		return dmDevice{}, 0, err
	}
	t = cryptTarget(devString(inum), sectors, keys)
	err = c.load(cname, []target{t}, false)
	t.wipe()
	if err != nil {
		return dmDevice{}, 0, err
	}
	cnum, err := c.resume(cname)
	if err != nil {
		return dmDevice{}, 0, err
	}
	p, err := waitNode(ctx, cnum)
	if err != nil {
		return dmDevice{}, 0, err
	}
	return dmDevice{num: devString(cnum), path: p}, sectors, nil
}

func devString(num uint64) string { return fmt.Sprintf("%d:%d", unix.Major(num), unix.Minor(num)) }

// Close unmounts the volume (if Open mounted it) and removes its device-mapper devices
// (dm-integrity flushes its journal on the way).
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
	if v.MountPoint != "" {
		if err := unix.Unmount(v.MountPoint, 0); err != nil {
			return fmt.Errorf("unmount %s: %w", v.MountPoint, err)
		}
		v.MountPoint = ""
	}
	var errs []error
	for _, n := range []string{userName(v.name), cryptName(v.name), integrityName(v.name)} {
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

// format prepares a new volume: every sector of the dm-crypt device cryptPath (size bytes) is
// written once (zeros), so every sector has a valid tag and reads back as zeros (dm-integrity
// refuses to recalculate tags with a keyed hash); then ext4 on the user device userPath for
// ModeFilesystem. The caller writes the header afterwards.
func format(ctx context.Context, cryptPath, userPath string, size int64, mode Mode) error {
	if err := wipe(ctx, cryptPath, size); err != nil {
		return err
	}
	if mode == ModeBlock {
		return nil
	}
	return mkfs(userPath, size-HeaderSize)
}

func wipe(ctx context.Context, path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
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
	return nil
}

// mkfs makes the ext4 file system (size bytes) on path.
func mkfs(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := ext4.Create(file.New(f, false), size, 0, sectorSize, ext4Params(size)); err != nil {
		return fmt.Errorf("mkfs ext4: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("mkfs ext4: %w", err)
	}
	return nil
}

// devHeader is the header block at the start of a dm-crypt device node, read and written
// with O_DIRECT (no page cache: what is read is what the device holds) and flushed on write
// (the flush passes through dm-crypt and commits dm-integrity's journal).
type devHeader string

func (d devHeader) readHeader() ([]byte, error) {
	f, err := os.OpenFile(string(d), os.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := alignedBuffer(HeaderSize)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return nil, err
	}
	return buf, nil
}

func (d devHeader) writeHeader(b []byte) error {
	f, err := os.OpenFile(string(d), os.O_WRONLY|unix.O_DIRECT|unix.O_DSYNC|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	buf := alignedBuffer(HeaderSize)
	copy(buf, b)
	if _, err := f.WriteAt(buf, 0); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ext4 layout constants: 4 KiB blocks, 8 × 4096 blocks per group, 256-byte inodes (go-diskfs's
// defaults), one inode per 8 KiB as mke2fs's default ratio.
const (
	ext4BlockSize      = 4096
	ext4BlocksPerGroup = 8 * ext4BlockSize
	ext4InodeSize      = 256
	ext4InodeRatio     = 8192
)

// ext4InodeCount is the inode count for a file system of size bytes such that every block
// group's inodes fill whole inode-table blocks, as mke2fs rounds them. go-diskfs rounds the
// per-group count to a multiple of 8 only; with 16 inodes per 4 KiB block that can leave a
// partial last inode-table block, which Linux's lazy inode-table init reports as "Something
// is wrong with group 0: used itable blocks" and remounts the volume read-only
// (TestFormatExt4).
func ext4InodeCount(size int64) uint32 {
	const perBlock = ext4BlockSize / ext4InodeSize
	blocks := size / ext4BlockSize
	groups := (blocks + ext4BlocksPerGroup - 1) / ext4BlocksPerGroup
	perGroup := (size/ext4InodeRatio + groups - 1) / groups
	perGroup = (perGroup + perBlock - 1) / perBlock * perBlock
	return uint32(perGroup * groups)
}

// ext4Params: 4 KiB blocks, journal, no resize inode (volumes are not resized in place),
// inode tables of whole blocks.
func ext4Params(size int64) *ext4.Params {
	return &ext4.Params{
		SectorsPerBlock: ext4BlockSize / sectorSize,
		BlocksPerGroup:  ext4BlocksPerGroup,
		InodeCount:      ext4InodeCount(size),
		Features:        []ext4.FeatureOpt{ext4.WithFeatureReservedGDTBlocksForExpansion(false)},
	}
}
