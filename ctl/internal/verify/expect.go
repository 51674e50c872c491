package verify

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"

	k8syaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/sealpod/sealpod/imagebuilder/manifests"
	"github.com/sealpod/sealpod/kbs/api"
)

// Expected is one sealed pod template of the owner's sealed manifests (--expect).
type Expected struct {
	Source   string `json:"source"`   // file name (or <stdin>)
	Object   string `json:"object"`   // Kind namespace/name of the object holding the pod template
	Path     string `json:"path"`     // where the pod template's metadata is in the object
	Workload string `json:"workload"` // sealpod.io/workload
	Image    string `json:"image"`    // sealpod.io/image
	KBS      string `json:"kbs"`      // sealpod.io/kbs
	// MinTCB is the minimum TCB the template declares (AnnotationMinTCB), nil if none.
	MinTCB *api.TCB `json:"minTcb,omitempty"`
}

// ErrNoSealedTemplates is returned when the expected manifests hold no sealed pod template.
var ErrNoSealedTemplates = errors.New("no sealed pod templates (annotation " + manifests.AnnotationWorkload + ")")

// maxDocs bounds the number of YAML documents read from one source.
const maxDocs = 100000

// ParseExpected finds every sealed pod template (a metadata.annotations map carrying
// sealpod.io/workload) in multi-document YAML or JSON sources: Pods, workload controllers,
// CronJobs and Lists of them. Other objects are skipped.
func ParseExpected(sources []manifests.Source) ([]Expected, error) {
	var out []Expected
	for _, src := range sources {
		dec := k8syaml.NewYAMLOrJSONDecoder(bytes.NewReader(src.Data), 4096)
		for i := 0; ; i++ {
			if i >= maxDocs {
				return nil, fmt.Errorf("--expect %s: more than %d documents", src.Name, maxDocs)
			}
			var doc any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("--expect %s: document %d: %w", src.Name, i+1, err)
			}
			obj, ok := doc.(map[string]any)
			if !ok {
				if doc == nil {
					continue
				}
				return nil, fmt.Errorf("--expect %s: document %d: not an object", src.Name, i+1)
			}
			found, err := findTemplates(src.Name, obj)
			if err != nil {
				return nil, fmt.Errorf("--expect %s: document %d: %w", src.Name, i+1, err)
			}
			out = append(out, found...)
		}
	}
	return out, nil
}

func findTemplates(source string, obj map[string]any) ([]Expected, error) {
	if kind, _ := obj["kind"].(string); kind == "List" || (len(kind) > 4 && kind[len(kind)-4:] == "List") {
		items, _ := obj["items"].([]any)
		var out []Expected
		for i, it := range items {
			o, ok := it.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("items[%d]: not an object", i)
			}
			f, err := findTemplates(source, o)
			if err != nil {
				return nil, fmt.Errorf("items[%d]: %w", i, err)
			}
			out = append(out, f...)
		}
		return out, nil
	}
	label := objectLabel(obj)
	var out []Expected
	var walk func(v any, path string, depth int) error
	walk = func(v any, path string, depth int) error {
		if depth > 32 {
			return fmt.Errorf("%s: nested too deeply", path)
		}
		switch x := v.(type) {
		case map[string]any:
			if md, ok := x["metadata"].(map[string]any); ok {
				if ann, ok := md["annotations"].(map[string]any); ok {
					if _, sealed := ann[manifests.AnnotationWorkload]; sealed {
						e := Expected{Source: source, Object: label, Path: joinPath(path, "metadata")}
						var err error
						if e.Workload, err = annotation(ann, manifests.AnnotationWorkload, e.Path); err != nil {
							return err
						}
						if e.Image, err = annotation(ann, manifests.AnnotationImage, e.Path); err != nil {
							return err
						}
						if e.KBS, err = annotation(ann, manifests.AnnotationKBS, e.Path); err != nil {
							return err
						}
						tcb, err := annotation(ann, AnnotationMinTCB, e.Path)
						if err != nil {
							return err
						}
						if tcb != "" {
							if e.MinTCB, err = ParseMinTCB(tcb); err != nil {
								return fmt.Errorf("%s.annotations[%s]: %w", e.Path, AnnotationMinTCB, err)
							}
						}
						out = append(out, e)
					}
				}
			}
			keys := make([]string, 0, len(x))
			for k := range x {
				if k != "metadata" {
					keys = append(keys, k)
				}
			}
			sort.Strings(keys)
			for _, k := range keys {
				if err := walk(x[k], joinPath(path, k), depth+1); err != nil {
					return err
				}
			}
		case []any:
			for i, e := range x {
				if err := walk(e, fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(obj, "", 0); err != nil {
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	return out, nil
}

func annotation(ann map[string]any, key, path string) (string, error) {
	v, ok := ann[key]
	if !ok {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s.annotations[%s]: not a string", path, key)
	}
	return s, nil
}

func joinPath(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

func objectLabel(obj map[string]any) string {
	kind, _ := obj["kind"].(string)
	if kind == "" {
		kind = "object"
	}
	md, _ := obj["metadata"].(map[string]any)
	name, _ := md["name"].(string)
	ns, _ := md["namespace"].(string)
	if ns != "" {
		return kind + " " + ns + "/" + name
	}
	return kind + " " + name
}
