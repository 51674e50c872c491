package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Output formats accepted by -o.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatYAML  = "yaml"
	formatText  = "text"
)

// printObject writes v as JSON or YAML, or calls table for the human-readable form
// (kubectl-like: -o table is the default).
func printObject(w io.Writer, format string, v any, table func(io.Writer) error) error {
	switch format {
	case formatJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case formatYAML:
		js, err := json.Marshal(v)
		if err != nil {
			return err
		}
		y, err := yaml.JSONToYAML(js)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	case formatTable, "":
		if table == nil {
			return printObject(w, formatYAML, v, nil)
		}
		return table(w)
	default:
		return fmt.Errorf("output format %q: want table, json or yaml", format)
	}
}

// formatSealed renders the sealed manifests (the YAML stream manifests.Result.Render writes)
// as -o asks: yaml unchanged; json as kubectl prints objects, the object itself or a v1 List
// of several. Each document is converted by the YAML reader kubectl uses (sigs.k8s.io/yaml),
// so the JSON holds exactly what kubectl reads from the YAML.
func formatSealed(y []byte, format string) ([]byte, error) {
	switch format {
	case formatYAML, "":
		return y, nil
	case formatJSON:
	default:
		return nil, fmt.Errorf("output format %q: want yaml or json", format)
	}
	items := []any{}
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(y)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("sealed manifests as JSON: document %d: %w", i, err)
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("sealed manifests as JSON: document %d: %w", i, err)
		}
		// Decoded again (numbers as written) so that the encoder below, not YAMLToJSON,
		// decides the escaping.
		var obj any
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.UseNumber()
		if err := dec.Decode(&obj); err != nil {
			return nil, fmt.Errorf("sealed manifests as JSON: document %d: %w", i, err)
		}
		if obj != nil {
			items = append(items, obj)
		}
	}
	var v any = struct {
		APIVersion string   `json:"apiVersion"`
		Items      []any    `json:"items"`
		Kind       string   `json:"kind"`
		Metadata   struct{} `json:"metadata"`
	}{APIVersion: "v1", Items: items, Kind: "List"}
	if len(items) == 1 {
		v = items[0]
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("sealed manifests as JSON: %w", err)
	}
	return buf.Bytes(), nil
}
