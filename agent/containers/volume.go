package containers

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/agent/errkind"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// ErrVolumeNotAttached: a container uses an encrypted volume that AttachVolume has not
// brought in yet (the shim attaches every volume before creating a container that uses it).
var ErrVolumeNotAttached error = errkind.New("encrypted volume not attached")

// AttachedVolume is an opened sealed encrypted volume (agent/server opens it with
// agent/volume).
type AttachedVolume struct {
	// Mode is the sealed claim's mode: spec.VolumeModeFilesystem or spec.VolumeModeBlock.
	Mode string
	// Path is the mounted file system (Filesystem) or the decrypted block device node (Block).
	Path string
	// ReadOnly: every mount of the volume is read-only (also when the sealed claim says so).
	ReadOnly bool
}

// AttachVolume makes the encrypted volume name of the pod available to the containers
// created after it: a Filesystem volume is bind-mounted from v.Path at each sealed Mount, a
// Block volume's device is created at each sealed Device path. Once per volume.
func (m *Manager) AttachVolume(name string, v AttachedVolume) error {
	m.mu.Lock()
	p := m.pod
	m.mu.Unlock()
	if p == nil {
		return fmt.Errorf("attach volume %s: %w", name, ErrNoPod)
	}
	p.volMu.Lock()
	defer p.volMu.Unlock()
	pv, ok := p.volumes[name]
	switch {
	case !ok || pv.kind != spec.VolumeEncrypted:
		return fmt.Errorf("attach volume %q: %w: not an encrypted volume of the sealed spec", name, ErrInvalid)
	case pv.path != "":
		return fmt.Errorf("attach volume %s: already attached", name)
	case v.Mode != pv.mode:
		return fmt.Errorf("attach volume %s: %w: mode %q, the sealed claim's is %q", name, ErrInvalid, v.Mode, pv.mode)
	case !path.IsAbs(v.Path) || path.Clean(v.Path) != v.Path:
		return fmt.Errorf("attach volume %s: %w: path %q is not a clean absolute path", name, ErrInvalid, v.Path)
	}
	var st unix.Stat_t
	if err := unix.Stat(v.Path, &st); err != nil {
		return fmt.Errorf("attach volume %s: %w", name, err)
	}
	switch t := st.Mode & unix.S_IFMT; {
	case pv.mode == spec.VolumeModeBlock && t != unix.S_IFBLK:
		return fmt.Errorf("attach volume %s: %s is not a block device", name, v.Path)
	case pv.mode == spec.VolumeModeBlock:
		pv.dev = st.Rdev
	case t != unix.S_IFDIR:
		return fmt.Errorf("attach volume %s: %s is not a directory", name, v.Path)
	}
	pv.path = v.Path
	pv.readOnly = pv.readOnly || v.ReadOnly
	p.volumes[name] = pv
	return nil
}

// encryptedSource returns the attached encrypted volume pv's root for a mount of volume
// name, or why not.
func encryptedSource(name string, pv podVolume) error {
	switch {
	case pv.path == "":
		return fmt.Errorf("%w: volume %q", ErrVolumeNotAttached, name)
	case pv.mode != spec.VolumeModeFilesystem:
		return fmt.Errorf("%w: volume %q is a Block volume: a device, not a mount", ErrInvalid, name)
	}
	return nil
}

// blockDevices returns the sealed Devices of sc as runtime devices and the device-cgroup
// rules that allow exactly them.
func blockDevices(p *pod, sc *spec.Container) ([]specs.LinuxDevice, []specs.LinuxDeviceCgroup, error) {
	var devs []specs.LinuxDevice
	var rules []specs.LinuxDeviceCgroup
	for _, d := range sc.Devices {
		if !path.IsAbs(d.Path) || path.Clean(d.Path) != d.Path || d.Path == "/" {
			return nil, nil, fmt.Errorf("%w: device of volume %s: path %q", ErrInvalid, d.Volume, d.Path)
		}
		pv, ok := p.volume(d.Volume)
		switch {
		case !ok || pv.kind != spec.VolumeEncrypted || pv.mode != spec.VolumeModeBlock:
			return nil, nil, fmt.Errorf("%w: device at %s: volume %q is not a Block encrypted volume", ErrInvalid, d.Path, d.Volume)
		case pv.path == "":
			return nil, nil, fmt.Errorf("%w: volume %q", ErrVolumeNotAttached, d.Volume)
		}
		major, minor := int64(unix.Major(pv.dev)), int64(unix.Minor(pv.dev))
		mode := os.FileMode(0o660)
		access := "rw"
		if pv.readOnly {
			mode, access = 0o440, "r"
		}
		uid, gid := uint32(0), uint32(0)
		devs = append(devs, specs.LinuxDevice{Path: d.Path, Type: "b", Major: major, Minor: minor, FileMode: &mode, UID: &uid, GID: &gid})
		rules = append(rules, specs.LinuxDeviceCgroup{Allow: true, Type: "b", Major: &major, Minor: &minor, Access: access})
	}
	return devs, rules, nil
}

// stageSubPath opens rel inside root (every component resolved inside it, so a symlink
// cannot lead out) and bind-mounts what it opened at staging/<n>, an agent-private path
// (the container's directory, removed with it) that the container's bind mount then takes.
// A container that swaps a component of rel for a symlink after this check (the kubelet's
// CVE-2017-1002101 and CVE-2021-25741) gains nothing: the source is the opened file, not
// the path.
func stageSubPath(staging string, n int, root, rel string) (string, error) {
	f, err := pathrs.OpenInRoot(root, rel)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return "", err
	}
	dst := filepath.Join(staging, strconv.Itoa(n))
	switch {
	case fi.IsDir():
		err = os.Mkdir(dst, 0o700)
	case fi.Mode().IsRegular():
		var t *os.File
		if t, err = os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); err == nil {
			err = t.Close()
		}
	default:
		return "", fmt.Errorf("%w: not a directory or regular file", ErrInvalid)
	}
	if err != nil {
		return "", err
	}
	runtime.LockOSThread() // the mount lands in this thread's mount namespace: the agent's
	defer runtime.UnlockOSThread()
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), dst, "", unix.MS_BIND, ""); err != nil {
		return "", fmt.Errorf("bind the opened subPath: %w", err)
	}
	return dst, nil
}
