package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/errkind"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/kbs/client"
)

// Sealed encrypted volumes (docs/volumes.md, docs/agent.md#volumes): the shim hot-plugs each
// claim as a virtio block device with serial "sealpod-<N>" and calls AttachVolume{name,
// serial}; the agent finds the device by its serial, derives the claim's identity from the
// sealed claim and the host's pod name, opens it (agent/volume: dm-integrity + dm-crypt, the
// broker's generation check), mounts a Filesystem volume at an agent-private directory and
// hands it to the pod, which bind-mounts it (or creates the Block device) in the containers
// that use it.

// Defaults of the Config fields for volumes.
const (
	DefaultSysBlock   = "/sys/block"
	DefaultDevDir     = "/dev"
	DefaultVolumeDir  = "/run/sealpod/volumes"
	DefaultDeviceWait = 20 * time.Second
)

// Failure kinds of AttachVolume (errkind: their texts reach the host; the details, which can
// quote the claim, stay in the guest).
var (
	// ErrVolumeDevice: no virtio block device with the serial appeared in time.
	ErrVolumeDevice error = errkind.New("no block device with that serial")
	// ErrVolumePodName: the host's pod name does not fit the volume's claim (a StatefulSet
	// pod must be "<statefulset>-<ordinal>"; an ephemeral volume needs the pod name).
	ErrVolumePodName error = errkind.New("host pod name does not fit the volume's claim")
	// ErrVolumeBroker: the key broker's volume generation calls failed.
	ErrVolumeBroker error = errkind.New("key broker volume generation call failed")
	// ErrVolumeRollback: the volume is an older copy than the broker's generation says.
	ErrVolumeRollback error = errkind.New("volume rollback detected: older than the broker's generation")
	// ErrVolumeIdentity: the volume does not open with this workload's volume secret and
	// this claim's identity (another workload's or claim's volume, or a changed one).
	ErrVolumeIdentity error = errkind.New("volume does not open with this workload's keys and claim identity")
	// ErrVolumeContent: the device holds data that is not a sealed volume, or is empty
	// although the broker says it was used; it is never formatted.
	ErrVolumeContent error = errkind.New("device is not a sealed volume of this claim")
	// ErrVolumeIntegrity: reading the volume failed dm-integrity's check (EILSEQ, or EIO): the host
	// changed its ciphertext; the guest never sees other data.
	ErrVolumeIntegrity error = errkind.New("volume data failed its integrity check (I/O error)")
	// ErrVolumeNotAttached: a container uses an encrypted volume that is not attached yet.
	ErrVolumeNotAttached error = errkind.New("encrypted volume not attached")
)

// Generations is the broker's two-phase volume generation (agent/volume's rollback check).
type Generations interface {
	Begin(ctx context.Context, identity string) (committed, pending uint64, err error)
	Commit(ctx context.Context, identity string, gen uint64) error
}

// VolumeRequest is one sealed volume to open.
type VolumeRequest struct {
	// Name is the sealed volume's name (a DNS-1123 label).
	Name string
	// Device is the backing block device the host attached (/dev/vdX).
	Device string
	// Identity is the claim identity ("<namespace>/<claim>", spec.Claim.Identity).
	Identity string
	// Mode is spec.VolumeModeFilesystem or spec.VolumeModeBlock.
	Mode     string
	ReadOnly bool
	// MountPoint is where a Filesystem volume is mounted ("" for Block).
	MountPoint string
	// Secret is the workload's volume secret from the broker.
	Secret      []byte
	Generations Generations
}

// OpenedVolume is an open sealed volume.
type OpenedVolume struct {
	// Path is the mount point (Filesystem) or the decrypted block device node (Block).
	Path      string
	Formatted bool
	// Close unmounts and removes the device-mapper devices.
	Close func() error
}

// VolumeOpener opens a sealed volume (OpenVolume, over agent/volume, in the agent).
type VolumeOpener func(ctx context.Context, r VolumeRequest) (*OpenedVolume, error)

// AttachedVolume is what the pod learns about an opened volume.
type AttachedVolume struct {
	// Mode is spec.VolumeModeFilesystem or spec.VolumeModeBlock.
	Mode string
	// Path is the mount point (Filesystem) or the decrypted block device node (Block).
	Path     string
	ReadOnly bool
}

// attachment is one volume of AttachVolume (guarded by Server.mu).
type attachment struct {
	serial string
	busy   bool // being opened
	vol    *OpenedVolume
}

// encryptedVolume returns the sealed encrypted volume name.
func encryptedVolume(sp *spec.Spec, name string) *spec.Volume {
	for i := range sp.Volumes {
		if v := &sp.Volumes[i]; v.Name == name && v.Kind == spec.VolumeEncrypted && v.Claim != nil {
			return v
		}
	}
	return nil
}

// AttachVolume opens the sealed encrypted volume name on the block device with serial.
func (s *Server) AttachVolume(ctx context.Context, req *api.AttachVolumeRequest) (*api.AttachVolumeResponse, error) {
	name, serial := req.GetName(), req.GetSerial()
	if !spec.ValidVolumeName(name) {
		return nil, invalid("attach volume: name %.80q: not a DNS-1123 label", name)
	}
	if !api.ValidVolumeSerial(serial) {
		return nil, invalid("attach volume %s: serial %.80q: want %s<0..99>", name, serial, api.VolumeSerialPrefix)
	}
	t := time.Now()
	s.mu.Lock()
	sp, pod, err := s.sealed()
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	v := encryptedVolume(sp, name)
	if v == nil {
		s.mu.Unlock()
		return nil, status.Errorf(codes.NotFound, "attach volume %s: not an encrypted volume of the sealed spec", name)
	}
	if a := s.volumes[name]; a != nil {
		s.mu.Unlock()
		switch {
		case a.serial != serial:
			return nil, status.Errorf(codes.FailedPrecondition, "attach volume %s: already attached with serial %s", name, a.serial)
		case a.busy:
			return nil, status.Errorf(codes.Unavailable, "attach volume %s: another AttachVolume is in progress", name)
		}
		return &api.AttachVolumeResponse{}, nil // the same attachment again
	}
	for other, a := range s.volumes {
		if a.serial == serial {
			s.mu.Unlock()
			return nil, status.Errorf(codes.FailedPrecondition, "attach volume %s: serial %s is volume %s's", name, serial, other)
		}
	}
	a := &attachment{serial: serial, busy: true}
	s.volumes[name] = a
	access, podName := s.res.Volumes, s.podName
	var secret []byte // a copy: Shutdown wipes the kept secret, possibly while this open runs
	if access != nil {
		secret = bytes.Clone(access.Secret)
	}
	s.mu.Unlock()

	vol, err := s.openVolume(ctx, v, serial, access, secret, podName)
	clear(secret)
	if err == nil {
		err = pod.AttachVolume(ctx, name, AttachedVolume{Mode: v.Claim.Mode, Path: vol.Path, ReadOnly: v.Claim.ReadOnly})
		if err != nil {
			err = errors.Join(err, vol.Close())
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		delete(s.volumes, name)
		s.log.Warn("attach volume refused", "volume", name, "err", err)
		return nil, volumeError(name, err)
	}
	a.busy, a.vol = false, vol
	if s.shutdown { // Shutdown ran meanwhile and did not see this volume
		delete(s.volumes, name)
		go func() { _ = vol.Close() }()
		return nil, status.Errorf(codes.FailedPrecondition, "attach volume %s: agent is shutting down", name)
	}
	s.log.Info("volume attached", "volume", name, "formatted", vol.Formatted, "total_ms", time.Since(t).Milliseconds())
	return &api.AttachVolumeResponse{OpenUs: time.Since(t).Microseconds()}, nil
}

// openVolume finds the device, derives the claim identity and opens the volume.
func (s *Server) openVolume(ctx context.Context, v *spec.Volume, serial string, access *unseal.VolumeAccess, secret []byte, podName string) (*OpenedVolume, error) {
	if access == nil || len(secret) == 0 {
		return nil, fmt.Errorf("volume %s: %w", v.Name, unseal.ErrNoVolumeSecret)
	}
	identity, err := v.Claim.Identity(podName, v.Name)
	if err != nil {
		return nil, errkind.Withhold(ErrVolumePodName, err) // quotes the sealed StatefulSet name
	}
	gens, err := s.cfg.Generations(access)
	if err != nil {
		return nil, err
	}
	dev, err := findDevice(ctx, s.cfg.SysBlock, s.cfg.DevDir, serial, s.cfg.DeviceWait)
	if err != nil {
		return nil, err
	}
	r := VolumeRequest{Name: v.Name, Device: dev, Identity: identity, Mode: v.Claim.Mode, ReadOnly: v.Claim.ReadOnly, Secret: secret, Generations: gens}
	if r.Mode == spec.VolumeModeFilesystem {
		r.MountPoint = filepath.Join(s.cfg.VolumeDir, v.Name)
	}
	return s.cfg.OpenVolume(ctx, r)
}

// volumeError maps an AttachVolume failure to a status whose message names the volume and
// the failure's kind only.
func volumeError(name string, err error) error {
	code := codes.Internal
	switch {
	case errors.Is(err, ErrVolumeDevice):
		code = codes.NotFound
	case errors.Is(err, ErrVolumePodName):
		code = codes.InvalidArgument
	case errors.Is(err, ErrVolumeRollback), errors.Is(err, ErrVolumeIdentity), errors.Is(err, ErrVolumeContent), errors.Is(err, ErrVolumeIntegrity):
		code = codes.PermissionDenied
	case errors.Is(err, unseal.ErrNoVolumeSecret):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrVolumeBroker):
		code = codes.Unavailable
		var ae *client.APIError
		if errors.As(err, &ae) && ae.Status/100 == 4 && !unseal.Transient(err) {
			code = codes.PermissionDenied
		}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Errorf(code, "attach volume %s: %s", name, errkind.Text(err))
}

// findDevice returns the /dev node of the virtio block device whose serial is serial,
// waiting up to wait for the hot-plug to show it.
func findDevice(ctx context.Context, sysBlock, devDir, serial string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		dev, err := lookupSerial(sysBlock, devDir, serial)
		if err != nil || dev != "" {
			return dev, err
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%w: serial %s not in %s after %v", ErrVolumeDevice, serial, sysBlock, wait)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for serial %s: %w", serial, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// lookupSerial scans sysBlock/vd*/serial once. Two devices with the serial are an error; a
// device whose node is not there yet counts as not found.
func lookupSerial(sysBlock, devDir, serial string) (string, error) {
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrVolumeDevice, err)
	}
	found := ""
	for _, e := range ents {
		n := e.Name()
		if !virtioDiskName(n) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(sysBlock, n, "serial")) //nolint:gosec // a sysfs attribute of a vd* entry of the block class
		if err != nil || strings.TrimRight(string(b), "\n\x00 ") != serial {
			continue
		}
		if found != "" {
			return "", fmt.Errorf("%w: serial %s on both %s and %s", ErrVolumeDevice, serial, found, n)
		}
		found = n
	}
	if found == "" {
		return "", nil
	}
	dev := filepath.Join(devDir, found)
	if _, err := os.Stat(dev); err != nil {
		return "", nil // devtmpfs has not made the node yet
	}
	return dev, nil
}

// virtioDiskName reports whether n is a virtio-blk disk name: "vd" and 1..3 lower-case
// letters (partitions and other devices are skipped).
func virtioDiskName(n string) bool {
	rest, ok := strings.CutPrefix(n, "vd")
	if !ok || len(rest) < 1 || len(rest) > 3 {
		return false
	}
	for _, c := range rest {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// volumeBroker is kbs/client's volume generation calls (token-authenticated).
type volumeBroker interface {
	VolumeBegin(ctx context.Context, token, volume string) (committed, pending uint64, err error)
	VolumeCommit(ctx context.Context, token, volume string, gen uint64) error
}

// brokerGenerations is Generations over the broker with the attest answer's token.
type brokerGenerations struct {
	b     volumeBroker
	token string
}

func (g brokerGenerations) Begin(ctx context.Context, identity string) (uint64, uint64, error) {
	c, p, err := g.b.VolumeBegin(ctx, g.token, identity)
	if err != nil {
		return 0, 0, fmt.Errorf("volume begin: %w", errkind.Withhold(ErrVolumeBroker, err))
	}
	return c, p, nil
}

func (g brokerGenerations) Commit(ctx context.Context, identity string, gen uint64) error {
	if err := g.b.VolumeCommit(ctx, g.token, identity, gen); err != nil {
		return fmt.Errorf("volume commit: %w", errkind.Withhold(ErrVolumeBroker, err))
	}
	return nil
}

// BrokerGenerations is Config.Generations' default: the broker that answered the attest,
// with its token.
func BrokerGenerations(a *unseal.VolumeAccess) (Generations, error) {
	if a.Broker == nil {
		return nil, fmt.Errorf("%w: no key broker client", ErrVolumeBroker)
	}
	return brokerGenerations{b: a.Broker, token: a.Token}, nil
}

var _ volumeBroker = (*client.Client)(nil)

// closeVolumes closes every opened volume (Shutdown, after the pod is closed).
func (s *Server) closeVolumes() {
	s.mu.Lock()
	var open []*attachment
	names := []string{}
	for n, a := range s.volumes {
		if a.vol != nil {
			open, names = append(open, a), append(names, n)
		}
		delete(s.volumes, n)
	}
	s.mu.Unlock()
	for i, a := range open {
		if err := a.vol.Close(); err != nil {
			s.log.Warn("shutdown: closing a volume", "volume", names[i], "err", err)
		}
	}
}

// checkVolumesAttached refuses to create a container that uses an encrypted volume that is
// not attached (caller holds s.mu): the shim attaches every volume before CreateContainer.
func (s *Server) checkVolumesAttached(sp *spec.Spec, sc *spec.Container) error {
	check := func(vol string) error {
		if encryptedVolume(sp, vol) == nil {
			return nil
		}
		if a := s.volumes[vol]; a == nil || a.busy {
			return status.Errorf(codes.FailedPrecondition, "create container %s: %s %s (call AttachVolume first)", sc.Name, ErrVolumeNotAttached, vol)
		}
		return nil
	}
	for _, m := range sc.Mounts {
		if err := check(m.Volume); err != nil {
			return err
		}
	}
	for _, d := range sc.Devices {
		if err := check(d.Volume); err != nil {
			return err
		}
	}
	return nil
}
