package manifests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Encrypted persistent volumes (issue #15, docs/sealing.md "Persistent volumes"): every
// PVC-backed volume — a persistentVolumeClaim volume, a StatefulSet's volumeClaimTemplates
// entry, an ephemeral.volumeClaimTemplate — is a spec.VolumeEncrypted volume. The claim stays
// in the output unchanged, so the kubelet provisions and attaches it; the placeholder mounts
// (or maps) it at spec.PlaceholderVolumePath and lists it in spec.AnnotationVolumes for the
// shim. The sealed containers' mount paths and subPaths are sealed.

// claimTemplates decodes a StatefulSet's spec.volumeClaimTemplates strictly.
func claimTemplates(o *object) ([]corev1.PersistentVolumeClaim, error) {
	var doc struct {
		Spec map[string]json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal(o.json, &doc); err != nil {
		return nil, fmt.Errorf("%s: spec: %w", o.where(), err)
	}
	raw, ok := doc.Spec["volumeClaimTemplates"]
	if !ok {
		return nil, nil
	}
	var out []corev1.PersistentVolumeClaim
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("%s: spec.volumeClaimTemplates: %w", o.where(), err)
	}
	return out, nil
}

// indexClaim records a PersistentVolumeClaim of the input, by "namespace/name".
func (s *sealer) indexClaim(o *object) {
	key := s.ns(o) + "/" + o.name
	var c corev1.PersistentVolumeClaim
	dec := json.NewDecoder(bytes.NewReader(o.json))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		s.badClaims[key] = err
		return
	}
	s.claims[key] = &c
}

// claimSpec reads the mode and size of a claim's spec and checks that a sealed volume can
// use it. On a problem it returns the field under the claim's spec and the reason.
func claimSpec(cs *corev1.PersistentVolumeClaimSpec) (mode string, size int64, field string, err error) {
	mode = spec.VolumeModeFilesystem
	if cs.VolumeMode != nil {
		switch *cs.VolumeMode {
		case corev1.PersistentVolumeFilesystem, corev1.PersistentVolumeBlock:
			mode = string(*cs.VolumeMode)
		default:
			return "", 0, "volumeMode", fmt.Errorf("%q is neither Filesystem nor Block", *cs.VolumeMode)
		}
	}
	for _, m := range cs.AccessModes {
		if m == corev1.ReadWriteMany || m == corev1.ReadOnlyMany {
			return "", 0, "accessModes", fmt.Errorf("%s lets several pods use the claim at once; a sealed volume is opened by one pod at a time (use ReadWriteOncePod or ReadWriteOnce)", m)
		}
	}
	q, ok := cs.Resources.Requests[corev1.ResourceStorage]
	if !ok {
		return "", 0, "resources.requests.storage", fmt.Errorf("missing: a sealed volume's size is the storage its claim requests")
	}
	lo, hi := resource.NewQuantity(spec.MinVolumeBytes, resource.BinarySI), resource.NewQuantity(spec.MaxVolumeBytes, resource.BinarySI)
	if q.Cmp(*lo) < 0 {
		return "", 0, "resources.requests.storage", fmt.Errorf("%s is less than a sealed volume needs (integrity tags and journals): request at least %s", q.String(), lo)
	}
	if q.Cmp(*hi) > 0 {
		return "", 0, "resources.requests.storage", fmt.Errorf("%s is more than a sealed volume may hold (%s)", q.String(), hi)
	}
	return mode, q.Value(), "", nil
}

// failAt records a problem at a field path of the object (not of the pod spec).
func (p *pod) failAt(field, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s: %s", p.o.where(), field, fmt.Sprintf(format, args...)))
}

// encrypted records the encrypted volume name with its claim.
func (p *pod) encrypted(name string, c spec.Claim) {
	c.Namespace = p.s.ns(p.o)
	p.volumes[name] = spec.Volume{Name: name, Kind: spec.VolumeEncrypted, Claim: &c}
}

// claimVolume seals a persistentVolumeClaim volume. Its claim must be in the input: the
// claim's volumeMode and storage request are the sealed volume's mode and size.
func (p *pod) claimVolume(field string, v *corev1.Volume) {
	src := v.PersistentVolumeClaim
	ns := p.s.ns(p.o)
	key := ns + "/" + src.ClaimName
	c, ok := p.s.claims[key]
	if !ok {
		if err, bad := p.s.badClaims[key]; bad {
			p.fail(field+".persistentVolumeClaim.claimName", "volume %q: PersistentVolumeClaim %s of the input is malformed: %v", v.Name, key, err)
			return
		}
		p.fail(field+".persistentVolumeClaim.claimName", "volume %q: PersistentVolumeClaim %s is not in the input: a sealed volume's mode and size come from its claim; add its manifest to the input (it is kept in the output unchanged)", v.Name, key)
		return
	}
	mode, size, sub, err := claimSpec(&c.Spec)
	if err != nil {
		p.fail(field+".persistentVolumeClaim", "volume %q: PersistentVolumeClaim %s: spec.%s: %v", v.Name, key, sub, err)
		return
	}
	if p.o.kind != "Pod" && !onlyReadWriteOncePod(c.Spec.AccessModes) {
		p.warn(field+".persistentVolumeClaim", "volume %q: PersistentVolumeClaim %s is the same claim for every pod of this %s; a sealed volume must be open in one pod at a time, and ReadWriteOnce lets pods on one node share it (a rolling update's surge pod, a second replica): set accessModes [ReadWriteOncePod] on the claim", v.Name, key, p.o.kind)
	}
	p.encrypted(v.Name, spec.Claim{ClaimName: src.ClaimName, Mode: mode, SizeBytes: size, ReadOnly: src.ReadOnly})
}

func onlyReadWriteOncePod(modes []corev1.PersistentVolumeAccessMode) bool {
	return len(modes) > 0 && !slices.ContainsFunc(modes, func(m corev1.PersistentVolumeAccessMode) bool { return m != corev1.ReadWriteOncePod })
}

// ephemeralVolume seals an ephemeral volume: its claim is "<pod name>-<volume name>".
func (p *pod) ephemeralVolume(field string, v *corev1.Volume) {
	field += ".ephemeral.volumeClaimTemplate"
	t := v.Ephemeral.VolumeClaimTemplate
	if t == nil {
		p.fail(field, "volume %q: missing", v.Name)
		return
	}
	mode, size, sub, err := claimSpec(&t.Spec)
	if err != nil {
		p.fail(field+".spec."+sub, "volume %q: %v", v.Name, err)
		return
	}
	p.encrypted(v.Name, spec.Claim{Ephemeral: true, Mode: mode, SizeBytes: size})
}

// templateVolume seals the StatefulSet's volumeClaimTemplates[i]: the claim of the pod with
// ordinal N is "<template>-<StatefulSet>-<N>". It replaces a pod volume of the same name, as
// the StatefulSet controller does.
func (p *pod) templateVolume(i int) {
	t := &p.claimTemplates[i]
	field := fmt.Sprintf("spec.volumeClaimTemplates[%d]", i)
	if t.Name == "" {
		p.failAt(field+".metadata.name", "missing")
		return
	}
	mode, size, sub, err := claimSpec(&t.Spec)
	if err != nil {
		p.failAt(field+".spec."+sub, "volume %q: %v", t.Name, err)
		return
	}
	p.encrypted(t.Name, spec.Claim{Template: t.Name, StatefulSet: p.o.name, Mode: mode, SizeBytes: size})
}

// isTemplate reports whether name is one of the StatefulSet's claim templates.
func (p *pod) isTemplate(name string) bool {
	return slices.ContainsFunc(p.claimTemplates, func(t corev1.PersistentVolumeClaim) bool { return t.Name == name })
}

// containerVolumes seals a container's volumeMounts and volumeDevices.
func (p *pod) containerVolumes(field string, c *corev1.Container, sc *spec.Container) {
	for i, m := range c.VolumeMounts {
		f := fmt.Sprintf("%s.volumeMounts[%d]", field, i)
		v, ok := p.volumes[m.Name]
		if !ok {
			if !p.isVolume(m.Name) {
				p.fail(f+".name", "no volume named %q", m.Name)
			}
			continue
		}
		if v.Kind == spec.VolumeEncrypted && v.Claim.Mode == spec.VolumeModeBlock {
			p.fail(f, "volume %q is a Block claim (volumeMode: Block): use volumeDevices, not volumeMounts", m.Name)
			continue
		}
		if m.SubPathExpr != "" {
			p.fail(f+".subPathExpr", "not supported by sealed pods (the guest does not expand it); use subPath")
			continue
		}
		sc.Mounts = append(sc.Mounts, spec.Mount{Volume: m.Name, Path: m.MountPath, SubPath: m.SubPath, ReadOnly: m.ReadOnly})
	}
	for i, d := range c.VolumeDevices {
		f := fmt.Sprintf("%s.volumeDevices[%d]", field, i)
		v, ok := p.volumes[d.Name]
		switch {
		case !ok && !p.isVolume(d.Name):
			p.fail(f+".name", "no volume named %q", d.Name)
		case !ok:
			// already refused
		case v.Kind != spec.VolumeEncrypted:
			p.fail(f, "volume %q is not a PersistentVolumeClaim: volumeDevices need a claim with volumeMode: Block", d.Name)
		case v.Claim.Mode != spec.VolumeModeBlock:
			p.fail(f, "volume %q is a Filesystem claim: use volumeMounts, or volumeMode: Block on the claim", d.Name)
		case !strings.HasPrefix(d.DevicePath, "/"):
			p.fail(f+".devicePath", "%q is not an absolute path", d.DevicePath)
		default:
			sc.Devices = append(sc.Devices, spec.Device{Volume: d.Name, Path: d.DevicePath})
		}
	}
}

// countEncrypted refuses more encrypted volumes than the shim attaches.
func (p *pod) countEncrypted() {
	n := 0
	for _, v := range p.volumes {
		if v.Kind == spec.VolumeEncrypted {
			n++
		}
	}
	if n > spec.MaxPlaceholderVolumes {
		p.fail("volumes", "%d encrypted volumes (persistentVolumeClaim, volumeClaimTemplates, ephemeral), at most %d per pod", n, spec.MaxPlaceholderVolumes)
	}
}

// placeholderVolumes returns the AnnotationVolumes value ("" when the pod has no encrypted
// volume): each encrypted volume's mode and size, nothing secret.
func (p *pod) placeholderVolumes() string {
	m := map[string]spec.PlaceholderVolume{}
	for _, v := range p.volumes {
		if v.Kind == spec.VolumeEncrypted {
			m[v.Name] = spec.PlaceholderVolume{Mode: v.Claim.Mode, SizeBytes: v.Claim.SizeBytes}
		}
	}
	if len(m) == 0 {
		return ""
	}
	raw, _ := json.Marshal(m) // map[string]struct of a string and an int: cannot fail
	return string(raw)
}

// placeholderMounts returns the placeholder container's volumeMounts and volumeDevices:
// host volumes as written, and each encrypted volume the container uses once, at
// spec.PlaceholderVolumePath (its sealed paths, subPaths and flags stay sealed).
func (p *pod) placeholderMounts(c *corev1.Container) ([]corev1.VolumeMount, []corev1.VolumeDevice) {
	var mounts []corev1.VolumeMount
	var devices []corev1.VolumeDevice
	seen := map[string]bool{}
	for _, m := range c.VolumeMounts {
		switch k := p.volumes[m.Name].Kind; {
		case k == spec.VolumeHost || k == spec.VolumeHostObject:
			mounts = append(mounts, m)
		case k == spec.VolumeEncrypted && !seen[m.Name]:
			seen[m.Name] = true
			mounts = append(mounts, corev1.VolumeMount{Name: m.Name, MountPath: spec.PlaceholderVolumePath(m.Name)})
		}
	}
	for _, d := range c.VolumeDevices {
		if p.volumes[d.Name].Kind == spec.VolumeEncrypted && !seen[d.Name] {
			seen[d.Name] = true
			devices = append(devices, corev1.VolumeDevice{Name: d.Name, DevicePath: spec.PlaceholderVolumePath(d.Name)})
		}
	}
	return mounts, devices
}
