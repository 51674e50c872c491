package server

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"hash/fnv"

	"github.com/sealpod/sealpod/agent/errkind"
	"github.com/sealpod/sealpod/agent/volume"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// OpenVolume is Config.OpenVolume's default: agent/volume opens (on first use formats) the
// volume, with the broker's generation check, and mounts a Filesystem volume at
// r.MountPoint. Its errors carry the kinds volumeError maps (the details stay in the guest).
func OpenVolume(ctx context.Context, r VolumeRequest) (*OpenedVolume, error) {
	mode := volume.ModeFilesystem
	if r.Mode == spec.VolumeModeBlock {
		mode = volume.ModeBlock
	}
	v, err := volume.Open(ctx, r.Device, r.Secret, r.Identity, volume.Options{
		Name: dmName(r.Name), Mode: mode, MountPoint: r.MountPoint, ReadOnly: r.ReadOnly,
		AllowFormat: true, Generations: r.Generations,
	})
	if err != nil {
		return nil, volumeKind(err)
	}
	path := v.MountPoint
	if mode == volume.ModeBlock {
		path = v.Device
	}
	return &OpenedVolume{Path: path, Formatted: v.Formatted, Close: v.Close}, nil
}

// volumeKind gives an agent/volume error its host-visible kind.
func volumeKind(err error) error {
	var kind error = errkind.Of(err) // a kind of ours (the broker calls), a context error, or Unknown
	switch {
	case errors.Is(err, volume.ErrRollback):
		kind = ErrVolumeRollback
	case errors.Is(err, volume.ErrWrongIdentity):
		kind = ErrVolumeIdentity
	case errors.Is(err, volume.ErrNotFormatted), errors.Is(err, volume.ErrUnknownContent), errors.Is(err, volume.ErrBadSuperblock),
		errors.Is(err, volume.ErrBadHeader):
		kind = ErrVolumeContent
	case errors.Is(err, unix.EILSEQ), errors.Is(err, unix.EIO):
		// dm-integrity fails a read whose tag does not match with BLK_STS_PROTECTION, which
		// reaches user space as EILSEQ (the e2e flipped byte); EIO for other read errors.
		kind = ErrVolumeIntegrity
	}
	return errkind.Withhold(kind, err)
}

// dmName is the device-mapper name of volume name (agent/volume allows 1..40 of [a-z0-9-]):
// the name itself, or for a longer name its first 30 bytes and a hash of the whole.
func dmName(name string) string {
	if len(name) <= 40 {
		return name
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	return fmt.Sprintf("%.30s-%08x", name, h.Sum32())
}
