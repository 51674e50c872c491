package cli

import (
	"encoding/json"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"
)

// Output formats accepted by -o.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatYAML  = "yaml"
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
