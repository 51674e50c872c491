package containers

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/sealpod/sealpod/agent/errkind"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Host-provided env (spec.HostSecretKeyRef, spec.HostConfigMapKeyRef, spec.HostSecretRef,
// spec.HostConfigMapRef): the placeholder keeps the env entry as written (an envFrom source
// with a tag before its prefix, spec.HostEnvFromPrefix), so the kubelet resolves it into the
// placeholder container's environment; the shim forwards that environment
// (CreateContainerRequest.host_env) and the agent takes the variables by name, as untrusted
// input: never expanded, never substituted into command or args.

// ErrHostEnv: the host's environment is malformed or lacks a required host-provided variable.
var ErrHostEnv error = errkind.New("invalid or missing host-provided env")

// hostObjectEnv reports whether e is a host-provided Secret/ConfigMap reference.
func hostObjectEnv(e spec.EnvVar) bool {
	for _, p := range []string{spec.HostSecretKeyRef, spec.HostConfigMapKeyRef, spec.HostSecretRef, spec.HostConfigMapRef} {
		if strings.HasPrefix(e.FromHost, p) {
			return true
		}
	}
	return false
}

// hostObjectValues returns the variables ([name, value]) a host-provided reference sets, from
// the host's environment. A key reference reads the variable of its own name: missing, it is
// skipped when optional (as the kubelet skips a missing optional object or key) and an error
// otherwise. An envFrom source (the *envFrom-th of the container) reads every variable the
// placeholder's tagged copy produced (spec.HostEnvFromPrefix), sorted, without the tag; a
// missing object gives none (the kubelet refuses to start a placeholder whose required object
// is missing).
func hostObjectValues(e spec.EnvVar, hostEnv map[string]string, envFrom *int) ([][2]string, error) {
	if strings.HasPrefix(e.FromHost, spec.HostSecretRef) || strings.HasPrefix(e.FromHost, spec.HostConfigMapRef) {
		tag := spec.HostEnvFromPrefix(*envFrom)
		*envFrom++
		var out [][2]string
		for _, k := range slices.Sorted(maps.Keys(hostEnv)) {
			name, ok := strings.CutPrefix(k, tag)
			if !ok || !strings.HasPrefix(name, e.Prefix) || name == "" {
				continue
			}
			v := hostEnv[k]
			if strings.IndexByte(v, 0) >= 0 {
				return nil, fmt.Errorf("%w: env %s: NUL in value", ErrHostEnv, name)
			}
			out = append(out, [2]string{name, v})
		}
		return out, nil
	}
	if e.Name == "" {
		return nil, fmt.Errorf("%w: env from %.128q without a name", ErrInvalid, e.FromHost)
	}
	v, ok := hostEnv[e.Name]
	if !ok {
		if e.Optional {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: env %s: %.128q not in the host's environment", ErrHostEnv, e.Name, e.FromHost)
	}
	if strings.IndexByte(v, 0) >= 0 {
		return nil, fmt.Errorf("%w: env %s: NUL in value", ErrHostEnv, e.Name)
	}
	return [][2]string{{e.Name, v}}, nil
}
