package manifests

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Secrets and ConfigMaps a pod references (docs/sealing.md, DESIGN §4.2). An object in the
// input is sealed (with --seal-secrets) and removed from the output. An object that is not
// in the input is created at run time (an operator, cert-manager, `kubectl create secret`):
// it is host-provided — the reference stays on the placeholder so that the kubelet resolves
// it on the node, and the sealed spec marks it as untrusted host input (spec.HostSecretKeyRef,
// spec.VolumeHostObject), never as a sealed value. Each such object is warned about once;
// Options.Strict refuses it. `optional: true` follows Kubernetes: a missing object or key is
// skipped, not an error.

// refState is how one reference to a Secret or ConfigMap resolves.
type refState int

const (
	refFailed refState = iota // an error was recorded
	refSealed                 // in the input: its data is sealed
	refHost                   // not in the input: host-provided
	refSkip                   // optional and not in the input under --strict: skipped
)

// parseObjectData decodes a Secret or ConfigMap of the input into its data, checking what the
// API server checks, so that a malformed object is blamed on itself (naming its field), not
// on a pod that references it.
func parseObjectData(o *object) (map[string][]byte, error) {
	data := map[string][]byte{}
	field := func(name string, decode func(string) ([]byte, error)) error {
		v, ok := o.raw[name]
		if !ok || v == nil {
			return nil
		}
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %s: not a map", o.where(), name)
		}
		for _, k := range sortedKeys(m) {
			if errs := validation.IsConfigMapKey(k); len(errs) > 0 {
				return fmt.Errorf("%s: %s[%s]: invalid key: %s", o.where(), name, k, strings.Join(errs, "; "))
			}
			s, ok := m[k].(string)
			if !ok {
				return fmt.Errorf("%s: %s[%s]: not a string", o.where(), name, k)
			}
			b, err := decode(s)
			if err != nil {
				return fmt.Errorf("%s: %s[%s]: %w", o.where(), name, k, err)
			}
			if _, dup := data[k]; dup && o.kind == "ConfigMap" {
				return fmt.Errorf("%s: %s[%s]: also in data", o.where(), name, k)
			}
			data[k] = b
		}
		return nil
	}
	plain := func(s string) ([]byte, error) { return []byte(s), nil }
	b64 := func(s string) ([]byte, error) {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("not base64: %w", err)
		}
		return b, nil
	}
	var err error
	if o.kind == "Secret" {
		var sec corev1.Secret
		if err = json.Unmarshal(o.json, &sec); err != nil {
			// Name the field the decoder stumbled on before falling back to its message.
			if err2 := field("data", b64); err2 != nil {
				return nil, err2
			}
			return nil, fmt.Errorf("%s: %w", o.where(), err)
		}
		// stringData wins over data, as the API server merges them.
		if err = field("data", b64); err == nil {
			err = field("stringData", plain)
		}
	} else {
		var cm corev1.ConfigMap
		if err = json.Unmarshal(o.json, &cm); err != nil {
			return nil, fmt.Errorf("%s: %w", o.where(), err)
		}
		if err = field("data", plain); err == nil {
			err = field("binaryData", b64)
		}
	}
	if err != nil {
		return nil, err
	}
	return data, nil
}

// resolve looks up the Secret or ConfigMap a pod references. With refSealed it returns the
// object's data and marks the object as sealed (left out of the output).
func (p *pod) resolve(field, kind, name string, optional *bool) (refState, map[string][]byte) {
	s := p.s
	key := s.ns(p.o) + "/" + name
	id := kind + " " + key
	obj := s.sourceObj[id]
	if obj == nil {
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			// The sealed reference is "<name>/<key>": the name must be one Kubernetes allows.
			p.fail(field+".name", "%q is not a %s name Kubernetes allows: %s", name, kind, strings.Join(errs, "; "))
			return refFailed, nil
		}
		if s.opts.Strict {
			if optional != nil && *optional {
				s.warnOnce(id, fmt.Sprintf("%s is optional and not in the input: skipped (--strict seals no host-provided values); first referenced at %s: %s.%s", id, p.o.where(), p.path, field))
				return refSkip, nil
			}
			p.fail(field, "references %s, which is not in the input: --strict refuses host-provided values (pass it with -f and --seal-secrets to seal it, or mark the reference optional)", id)
			return refFailed, nil
		}
		s.warnOnce(id, fmt.Sprintf("%s is not in the input: host-provided (created at run time): the kubelet resolves it on the node, so its values are visible to the host and reach the guest as untrusted input, never sealed (--strict refuses); first referenced at %s: %s.%s", id, p.o.where(), p.path, field))
		return refHost, nil
	}
	if err := s.badSource[id]; err != nil {
		if !s.reported[id] {
			s.reported[id] = true
			p.errs = append(p.errs, err)
		}
		return refFailed, nil
	}
	if !s.opts.SealSecrets {
		p.fail(field, "references %s, which is in the input: its contents would stay on the host; use --seal-secrets to seal it into the workload (or leave it out of the input to have it host-provided, visible to the node)", id)
		return refFailed, nil
	}
	s.removed[obj] = true
	return refSealed, s.sourceData[id]
}

// warnOnce records a warning the first time id is seen.
func (s *sealer) warnOnce(id, msg string) {
	if s.warnedObj[id] {
		return
	}
	s.warnedObj[id] = true
	s.res.Warnings = append(s.res.Warnings, msg)
}

// hostProvided reports whether a reference to that object stays on the placeholder.
func (p *pod) hostProvided(kind, name string) bool {
	return !p.s.opts.Strict && p.s.sourceObj[kind+" "+p.s.ns(p.o)+"/"+name] == nil
}

// keyRef seals an env var from one key of a Secret or ConfigMap (valueFrom).
func (p *pod) keyRef(field, envName, kind, name, key string, optional *bool) (spec.EnvVar, bool) {
	st, data := p.resolve(field, kind, name, optional)
	opt := optional != nil && *optional
	switch st {
	case refHost:
		if errs := validation.IsConfigMapKey(key); len(errs) > 0 {
			p.fail(field+".key", "%q is not a key Kubernetes allows: %s", key, strings.Join(errs, "; "))
			return spec.EnvVar{}, false
		}
		prefix := spec.HostSecretKeyRef
		if kind == "ConfigMap" {
			prefix = spec.HostConfigMapKeyRef
		}
		return spec.EnvVar{Name: envName, FromHost: prefix + name + "/" + key, Optional: opt}, true
	case refSealed:
		v, ok := data[key]
		if !ok {
			if !opt {
				p.fail(field+".key", "%s %s/%s has no key %q", kind, p.s.ns(p.o), name, key)
			}
			return spec.EnvVar{}, false
		}
		return spec.EnvVar{Name: envName, Value: string(v), Literal: true}, true
	}
	return spec.EnvVar{}, false
}

// objectEnv seals an envFrom source: every key of the object (sorted, as the kubelet), or a
// host-provided reference in its place.
func (p *pod) objectEnv(field, kind, name, prefix string, optional *bool) []spec.EnvVar {
	st, data := p.resolve(field, kind, name, optional)
	switch st {
	case refHost:
		from := spec.HostSecretRef
		if kind == "ConfigMap" {
			from = spec.HostConfigMapRef
		}
		return []spec.EnvVar{{FromHost: from + name, Prefix: prefix, Optional: optional != nil && *optional}}
	case refSealed:
		var out []spec.EnvVar
		for _, k := range sortedKeys(data) {
			out = append(out, spec.EnvVar{Name: prefix + k, Value: string(data[k]), Literal: true})
		}
		return out
	}
	return nil
}

// objectSource is one Secret or ConfigMap that a volume projects.
type objectSource struct {
	field, kind, name string
	items             []corev1.KeyToPath
	optional          *bool
}

// objectVolume seals a secret, configMap or projected volume made of Secrets and ConfigMaps.
// All of its objects in the input: a sealed volume of files. None: a host-provided volume,
// kept on the placeholder. Some of each: refused, since one directory cannot be both.
func (p *pod) objectVolume(field, volName string, defaultMode *int32, srcs []objectSource) {
	mode := uint32(0o644)
	if defaultMode != nil {
		mode = uint32(*defaultMode)
	}
	type resolved struct {
		objectSource
		data map[string][]byte
	}
	var sealed []resolved
	var host []spec.ObjectRef
	var sealedIDs, hostIDs []string
	failed := false
	for _, src := range srcs {
		st, data := p.resolve(src.field, src.kind, src.name, src.optional)
		id := src.kind + " " + p.s.ns(p.o) + "/" + src.name
		switch st {
		case refFailed:
			failed = true
		case refHost:
			host = append(host, spec.ObjectRef{Kind: src.kind, Name: src.name, Optional: src.optional != nil && *src.optional})
			hostIDs = append(hostIDs, id)
		case refSealed:
			sealed = append(sealed, resolved{src, data})
			sealedIDs = append(sealedIDs, id)
		}
	}
	if len(host) > 0 && len(sealed) > 0 {
		p.fail(field, "volume %q mixes host-provided %s (not in the input) with sealed %s: split it into two volumes", volName, strings.Join(hostIDs, ", "), strings.Join(sealedIDs, ", "))
		return
	}
	if len(host) > 0 {
		p.volumes[volName] = spec.Volume{Name: volName, Kind: spec.VolumeHostObject, Objects: host}
		return
	}
	p.volumes[volName] = spec.Volume{Name: volName, Kind: spec.VolumeSealed}
	if failed {
		return
	}
	for _, r := range sealed {
		p.addFiles(r.field, volName, r.kind, r.name, r.items, r.optional, mode, r.data)
	}
}

// addFiles adds one object's keys (or its items) to a sealed volume.
func (p *pod) addFiles(field, volName, kind, name string, items []corev1.KeyToPath, optional *bool, mode uint32, data map[string][]byte) {
	add := func(key, rel string, m uint32) {
		clean := path.Clean(rel)
		if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") || clean == "." {
			p.fail(field, "item path %q escapes the volume", rel)
			return
		}
		p.sealed.Files = append(p.sealed.Files, spec.File{Volume: volName, Path: clean, Mode: m, Data: data[key]})
	}
	if len(items) == 0 {
		for _, k := range sortedKeys(data) {
			add(k, k, mode)
		}
		return
	}
	for i, it := range items {
		if _, ok := data[it.Key]; !ok {
			if optional == nil || !*optional {
				p.fail(fmt.Sprintf("%s.items[%d].key", field, i), "%s %s/%s has no key %q", kind, p.s.ns(p.o), name, it.Key)
			}
			continue
		}
		m := mode
		if it.Mode != nil {
			m = uint32(*it.Mode)
		}
		add(it.Key, it.Path, m)
	}
}

// projectedObjects returns a projected volume's sources when every one is a Secret or a
// ConfigMap (others — service-account tokens, downward API — are host volumes).
func projectedObjects(field string, pv *corev1.ProjectedVolumeSource) ([]objectSource, bool) {
	var out []objectSource
	for i, s := range pv.Sources {
		f := fmt.Sprintf("%s.sources[%d]", field, i)
		switch {
		case s.Secret != nil && s.ConfigMap == nil && s.DownwardAPI == nil && s.ServiceAccountToken == nil && s.ClusterTrustBundle == nil:
			out = append(out, objectSource{field: f + ".secret", kind: "Secret", name: s.Secret.Name, items: s.Secret.Items, optional: s.Secret.Optional})
		case s.ConfigMap != nil && s.Secret == nil && s.DownwardAPI == nil && s.ServiceAccountToken == nil && s.ClusterTrustBundle == nil:
			out = append(out, objectSource{field: f + ".configMap", kind: "ConfigMap", name: s.ConfigMap.Name, items: s.ConfigMap.Items, optional: s.ConfigMap.Optional})
		default:
			return nil, false
		}
	}
	return out, len(out) > 0
}

// keepEnv reports whether a placeholder keeps an env var: downward-API values (computed by
// the kubelet, no secret) and references to host-provided objects.
func (p *pod) keepEnv(e corev1.EnvVar) bool {
	vf := e.ValueFrom
	switch {
	case vf == nil:
		return false
	case vf.FieldRef != nil || vf.ResourceFieldRef != nil:
		return true
	case vf.SecretKeyRef != nil:
		return p.hostProvided("Secret", vf.SecretKeyRef.Name)
	case vf.ConfigMapKeyRef != nil:
		return p.hostProvided("ConfigMap", vf.ConfigMapKeyRef.Name)
	}
	return false
}

// keepEnvFrom reports whether a placeholder keeps an envFrom source (a host-provided object).
func (p *pod) keepEnvFrom(e corev1.EnvFromSource) bool {
	switch {
	case e.SecretRef != nil:
		return p.hostProvided("Secret", e.SecretRef.Name)
	case e.ConfigMapRef != nil:
		return p.hostProvided("ConfigMap", e.ConfigMapRef.Name)
	}
	return false
}
