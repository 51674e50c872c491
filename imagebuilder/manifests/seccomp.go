package manifests

import (
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// seccompProfile seals a container's seccomp profile: the container's securityContext wins
// over the pod's, as in Kubernetes. Unset stays unset (the agent's RuntimeDefault);
// Unconfined is sealed with a warning; Localhost carries the content of the profile the
// owner gave under that name (Options.SeccompProfiles), so the node never chooses it.
func (p *pod) seccompProfile(field string, c *corev1.SecurityContext, podSC *corev1.PodSecurityContext) *spec.SeccompProfile {
	var sp *corev1.SeccompProfile
	where := field + ".seccompProfile"
	if podSC != nil && podSC.SeccompProfile != nil {
		sp, where = podSC.SeccompProfile, "securityContext.seccompProfile"
	}
	if c != nil && c.SeccompProfile != nil {
		sp, where = c.SeccompProfile, field+".seccompProfile"
	}
	if sp == nil {
		return nil
	}
	switch sp.Type {
	case corev1.SeccompProfileTypeRuntimeDefault:
		return &spec.SeccompProfile{Type: spec.SeccompRuntimeDefault}
	case corev1.SeccompProfileTypeUnconfined:
		p.warn(where+".type", "Unconfined: the container runs without a seccomp filter inside the guest (sealed: the node cannot change it)")
		return &spec.SeccompProfile{Type: spec.SeccompUnconfined}
	case corev1.SeccompProfileTypeLocalhost:
		name := ""
		if sp.LocalhostProfile != nil {
			name = *sp.LocalhostProfile
		}
		if name == "" {
			p.fail(where+".localhostProfile", "missing (type Localhost)")
			return nil
		}
		content, ok := p.s.opts.SeccompProfiles[name]
		if !ok {
			p.fail(where+".localhostProfile", "%q: no such profile given; the profile is sealed from the owner's file, never read on the node: pass --seccomp-profile %s=FILE", name, name)
			return nil
		}
		return &spec.SeccompProfile{Type: spec.SeccompLocalhost, LocalhostProfile: name, Profile: content}
	default:
		p.fail(where+".type", "%q: want RuntimeDefault, Unconfined or Localhost", sp.Type)
		return nil
	}
}

// ReadSeccompProfiles reads --seccomp-profile NAME=FILE values: NAME is the
// localhostProfile the manifests use, FILE an OCI runtime-spec LinuxSeccomp JSON document
// (the kubelet's seccomp profile format), checked here.
func ReadSeccompProfiles(values []string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, v := range values {
		name, file, ok := strings.Cut(v, "=")
		if !ok || name == "" || file == "" {
			return nil, fmt.Errorf("--seccomp-profile %q: want NAME=FILE", v)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("--seccomp-profile %s: given twice", name)
		}
		fi, err := os.Stat(file)
		if err != nil {
			return nil, fmt.Errorf("--seccomp-profile %s: %w", name, err)
		}
		if !fi.Mode().IsRegular() || fi.Size() > spec.MaxSeccompProfileBytes {
			return nil, fmt.Errorf("--seccomp-profile %s: %s is not a regular file of at most %d bytes", name, file, spec.MaxSeccompProfileBytes)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--seccomp-profile %s: %w", name, err)
		}
		if _, err := spec.ParseSeccomp(b); err != nil {
			return nil, fmt.Errorf("--seccomp-profile %s (%s): %w", name, file, err)
		}
		out[name] = b
	}
	return out, nil
}
