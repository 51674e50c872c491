package server

import (
	"maps"
	"slices"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/hostvalue"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// podNameKey is the host value that names the pod (the shim always sends it).
const podNameKey = "fieldRef:metadata.name"

// checkHostValues refuses, before anything else happens, host values whose key is not a
// downward-API field of the table in agent/hostvalue or whose value does not have the
// syntax Kubernetes guarantees for that field: host values are data, never code.
func checkHostValues(in map[string]string) error {
	if len(in) > api.MaxHostValues {
		return invalid("unseal: host_values: %d entries (max %d)", len(in), api.MaxHostValues)
	}
	for _, k := range slices.Sorted(maps.Keys(in)) {
		if v := in[k]; len(k) > 256 || len(v) > api.MaxHostValueLen {
			return invalid("unseal: host_values[%.64q]: too long", k)
		}
		if err := hostvalue.Check(k, in[k]); err != nil {
			return invalid("unseal: host_values: %v", err)
		}
	}
	return nil
}

// hostValues keeps the host values the sealed spec references and drops the rest: the host
// offers every downward-API field it knows (it cannot see which ones the sealed spec uses),
// and a value nothing references is never used. The values stay untrusted: they are host
// facts (pod name, namespace, IPs), never secrets; checkHostValues checked their syntax.
func hostValues(sp *spec.Spec, in map[string]string) map[string]string {
	wanted := map[string]bool{}
	for _, cs := range [][]spec.Container{sp.InitContainers, sp.Containers} {
		for _, c := range cs {
			for _, e := range c.Env {
				if e.FromHost != "" {
					wanted[hostvalue.Key(c.Name, e)] = true
				}
			}
		}
	}
	out := map[string]string{}
	for k, v := range in {
		if wanted[k] {
			out[k] = v
		}
	}
	return out
}
