package spec

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/sealpod/sealpod/internal/lazyregexp"
)

// VolumeEncrypted is a sealed persistent volume (issue 15, docs/volumes.md): a PVC, a
// StatefulSet volumeClaimTemplate or an ephemeral volumeClaimTemplate. The kubelet
// provisions and attaches the claim as for any pod; the shim hands it to the VM as a virtio
// block device and the guest opens it with dm-crypt over dm-integrity, keyed from the
// broker's volume secret and the claim's identity (Claim.Identity).
const VolumeEncrypted VolumeKind = "encrypted"

// Volume modes, as Kubernetes' PersistentVolumeMode.
const (
	VolumeModeFilesystem = "Filesystem"
	VolumeModeBlock      = "Block"
)

// Claim is the claim behind a VolumeEncrypted volume. Exactly one of ClaimName, Template (with
// StatefulSet) or Ephemeral names it.
type Claim struct {
	// Namespace is the pod's namespace, fixed at seal time.
	Namespace string `json:"namespace"`
	// ClaimName is a persistentVolumeClaim volume's claimName.
	ClaimName string `json:"claimName,omitempty"`
	// Template and StatefulSet: a StatefulSet's volumeClaimTemplate; the claim of the pod with
	// ordinal N is "<Template>-<StatefulSet>-<N>", as the StatefulSet controller names it.
	Template    string `json:"template,omitempty"`
	StatefulSet string `json:"statefulSet,omitempty"`
	// Ephemeral: an ephemeral.volumeClaimTemplate; the claim is "<pod name>-<volume name>".
	Ephemeral bool `json:"ephemeral,omitempty"`
	// Mode is VolumeModeFilesystem (ext4 inside) or VolumeModeBlock (the raw decrypted device).
	Mode string `json:"mode"`
	// SizeBytes is the storage the claim requests (resources.requests.storage).
	SizeBytes int64 `json:"sizeBytes"`
	// ReadOnly: every mount of the volume is read-only (the pod's readOnly flag).
	ReadOnly bool `json:"readOnly,omitempty"`
}

// Device places a Block volume in a container (volumeDevices).
type Device struct {
	Volume string `json:"volume"`
	Path   string `json:"path"`
}

// dnsLabel is a Kubernetes DNS-1123 label; dnsSubdomain a DNS-1123 subdomain.
var (
	dnsLabel     = lazyregexp.New(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsSubdomain = lazyregexp.New(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// ValidDNSLabel reports whether n is a DNS-1123 label: at most 63 lowercase letters, digits
// and '-', starting and ending with a letter or digit (Kubernetes container, volume and
// namespace names, hostnames).
func ValidDNSLabel(n string) bool { return len(n) <= 63 && dnsLabel.MatchString(n) }

// ValidVolumeName reports whether n is a valid pod volume name (a DNS-1123 label).
func ValidVolumeName(n string) bool { return ValidDNSLabel(n) }

// ValidObjectName reports whether n is a valid object name (a DNS-1123 subdomain).
func ValidObjectName(n string) bool { return len(n) <= 253 && dnsSubdomain.MatchString(n) }

// MaxVolumeBytes bounds a sealed volume's size (64 TiB).
const MaxVolumeBytes = 64 << 40

// Validate checks the claim of the volume named vol.
func (c *Claim) Validate(vol string) error {
	bad := func(field, f string, a ...any) error {
		return fmt.Errorf("volume %s: claim.%s: %s", vol, field, fmt.Sprintf(f, a...))
	}
	if !ValidVolumeName(c.Namespace) {
		return bad("namespace", "%q is not a DNS-1123 label", c.Namespace)
	}
	n := 0
	if c.ClaimName != "" {
		n++
		if !ValidObjectName(c.ClaimName) {
			return bad("claimName", "%q is not a DNS-1123 subdomain", c.ClaimName)
		}
	}
	if c.Template != "" || c.StatefulSet != "" {
		n++
		if !ValidObjectName(c.Template) || !ValidObjectName(c.StatefulSet) {
			return bad("template", "template %q and statefulSet %q must both be DNS-1123 subdomains", c.Template, c.StatefulSet)
		}
	}
	if c.Ephemeral {
		n++
	}
	if n != 1 {
		return bad("claimName", "exactly one of claimName, template+statefulSet or ephemeral, got %d", n)
	}
	if c.Mode != VolumeModeFilesystem && c.Mode != VolumeModeBlock {
		return bad("mode", "%q is neither %s nor %s", c.Mode, VolumeModeFilesystem, VolumeModeBlock)
	}
	if c.SizeBytes < MinVolumeBytes || c.SizeBytes > MaxVolumeBytes {
		return bad("sizeBytes", "%d out of range (%d..%d)", c.SizeBytes, int64(MinVolumeBytes), int64(MaxVolumeBytes))
	}
	return nil
}

// ClaimFor returns the name of the claim the volume vol of the pod podName uses. podName is
// host-provided (untrusted): it is checked by its syntax, and for a StatefulSet template it
// must be "<StatefulSet>-<ordinal>" with a decimal ordinal, which becomes part of the name.
// The result is part of the claim's identity (Identity), so a claim the host attaches under
// another pod's name opens with other keys and fails.
func (c *Claim) ClaimFor(podName, vol string) (string, error) {
	switch {
	case c.ClaimName != "":
		return c.ClaimName, nil
	case c.Template != "":
		ord, ok := strings.CutPrefix(podName, c.StatefulSet+"-")
		if !ok || ord == "" || len(ord) > 9 || (len(ord) > 1 && ord[0] == '0') {
			return "", fmt.Errorf("volume %s: pod name %q is not %s-<ordinal>", vol, podName, c.StatefulSet)
		}
		if _, err := strconv.ParseUint(ord, 10, 32); err != nil {
			return "", fmt.Errorf("volume %s: pod name %q: ordinal %q is not a decimal number", vol, podName, ord)
		}
		name := c.Template + "-" + c.StatefulSet + "-" + ord
		if !ValidObjectName(name) {
			return "", fmt.Errorf("volume %s: claim name %q is not a DNS-1123 subdomain", vol, name)
		}
		return name, nil
	case c.Ephemeral:
		if !ValidObjectName(podName) {
			return "", fmt.Errorf("volume %s: pod name %q is not a DNS-1123 subdomain", vol, podName)
		}
		name := podName + "-" + vol
		if !ValidObjectName(name) {
			return "", fmt.Errorf("volume %s: claim name %q is not a DNS-1123 subdomain", vol, name)
		}
		return name, nil
	}
	return "", fmt.Errorf("volume %s: claim names no claim", vol)
}

// Identity is the claim identity the guest derives the volume's keys from and the broker
// keeps the volume's generation under: "<namespace>/<claim name>".
func (c *Claim) Identity(podName, vol string) (string, error) {
	name, err := c.ClaimFor(podName, vol)
	if err != nil {
		return "", err
	}
	return c.Namespace + "/" + name, nil
}

// validateVolumes checks the encrypted volumes and the mounts and devices that use them.
func (s *Spec) validateVolumes() error {
	kinds := map[string]*Volume{}
	for i := range s.Volumes {
		v := &s.Volumes[i]
		if _, dup := kinds[v.Name]; dup {
			return fmt.Errorf("sealed spec %s: volumes[%d]: duplicate name %q", s.Workload, i, v.Name)
		}
		kinds[v.Name] = v
		if v.Kind == VolumeEncrypted {
			if !ValidVolumeName(v.Name) {
				return fmt.Errorf("sealed spec %s: volumes[%d]: name %q is not a DNS-1123 label", s.Workload, i, v.Name)
			}
			if v.Claim == nil {
				return fmt.Errorf("sealed spec %s: volume %s: encrypted volume without claim", s.Workload, v.Name)
			}
			if err := v.Claim.Validate(v.Name); err != nil {
				return fmt.Errorf("sealed spec %s: %w", s.Workload, err)
			}
		} else if v.Claim != nil {
			return fmt.Errorf("sealed spec %s: volume %s: claim on a %s volume", s.Workload, v.Name, v.Kind)
		}
	}
	for _, cs := range [][]Container{s.InitContainers, s.Containers} {
		for _, c := range cs {
			for _, d := range c.Devices {
				v := kinds[d.Volume]
				if v == nil || v.Kind != VolumeEncrypted || v.Claim.Mode != VolumeModeBlock {
					return fmt.Errorf("sealed spec %s: container %s: device %s: not a Block encrypted volume", s.Workload, c.Name, d.Volume)
				}
				if !strings.HasPrefix(d.Path, "/") {
					return fmt.Errorf("sealed spec %s: container %s: device %s: path %q is not absolute", s.Workload, c.Name, d.Volume, d.Path)
				}
			}
			for _, m := range c.Mounts {
				if v := kinds[m.Volume]; v != nil && v.Kind == VolumeEncrypted && v.Claim.Mode == VolumeModeBlock {
					return fmt.Errorf("sealed spec %s: container %s: mount %s: a Block volume is a device, not a mount", s.Workload, c.Name, m.Volume)
				}
			}
		}
	}
	return nil
}

// The placeholder contract for encrypted volumes: what the sealed manifest shows the node.
// The placeholder pod keeps the volume (its claim, template or ephemeral source) and each
// placeholder container that uses it mounts it (Filesystem) or maps it (Block) at
// PlaceholderVolumePath(name), so the kubelet attaches it and the shim finds it in the
// container's OCI spec. The pod annotation AnnotationVolumes lists them for the shim.
const (
	// PlaceholderVolumeDir is where placeholder containers mount encrypted volumes.
	PlaceholderVolumeDir = "/sealpod/volumes/"
	// AnnotationVolumes is the placeholder pod's annotation: JSON, volume name →
	// PlaceholderVolume. Host-visible and untrusted on the node: ParsePlaceholderVolumes.
	AnnotationVolumes = "sealpod.io/volumes"
	// MaxPlaceholderVolumes bounds the number of encrypted volumes per pod.
	MaxPlaceholderVolumes = 16
	// MinVolumeBytes is the smallest claim a sealed volume accepts (the dm-integrity journal
	// and tags, ext4's journal): 64 MiB.
	MinVolumeBytes = 64 << 20
)

// PlaceholderVolumePath is the path at which placeholder containers mount or map volume name.
func PlaceholderVolumePath(name string) string { return PlaceholderVolumeDir + name }

// PlaceholderVolume is what the node learns about one encrypted volume: nothing secret (the
// claim itself shows mode and size).
type PlaceholderVolume struct {
	Mode      string `json:"mode"`
	SizeBytes int64  `json:"sizeBytes"`
}

// ParsePlaceholderVolumes decodes and checks the AnnotationVolumes value: at most
// MaxPlaceholderVolumes entries, names DNS-1123 labels, a known mode, MinVolumeBytes ≤ size ≤
// MaxVolumeBytes, no unknown fields.
func ParsePlaceholderVolumes(s string) (map[string]PlaceholderVolume, error) {
	if len(s) > 4096 {
		return nil, fmt.Errorf("annotation %s: %d bytes, at most 4096", AnnotationVolumes, len(s))
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	var m map[string]PlaceholderVolume
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", AnnotationVolumes, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("annotation %s: trailing data", AnnotationVolumes)
	}
	if len(m) > MaxPlaceholderVolumes {
		return nil, fmt.Errorf("annotation %s: %d volumes, at most %d", AnnotationVolumes, len(m), MaxPlaceholderVolumes)
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v := m[n]
		if !ValidVolumeName(n) {
			return nil, fmt.Errorf("annotation %s: volume name %q is not a DNS-1123 label", AnnotationVolumes, n)
		}
		if v.Mode != VolumeModeFilesystem && v.Mode != VolumeModeBlock {
			return nil, fmt.Errorf("annotation %s: volume %s: mode %q is neither %s nor %s", AnnotationVolumes, n, v.Mode, VolumeModeFilesystem, VolumeModeBlock)
		}
		if v.SizeBytes < MinVolumeBytes || v.SizeBytes > MaxVolumeBytes {
			return nil, fmt.Errorf("annotation %s: volume %s: sizeBytes %d out of range (%d..%d)", AnnotationVolumes, n, v.SizeBytes, int64(MinVolumeBytes), int64(MaxVolumeBytes))
		}
	}
	return m, nil
}
