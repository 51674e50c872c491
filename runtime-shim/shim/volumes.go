package shim

// Sealed volumes (issue 15, docs/runtime.md#sealed-volumes): the kubelet attaches each claim of
// a sealed pod to the placeholder containers that use it, at spec.PlaceholderVolumePath(name)
// (a bind mount of the PV's directory for a Filesystem claim, a linux.devices entry for a
// Block claim). The shim hands the claim to the VM as a hot-plugged virtio disk, never as a
// mount: a Filesystem claim as a sparse image file inside the PV, a Block claim as the device,
// and tells the agent which disk (serial) is which volume (AttachVolume); the guest opens it
// with dm-crypt over dm-integrity, so the host only ever sees ciphertext.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
)

// annotationVolumes is the pod annotation listing its sealed volumes (spec.AnnotationVolumes).
const annotationVolumes = spec.AnnotationVolumes

// VolumeImageFile is a Filesystem claim's image inside the PV's directory: created sparse on
// first use, the volume's (encrypted) data afterwards.
const VolumeImageFile = "sealpod-volume.img"

// volumeAlign is the granularity of image sizes: the claim's size is rounded up to it (a
// virtio disk is whole sectors; 4 KiB suits O_DIRECT on 4Kn host disks).
const volumeAlign = 4096

// podVolumes are the pod's sealed volumes (annotation spec.AnnotationVolumes), each with a
// fixed hot-plug slot: its index in name order.
type podVolumes struct {
	names []string
	vols  map[string]spec.PlaceholderVolume
}

// parsePodVolumes reads the pod's sealpod.io/volumes annotation (nil: none, or no volumes).
func parsePodVolumes(ann map[string]string) (*podVolumes, error) {
	v, ok := ann[spec.AnnotationVolumes]
	if !ok {
		return nil, nil
	}
	m, err := spec.ParsePlaceholderVolumes(v)
	if err != nil {
		return nil, fmt.Errorf("pod annotation: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if len(m) == 0 {
		return nil, nil
	}
	p := &podVolumes{vols: m}
	for n := range m {
		p.names = append(p.names, n)
	}
	sort.Strings(p.names)
	return p, nil
}

func (p *podVolumes) count() int {
	if p == nil {
		return 0
	}
	return len(p.names)
}

// slot is the hot-plug slot of volume name (-1: not a volume of the pod).
func (p *podVolumes) slot(name string) int {
	if p == nil {
		return -1
	}
	i, ok := slices.BinarySearch(p.names, name)
	if !ok {
		return -1
	}
	return i
}

// volumeUse is one sealed volume as a placeholder container's OCI spec carries it.
type volumeUse struct {
	name, mode string
	// source is a Filesystem claim's host directory (the bind mount's source).
	source string
	// major, minor number a Block claim's host device (linux.devices).
	major, minor int64
}

// containerVolumes finds the sealed volumes in a placeholder container's OCI spec: mounts
// and devices at spec.PlaceholderVolumePath(name). Anything there that is not a volume of the
// pod's annotation, or not of its mode, is refused.
func containerVolumes(sp *specs.Spec, vols *podVolumes, container string) ([]volumeUse, error) {
	var uses []volumeUse
	seen := map[string]bool{}
	check := func(where, p, mode string) (string, error) {
		name := strings.TrimPrefix(path.Clean(p), spec.PlaceholderVolumeDir)
		if !spec.ValidVolumeName(name) {
			return "", fmt.Errorf("container %s: %s %s: %q is not a volume name: %w", container, where, p, name, errdefs.ErrInvalidArgument)
		}
		if vols.slot(name) < 0 {
			return "", fmt.Errorf("container %s: %s %s: volume %s is not in the pod's annotation %s: %w", container, where, p, name, spec.AnnotationVolumes, errdefs.ErrInvalidArgument)
		}
		if m := vols.vols[name].Mode; m != mode {
			return "", fmt.Errorf("container %s: %s %s: volume %s is a %s volume (annotation %s), attached as %s: %w", container, where, p, name, m, spec.AnnotationVolumes, mode, errdefs.ErrInvalidArgument)
		}
		if seen[name] {
			return "", fmt.Errorf("container %s: %s %s: volume %s attached twice: %w", container, where, p, name, errdefs.ErrInvalidArgument)
		}
		seen[name] = true
		return name, nil
	}
	for _, m := range sp.Mounts {
		if !strings.HasPrefix(path.Clean(m.Destination), spec.PlaceholderVolumeDir) {
			continue
		}
		name, err := check("mount", m.Destination, spec.VolumeModeFilesystem)
		if err != nil {
			return nil, err
		}
		if !filepath.IsAbs(m.Source) {
			return nil, fmt.Errorf("container %s: mount %s: source %q is not an absolute host path: %w", container, m.Destination, m.Source, errdefs.ErrInvalidArgument)
		}
		uses = append(uses, volumeUse{name: name, mode: spec.VolumeModeFilesystem, source: m.Source})
	}
	if sp.Linux != nil {
		for _, d := range sp.Linux.Devices {
			if !strings.HasPrefix(path.Clean(d.Path), spec.PlaceholderVolumeDir) {
				continue
			}
			name, err := check("device", d.Path, spec.VolumeModeBlock)
			if err != nil {
				return nil, err
			}
			if d.Type != "b" {
				return nil, fmt.Errorf("container %s: device %s: type %q, want a block device (b): %w", container, d.Path, d.Type, errdefs.ErrInvalidArgument)
			}
			uses = append(uses, volumeUse{name: name, mode: spec.VolumeModeBlock, major: d.Major, minor: d.Minor})
		}
	}
	sort.Slice(uses, func(i, j int) bool { return uses[i].name < uses[j].name })
	return uses, nil
}

// imageSize is the size of a Filesystem claim's image: the claim's, rounded up to volumeAlign.
func imageSize(sizeBytes int64) int64 {
	return (sizeBytes + volumeAlign - 1) / volumeAlign * volumeAlign
}

// openVolumeImage opens dir/VolumeImageFile read-write, creating it on first use as a sparse
// file of size bytes: under a temporary name (O_EXCL), sized, then linked into place, so the
// image appears with its full size or not at all, and an existing image is never truncated
// or replaced (two creators: one links, the other opens the winner's). An existing image of
// another size is refused, naming it. created reports a new image.
func openVolumeImage(dir string, size int64) (f *os.File, created bool, err error) {
	img := filepath.Join(dir, VolumeImageFile)
	dfd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false, fmt.Errorf("volume directory %s: %w", dir, err)
	}
	defer unix.Close(dfd)
	for attempt := 0; attempt < 2; attempt++ {
		fd, err := unix.Openat(dfd, VolumeImageFile, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			f := os.NewFile(uintptr(fd), img)
			if err := checkImage(f, img, size); err != nil {
				f.Close()
				return nil, false, err
			}
			return f, false, nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return nil, false, fmt.Errorf("volume image %s: %w", img, err)
		}
		f, err := newImage(dfd, dir, size)
		if err != nil {
			return nil, false, err
		}
		tmp := filepath.Base(f.Name())
		err = unix.Linkat(dfd, tmp, dfd, VolumeImageFile, 0)
		_ = unix.Unlinkat(dfd, tmp, 0)
		if err == nil {
			_ = unix.Fsync(dfd)
			return f, true, nil
		}
		f.Close()
		if !errors.Is(err, unix.EEXIST) {
			return nil, false, fmt.Errorf("volume image %s: %w", img, err)
		}
		// Another creator linked first: open theirs.
	}
	return nil, false, fmt.Errorf("volume image %s: created and removed concurrently", img)
}

// newImage creates a sparse file of size bytes under a temporary name in dfd.
func newImage(dfd int, dir string, size int64) (*os.File, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	tmp := "." + VolumeImageFile + "." + hex.EncodeToString(rnd[:])
	fd, err := unix.Openat(dfd, tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("volume image in %s: create %s: %w", dir, tmp, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir, tmp))
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		_ = unix.Unlinkat(dfd, tmp, 0)
		return nil, fmt.Errorf("volume image in %s: size %d: %w", dir, size, err)
	}
	return f, nil
}

// checkImage refuses an existing image that is not a regular file of size bytes.
func checkImage(f *os.File, img string, size int64) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("volume image %s: %w", img, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("volume image %s: %s, not a regular file: %w", img, st.Mode().Type(), errdefs.ErrFailedPrecondition)
	}
	if st.Size() != size {
		return fmt.Errorf("volume image %s: %d bytes, the claim's size is %d (the image is never resized): %w", img, st.Size(), size, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// blockDevices finds host block devices by number: sys and dev are /sys and /dev (tests: a
// fake tree).
type blockDevices struct{ sys, dev string }

var hostBlockDevices = blockDevices{sys: "/sys", dev: "/dev"}

// path returns the device node of major:minor: sys/dev/block/M:m/uevent names it (DEVNAME),
// and the node must be a block device of that number.
func (b blockDevices) path(major, minor int64) (string, error) {
	if major < 0 || minor < 0 || major > 0xfff || minor > 0xfffff {
		return "", fmt.Errorf("block device %d:%d: number out of range", major, minor)
	}
	num := strconv.FormatInt(major, 10) + ":" + strconv.FormatInt(minor, 10)
	ue, err := os.ReadFile(filepath.Join(b.sys, "dev", "block", num, "uevent"))
	if err != nil {
		return "", fmt.Errorf("block device %s: %w", num, err)
	}
	var name string
	for _, l := range strings.Split(string(ue), "\n") {
		if v, ok := strings.CutPrefix(l, "DEVNAME="); ok {
			name = v
		}
	}
	if name == "" || !filepath.IsLocal(name) {
		return "", fmt.Errorf("block device %s: DEVNAME %q in sysfs is not a name under %s", num, name, b.dev)
	}
	p := filepath.Join(b.dev, name)
	if err := checkBlockDevice(p, major, minor); err != nil {
		return "", err
	}
	return p, nil
}

// checkBlockDevice checks that p (not following a final link) is block device major:minor.
func checkBlockDevice(p string, major, minor int64) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fmt.Errorf("block device %d:%d: %w", major, minor, err)
	}
	return sameDevice(p, &st, major, minor)
}

func sameDevice(p string, st *unix.Stat_t, major, minor int64) error {
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return fmt.Errorf("block device %d:%d: %s is not a block device", major, minor, p)
	}
	if int64(unix.Major(st.Rdev)) != major || int64(unix.Minor(st.Rdev)) != minor {
		return fmt.Errorf("block device %d:%d: %s is device %d:%d", major, minor, p, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	return nil
}

// openBlockDevice opens the device node p of major:minor read-write and checks the opened
// descriptor is that device (the node may have been replaced since the lookup).
func openBlockDevice(p string, major, minor int64) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("block device %d:%d: %w", major, minor, err)
	}
	f := os.NewFile(uintptr(fd), p)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("block device %d:%d: %w", major, minor, err)
	}
	if err := sameDevice(p, &st, major, minor); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// setDirect turns O_DIRECT on for f (the guest's writes bypass the host page cache); a file
// system without O_DIRECT (tmpfs) keeps the page cache.
func setDirect(f *os.File) bool {
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return false
	}
	_, err = unix.FcntlInt(f.Fd(), unix.F_SETFL, fl|unix.O_DIRECT)
	return err == nil
}

// volumeAttacher hot-plugs a pod VM's sealed volumes and attaches them in the guest, once per
// volume: a volume plugged and attached for one container is not again for the next.
type volumeAttacher struct {
	vols         *podVolumes
	qmpSocket    string
	confidential bool // snp, tdx: modern-only virtio with the DMA API
	agent        api.AgentService
	devices      blockDevices
	direct       func(*os.File) bool // setDirect (tests: a fixed answer)
	log          *slog.Logger

	mu       sync.Mutex
	plugged  map[string]bool
	attached map[string]bool
}

func newVolumeAttacher(vols *podVolumes, qmpSocket string, confidential bool, agent api.AgentService, log *slog.Logger) *volumeAttacher {
	return &volumeAttacher{vols: vols, qmpSocket: qmpSocket, confidential: confidential, agent: agent, devices: hostBlockDevices,
		direct: setDirect, log: log, plugged: map[string]bool{}, attached: map[string]bool{}}
}

// attach hot-plugs and attaches, before the guest creates container, the sealed volumes its
// OCI spec carries. The volumes' mounts and devices reach the guest only this way (the shim
// forwards no mount or device of a container: CreateContainer names the container only).
func (a *volumeAttacher) attach(ctx context.Context, sp *specs.Spec, container string) error {
	var vols *podVolumes
	if a != nil {
		vols = a.vols
	}
	uses, err := containerVolumes(sp, vols, container)
	if err != nil || len(uses) == 0 {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var q *qemu.QMP
	defer func() {
		if q != nil {
			q.Close()
		}
	}()
	for _, u := range uses {
		if a.attached[u.name] {
			continue
		}
		slot := a.vols.slot(u.name)
		if !a.plugged[u.name] {
			if q == nil {
				if q, err = qemu.DialQMP(ctx, a.qmpSocket, 0); err != nil {
					return fmt.Errorf("volume %s: %w", u.name, err)
				}
			}
			t0 := time.Now()
			d, created, err := a.disk(u, slot)
			if err != nil {
				return fmt.Errorf("container %s: volume %s: %w", container, u.name, err)
			}
			err = qemu.Hotplug(ctx, q, d)
			d.File.Close() // QEMU holds its own descriptor
			if err != nil {
				return fmt.Errorf("container %s: volume %s: %w", container, u.name, err)
			}
			a.plugged[u.name] = true
			a.log.Info("sealpod phase", "phase", "volume hot-plug", "volume", u.name, "mode", u.mode, "slot", slot,
				"driver", d.Driver, "direct", d.Direct, "created", created, "ms", ms(time.Since(t0)))
		}
		r, err := a.agent.AttachVolume(ctx, &api.AttachVolumeRequest{Name: u.name, Serial: qemu.VolumeSerial(slot)})
		if err != nil {
			return fmt.Errorf("attach volume %s in the guest: %w", u.name, err)
		}
		a.attached[u.name] = true
		a.log.Info("sealpod phase", "phase", "volume attach", "volume", u.name, "guest_open_ms", r.GetOpenUs()/1000)
	}
	return nil
}

// disk opens what backs volume use u: a Filesystem claim's image (created on first use) or
// a Block claim's host device.
func (a *volumeAttacher) disk(u volumeUse, slot int) (qemu.Disk, bool, error) {
	d := qemu.Disk{Slot: slot, Confidential: a.confidential}
	var created bool
	switch u.mode {
	case spec.VolumeModeFilesystem:
		f, c, err := openVolumeImage(u.source, imageSize(a.vols.vols[u.name].SizeBytes))
		if err != nil {
			return d, false, err
		}
		d.File, d.Driver, created = f, qemu.DriverFile, c
	default:
		p, err := a.devices.path(u.major, u.minor)
		if err != nil {
			return d, false, err
		}
		if d.File, err = openBlockDevice(p, u.major, u.minor); err != nil {
			return d, false, err
		}
		d.Driver = qemu.DriverHostDevice
	}
	d.Direct = a.direct(d.File)
	return d, created, nil
}
