// Package manifests turns ordinary Kubernetes manifests into sealed workloads: it finds
// every pod template, builds its sealed spec (docs/formats.md), seals it into an envelope, and
// rewrites the template into host-visible placeholders (docs/design.md#seal, docs/sealing.md).
package manifests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Source is one input file (or standard input).
type Source struct {
	Name string
	Data []byte
}

// object is one Kubernetes object read from a source.
type object struct {
	file  string
	index int    // document index in the file, from 0
	item  string // "items[3]" inside a kind: List, or ""
	raw   map[string]any
	json  []byte

	apiVersion, kind, name, namespace string
}

// where names the object for error messages: file, document index, kind and name.
func (o *object) where() string {
	loc := fmt.Sprintf("%s: document %d", o.file, o.index)
	if o.item != "" {
		loc += " " + o.item
	}
	id := o.name
	if o.namespace != "" {
		id = o.namespace + "/" + o.name
	}
	return fmt.Sprintf("%s (%s %s)", loc, o.kind, id)
}

// MaxDocumentSize bounds one YAML document.
const MaxDocumentSize = 8 << 20

// parseSources reads every object of every source, expanding kind: List.
func parseSources(sources []Source) ([]*object, error) {
	var objs []*object
	var errs []error
	for _, src := range sources {
		o, err := parseSource(src)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		objs = append(objs, o...)
	}
	return objs, errors.Join(errs...)
}

func parseSource(src Source) ([]*object, error) {
	r := k8syaml.NewYAMLReader(bufio.NewReaderSize(bytes.NewReader(src.Data), 64<<10))
	var objs []*object
	for index := 0; ; index++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: read YAML: %w", src.Name, index, err)
		}
		if len(doc) > MaxDocumentSize {
			return nil, fmt.Errorf("%s: document %d: %d bytes exceeds the %d-byte limit", src.Name, index, len(doc), MaxDocumentSize)
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", src.Name, index, err)
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			index-- // empty document (comments only, or a leading ---): not counted
			continue
		}
		var raw map[string]any
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.UseNumber() // keep integers exact (no float64 rounding above 2^53)
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("%s: document %d: not a Kubernetes object: %w", src.Name, index, err)
		}
		o, err := newObject(src.Name, index, "", raw, js)
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(o.apiVersion, "kustomize.config.k8s.io/") {
			return nil, fmt.Errorf("%s: a kustomize %s is not an object: build it with -k DIR (as kubectl -k)", o.where(), o.kind)
		}
		items, err := listItems(o)
		if err != nil {
			return nil, err
		}
		if items == nil {
			objs = append(objs, o)
			continue
		}
		objs = append(objs, items...)
	}
}

// listItems expands kind: List and the typed lists (ConfigMapList, PodList, ...) as kubectl
// does: a kind ending in List whose items is a list. An item of a typed list without
// apiVersion or kind (as the API server returns them) takes the list's apiVersion and the
// kind without "List". It returns nil for any other object.
func listItems(o *object) ([]*object, error) {
	if !strings.HasSuffix(o.kind, "List") {
		return nil, nil
	}
	items, ok := o.raw["items"].([]any)
	if !ok {
		if o.kind == "List" && o.raw["items"] != nil {
			return nil, fmt.Errorf("%s: items: not a list", o.where())
		}
		if o.kind != "List" {
			return nil, nil // e.g. a custom kind AllowList: an ordinary object
		}
	}
	out := []*object{}
	for i, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: items[%d]: not an object", o.where(), i)
		}
		if typed := strings.TrimSuffix(o.kind, "List"); typed != "" {
			if _, ok := m["kind"]; !ok {
				m["kind"] = typed
			}
			if _, ok := m["apiVersion"]; !ok && m["kind"] == typed {
				m["apiVersion"] = o.apiVersion
			}
		}
		io, err := newObject(o.file, o.index, fmt.Sprintf("items[%d]", i), m, nil)
		if err != nil {
			return nil, err
		}
		out = append(out, io)
	}
	return out, nil
}

// newObject wraps a decoded object; js is its JSON encoding when the caller has it.
func newObject(file string, index int, item string, raw map[string]any, js []byte) (*object, error) {
	o := &object{file: file, index: index, item: item, raw: raw, json: js}
	str := func(m map[string]any, k string) string { s, _ := m[k].(string); return s }
	o.apiVersion, o.kind = str(raw, "apiVersion"), str(raw, "kind")
	if md, ok := raw["metadata"].(map[string]any); ok {
		o.name, o.namespace = str(md, "name"), str(md, "namespace")
		if o.name == "" && str(md, "generateName") != "" {
			o.name = str(md, "generateName")
		}
	}
	if o.kind == "" {
		return nil, fmt.Errorf("%s: kind: missing", o.where())
	}
	if o.apiVersion == "" {
		return nil, fmt.Errorf("%s: apiVersion: missing", o.where())
	}
	if o.json == nil {
		var err error
		if o.json, err = json.Marshal(raw); err != nil {
			return nil, fmt.Errorf("%s: %w", o.where(), err)
		}
	}
	return o, nil
}
