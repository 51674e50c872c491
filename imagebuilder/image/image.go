// Package image builds, writes and reads the secure OCI image (docs/formats.md#secure-image-imagebuilderimage): the measured
// guest (kernel, initrd, optional firmware, guest.json) and the sealed envelopes, in plain
// tar layers with fixed metadata so that the same inputs always give the same digest.
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/pefseal"
)

// Paths inside the secure image.
const (
	GuestDir  = "sealpod/guest"
	SealedDir = "sealpod/sealed"
	// WorkloadGuestDir holds <workload>.json: the guest.json a workload boots with (its own
	// vcpus, memoryMiB and the measurements for that size); GuestDir/guest.json is the
	// bundle's, kept for images without one.
	WorkloadGuestDir = "sealpod/workload-guest"
	ExplainPath      = "sealpod/bin/explain"
	// PEFDir holds <workload>.cpio: the workload's ESM blob in the cpio archive svm-tools'
	// `svm add` prepends to the initrd; a pef guest boots with this file followed by
	// GuestDir/initrd.img as its initrd (docs/pef.md#sealing).
	PEFDir = "sealpod/pef"
)

// User is the secure image's USER: numeric and non-root, so the kubelet's runAsNonRoot check
// passes for a placeholder that sets runAsNonRoot without runAsUser (it refuses uid 0 and
// names it cannot verify). The explain entrypoint runs as anyone. The containers' real user
// is the sealed one, enforced by the agent inside the guest.
const User = "65532:65532"

// Labels set on the image config.
const (
	LabelFormat    = "io.sealpod.image.format"
	LabelWorkloads = "io.sealpod.workloads"
	FormatV1       = "sealpod-secure-image-v1"
)

// epoch is the fixed timestamp of every tar entry and of the image config.
var epoch = time.Unix(0, 0).UTC()

var workloadRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

// Input is everything a secure image holds.
type Input struct {
	Guest *bundle.Bundle
	// Envelopes maps workload id to envelope bytes.
	Envelopes map[string][]byte
	// WorkloadGuests maps workload id to the guest.json it boots with (sized for its pod,
	// docs/formats.md#guest-size); a workload without one boots the bundle's guest.json.
	WorkloadGuests map[string]*bundle.Config
	// PEF maps workload id to its ESM cpio (pefseal.Sealed.CPIO), for images sealed for pef.
	PEF map[string][]byte
}

// Build assembles the secure image. It reads nothing from disk and uses no clock, so equal
// inputs give an equal digest.
func Build(in Input) (v1.Image, error) {
	if in.Guest == nil {
		return nil, fmt.Errorf("build secure image: no guest bundle")
	}
	if len(in.Envelopes) == 0 {
		return nil, fmt.Errorf("build secure image: no sealed workloads")
	}
	guestJSON, err := in.Guest.Config.Marshal()
	if err != nil {
		return nil, fmt.Errorf("build secure image: guest.json: %w", err)
	}
	guestFiles := []file{
		{path: path.Join(GuestDir, bundle.KernelFile), data: in.Guest.Kernel, mode: 0o444},
		{path: path.Join(GuestDir, bundle.InitrdFile), data: in.Guest.Initrd, mode: 0o444},
		{path: path.Join(GuestDir, bundle.ConfigFile), data: guestJSON, mode: 0o444},
		{path: ExplainPath, data: explainELF(), mode: 0o555},
	}
	if in.Guest.Firmware != nil {
		guestFiles = append(guestFiles, file{path: path.Join(GuestDir, bundle.FirmwareFile), data: in.Guest.Firmware, mode: 0o444})
	}
	ids := make([]string, 0, len(in.Envelopes))
	var sealedFiles []file
	for id, env := range in.Envelopes {
		if !workloadRE.MatchString(id) || len(id) > 253 {
			return nil, fmt.Errorf("build secure image: workload id %q is not a DNS-1123 name", id)
		}
		ids = append(ids, id)
		sealedFiles = append(sealedFiles, file{path: path.Join(SealedDir, id+".json"), data: env, mode: 0o444})
	}
	for id, g := range in.WorkloadGuests {
		if _, ok := in.Envelopes[id]; !ok {
			return nil, fmt.Errorf("build secure image: guest.json for workload %q, which has no envelope", id)
		}
		if err := g.Validate(); err != nil {
			return nil, fmt.Errorf("build secure image: workload %s: %w", id, err)
		}
		data, err := g.Marshal()
		if err != nil {
			return nil, fmt.Errorf("build secure image: workload %s: guest.json: %w", id, err)
		}
		sealedFiles = append(sealedFiles, file{path: path.Join(WorkloadGuestDir, id+".json"), data: data, mode: 0o444})
	}
	for id, cpio := range in.PEF {
		if _, ok := in.Envelopes[id]; !ok {
			return nil, fmt.Errorf("build secure image: ESM cpio for workload %q, which has no envelope", id)
		}
		if _, rest, err := pefseal.SplitInitrd(cpio); err != nil {
			return nil, fmt.Errorf("build secure image: workload %s: ESM cpio: %w", id, err)
		} else if len(rest) != 0 {
			return nil, fmt.Errorf("build secure image: workload %s: ESM cpio: %d bytes after the archive", id, len(rest))
		}
		sealedFiles = append(sealedFiles, file{path: path.Join(PEFDir, id+".cpio"), data: cpio, mode: 0o444})
	}
	sort.Strings(ids)

	// Two layers: the guest (shared by every image built from the same bundle, so
	// registries and nodes store it once) and the sealed envelopes.
	var layers []v1.Layer
	for _, files := range [][]file{guestFiles, sealedFiles} {
		l, err := tarLayer(files)
		if err != nil {
			return nil, fmt.Errorf("build secure image: %w", err)
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, fmt.Errorf("build secure image: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("build secure image: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.Created = v1.Time{Time: epoch}
	cfg.Architecture = "amd64"
	cfg.OS = "linux"
	cfg.Config.Entrypoint = []string{"/" + ExplainPath}
	cfg.Config.User = User
	cfg.Config.Labels = map[string]string{
		LabelFormat:    FormatV1,
		LabelWorkloads: strings.Join(ids, ","),
	}
	cfg.History = nil
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("build secure image: %w", err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	return img, nil
}

type file struct {
	path string
	data []byte
	mode int64
}

// tarLayer writes files (and their parent directories) in sorted order with fixed owners
// and times, and wraps the tar as a gzip-compressed OCI layer.
func tarLayer(files []file) (v1.Layer, error) {
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	hdr := func(name string, typ byte, mode, size int64) *tar.Header {
		return &tar.Header{
			Typeflag: typ, Name: name, Mode: mode, Size: size,
			ModTime: epoch, AccessTime: epoch, ChangeTime: epoch,
			Uid: 0, Gid: 0, Uname: "root", Gname: "root", Format: tar.FormatPAX,
		}
	}
	for _, f := range files {
		var parents []string
		for d := path.Dir(f.path); d != "." && d != "/"; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(hdr(d+"/", tar.TypeDir, 0o755, 0)); err != nil {
				return nil, err
			}
		}
		if err := tw.WriteHeader(hdr(f.path, tar.TypeReg, f.mode, int64(len(f.data)))); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	raw := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}
