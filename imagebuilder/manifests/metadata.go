package manifests

import (
	"fmt"
	"sort"
	"strings"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Clear metadata (labels and annotations) reaches the API server, etcd and the node. It must
// carry nothing sealed: kubectl's last-applied-configuration (the whole original object) is
// dropped from the sealed objects, and any other label or annotation value that quotes a
// sealed string is refused, naming the object and the key.

// AnnotationLastApplied is kubectl's copy of the applied object.
const AnnotationLastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// minSealedLen is the shortest sealed string looked for in clear metadata: shorter values
// ("1", "true", an app name) are too common to mean anything.
const minSealedLen = 8

// stripLastApplied removes the last-applied annotation from every metadata of an object
// (the object's own and its templates').
func stripLastApplied(v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, child := range x {
			if md, ok := child.(map[string]any); ok && k == "metadata" {
				if ann, ok := md["annotations"].(map[string]any); ok {
					delete(ann, AnnotationLastApplied)
					if len(ann) == 0 {
						delete(md, "annotations")
					}
				}
			}
			stripLastApplied(child)
		}
	case []any:
		for _, child := range x {
			stripLastApplied(child)
		}
	}
}

// addSealed records the strings of a sealed spec that must not appear in clear, each with
// what it is (for the refusal message).
func (s *sealer) addSealed(w *Workload, written []string) {
	add := func(v, what string) {
		if len(v) >= minSealedLen {
			if _, ok := s.sealedStrs[v]; !ok {
				s.sealedStrs[v] = fmt.Sprintf("%s of %s", what, w.Object)
			}
		}
	}
	for _, ref := range written {
		add(ref, "an image reference")
	}
	addImage := func(ref string) {
		add(ref, "an image reference")
		repo, _, _ := strings.Cut(ref, "@")
		add(repo, "an image repository")
	}
	sp := w.Spec
	for _, c := range append(append([]spec.Container(nil), sp.InitContainers...), sp.Containers...) {
		addImage(c.Image)
		for _, a := range append(append([]string(nil), c.Command...), c.Args...) {
			add(a, "a command or argument of container "+c.Name)
		}
		add(c.WorkingDir, "the working directory of container "+c.Name)
		for _, e := range c.Env {
			add(e.Value, "env "+e.Name+" of container "+c.Name)
		}
		for _, pr := range c.Probes {
			for _, a := range pr.Exec {
				add(a, "the "+pr.Kind+" probe of container "+c.Name)
			}
			if pr.HTTPGet != nil {
				for _, h := range pr.HTTPGet.Headers {
					add(h.Value, "a "+pr.Kind+" probe header of container "+c.Name)
				}
			}
		}
		for _, h := range c.Hooks { // hooks.go
			for _, a := range h.Exec {
				add(a, "the "+h.Kind+" hook of container "+c.Name)
			}
			if h.HTTPGet != nil {
				add(h.HTTPGet.Path, "the "+h.Kind+" hook path of container "+c.Name)
				for _, hd := range h.HTTPGet.Headers {
					add(hd.Value, "a "+h.Kind+" hook header of container "+c.Name)
				}
			}
		}
	}
	for _, f := range sp.Files {
		add(string(f.Data), "sealed file "+f.Path)
		add(strings.TrimSpace(string(f.Data)), "sealed file "+f.Path)
	}
	for _, r := range sp.Registries {
		add(r.Password, "a registry password")
		add(r.Auth, "a registry credential")
	}
}

// ownAnnotations are written by sealctl and hold nothing sealed.
var ownAnnotations = map[string]bool{AnnotationImage: true, AnnotationWorkload: true, AnnotationKBS: true, spec.AnnotationVolumes: true}

// checkMetadata refuses every label or annotation of an output object whose value contains
// a sealed string.
func (s *sealer) checkMetadata(o *object) []error {
	var errs []error
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch x := v.(type) {
		case map[string]any:
			for _, k := range sortedKeys(x) {
				p := k
				if path != "" {
					p = path + "." + k
				}
				if md, ok := x[k].(map[string]any); ok && k == "metadata" {
					for _, field := range []string{"labels", "annotations"} {
						m, _ := md[field].(map[string]any)
						for _, key := range sortedKeys(m) {
							val, _ := m[key].(string)
							if what := s.sealedIn(val); what != "" && !ownAnnotations[key] {
								errs = append(errs, fmt.Errorf("%s: %s.%s[%s]: the value contains %s: sealed data may not appear in clear metadata; remove or change it", o.where(), p, field, key, what))
							}
						}
					}
				}
				walk(x[k], p)
			}
		case []any:
			for i, child := range x {
				walk(child, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	walk(o.raw, "")
	return errs
}

// sealedIn says which sealed string val contains ("" if none); the longest match wins.
func (s *sealer) sealedIn(val string) string {
	if len(val) < minSealedLen {
		return ""
	}
	if s.sealedList == nil {
		for k := range s.sealedStrs {
			s.sealedList = append(s.sealedList, k)
		}
		sort.Slice(s.sealedList, func(i, j int) bool {
			a, b := s.sealedList[i], s.sealedList[j]
			return len(a) > len(b) || len(a) == len(b) && a < b
		})
	}
	for _, sv := range s.sealedList {
		if strings.Contains(val, sv) {
			return s.sealedStrs[sv]
		}
	}
	return ""
}
