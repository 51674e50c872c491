package image

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/pefseal"
)

// Info describes a secure image without any plaintext of its sealed specs.
type Info struct {
	Digest    string         `json:"digest"`
	Format    string         `json:"format"`
	Guest     GuestInfo      `json:"guest"`
	Workloads []WorkloadInfo `json:"workloads"`
}

// GuestInfo describes the measured guest.
type GuestInfo struct {
	Cmdline      string              `json:"cmdline"`
	VCPUs        int                 `json:"vcpus"`
	MemoryMiB    int                 `json:"memoryMiB"`
	Measurements bundle.Measurements `json:"measurements"`
	Files        []FileInfo          `json:"files"`
}

// FileInfo is one guest file.
type FileInfo struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// WorkloadInfo is the clear header of one envelope and its digest (the HOST_DATA).
type WorkloadInfo struct {
	ID             string   `json:"id"`
	EnvelopeDigest string   `json:"envelopeDigest"`
	Size           int      `json:"size"`
	TEEs           []string `json:"tees"`
	KBS            string   `json:"kbs"`
	KBSCASHA256    string   `json:"kbsCASHA256"`
	KeyID          string   `json:"keyID"`
	Cipher         string   `json:"cipher"`
	// Guest is the workload's own guest size and measurements (WorkloadGuestDir); nil =
	// the image's guest.json.
	Guest *WorkloadGuestInfo `json:"guest,omitempty"`
	// PEFESM is the workload's ESM cpio (PEFDir/<id>.cpio); nil when not sealed for pef.
	PEFESM *FileInfo `json:"pefEsm,omitempty"`
}

// WorkloadGuestInfo is a workload's guest.json: the size it boots with and the measurements
// for that size.
type WorkloadGuestInfo struct {
	VCPUs        int                 `json:"vcpus"`
	MemoryMiB    int                 `json:"memoryMiB"`
	Measurements bundle.Measurements `json:"measurements"`
}

// maxGuestFile bounds what Inspect reads of a single file.
const maxGuestFile = 1 << 30

// maxWorkloadGuest bounds a workload's guest.json (the shim's limit).
const maxWorkloadGuest = 64 << 10

// Inspect reads a secure image's guest description and envelope headers.
func Inspect(img v1.Image) (*Info, error) {
	d, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("inspect image: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("inspect image %s: config: %w", d, err)
	}
	info := &Info{Digest: d.String(), Format: cfg.Config.Labels[LabelFormat]}
	if info.Format != FormatV1 {
		return nil, fmt.Errorf("inspect image %s: label %s = %q: not a Sealpod secure image", d, LabelFormat, info.Format)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var guestJSON []byte
	workloadGuests := map[string]*WorkloadGuestInfo{}
	pefFiles := map[string]*FileInfo{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("inspect image %s: %w", d, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		p := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		switch {
		case path.Dir(p) == GuestDir:
			sum := sha256.New()
			var keep strings.Builder
			w := io.Writer(sum)
			if path.Base(p) == bundle.ConfigFile {
				w = io.MultiWriter(sum, &keep)
			}
			n, err := io.Copy(w, io.LimitReader(tr, maxGuestFile))
			if err != nil {
				return nil, fmt.Errorf("inspect image %s: %s: %w", d, p, err)
			}
			info.Guest.Files = append(info.Guest.Files, FileInfo{Path: "/" + p, Size: n, SHA256: hex.EncodeToString(sum.Sum(nil))})
			if keep.Len() > 0 {
				guestJSON = []byte(keep.String())
			}
		case path.Dir(p) == WorkloadGuestDir && strings.HasSuffix(p, ".json"):
			raw, err := io.ReadAll(io.LimitReader(tr, maxWorkloadGuest+1))
			if err != nil {
				return nil, fmt.Errorf("inspect image %s: %s: %w", d, p, err)
			}
			if len(raw) > maxWorkloadGuest {
				return nil, fmt.Errorf("inspect image %s: %s: larger than %d bytes", d, p, maxWorkloadGuest)
			}
			gc, err := bundle.ParseConfig(raw)
			if err != nil {
				return nil, fmt.Errorf("inspect image %s: %s: %w", d, p, err)
			}
			workloadGuests[strings.TrimSuffix(path.Base(p), ".json")] = &WorkloadGuestInfo{VCPUs: gc.VCPUs, MemoryMiB: gc.MemoryMiB, Measurements: gc.Measurements}
		case path.Dir(p) == PEFDir && strings.HasSuffix(p, ".cpio"):
			sum := sha256.New()
			n, err := io.Copy(sum, io.LimitReader(tr, pefseal.MaxCPIO+1))
			if err != nil {
				return nil, fmt.Errorf("inspect image %s: %s: %w", d, p, err)
			}
			pefFiles[strings.TrimSuffix(path.Base(p), ".cpio")] = &FileInfo{Path: "/" + p, Size: n, SHA256: hex.EncodeToString(sum.Sum(nil))}
		case path.Dir(p) == SealedDir && strings.HasSuffix(p, ".json"):
			env, err := io.ReadAll(io.LimitReader(tr, envelope.MaxSize+1))
			if err != nil {
				return nil, fmt.Errorf("inspect image %s: %s: %w", d, p, err)
			}
			hdr, err := envelope.ParseHeader(env)
			if err != nil {
				return nil, fmt.Errorf("inspect image %s: %s: %w", d, p, err)
			}
			id := strings.TrimSuffix(path.Base(p), ".json")
			if hdr.Workload != id {
				return nil, fmt.Errorf("inspect image %s: %s: header names workload %q", d, p, hdr.Workload)
			}
			info.Workloads = append(info.Workloads, WorkloadInfo{
				ID: id, EnvelopeDigest: envelope.Sum(env).String(), Size: len(env), TEEs: hdr.TEEs,
				KBS: hdr.KBS.URL, KBSCASHA256: hdr.KBS.CASHA256, KeyID: hdr.KeyID, Cipher: hdr.Cipher,
			})
		}
	}
	if guestJSON == nil {
		return nil, fmt.Errorf("inspect image %s: /%s/%s missing", d, GuestDir, bundle.ConfigFile)
	}
	gc, err := bundle.ParseConfig(guestJSON)
	if err != nil {
		return nil, fmt.Errorf("inspect image %s: %w", d, err)
	}
	info.Guest.Cmdline, info.Guest.VCPUs, info.Guest.MemoryMiB, info.Guest.Measurements = gc.Cmdline, gc.VCPUs, gc.MemoryMiB, gc.Measurements
	sort.Slice(info.Guest.Files, func(i, j int) bool { return info.Guest.Files[i].Path < info.Guest.Files[j].Path })
	sort.Slice(info.Workloads, func(i, j int) bool { return info.Workloads[i].ID < info.Workloads[j].ID })
	for i := range info.Workloads {
		info.Workloads[i].Guest = workloadGuests[info.Workloads[i].ID]
		delete(workloadGuests, info.Workloads[i].ID)
		info.Workloads[i].PEFESM = pefFiles[info.Workloads[i].ID]
		delete(pefFiles, info.Workloads[i].ID)
	}
	for id := range pefFiles {
		return nil, fmt.Errorf("inspect image %s: /%s/%s.cpio: no envelope for workload %q", d, PEFDir, id, id)
	}
	for id := range workloadGuests {
		return nil, fmt.Errorf("inspect image %s: /%s/%s.json: no envelope for workload %q", d, WorkloadGuestDir, id, id)
	}
	return info, nil
}
