package manifests

import (
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// The service-account token (issue 16 item 2). A pod whose automountServiceAccountToken is
// not false gets, from the ServiceAccount admission plugin, a projected volume
// "kube-api-access-<random>" (token, ca.crt, namespace) mounted read-only at
// serviceAccountMountPath in every container that has no mount there. The placeholder keeps
// automountServiceAccountToken as the input had it, so the kubelet writes and rotates that
// volume on the node; the sealed spec records a host-provided volume standing for it
// (spec.HostServiceAccountSource), mounted where admission mounts it, which the agent fills
// with what the shim reads from the placeholder's volume. The token is host-visible: the node
// issued it and can read it.
const (
	serviceAccountVolume    = "sealpod-serviceaccount"
	serviceAccountMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// serviceAccountToken adds the service-account volume and its mounts to the sealed spec
// (after the containers are sealed).
func (p *pod) serviceAccountToken() {
	a := p.tmpl.Spec.AutomountServiceAccountToken
	if a != nil && !*a {
		return
	}
	if p.s.opts.Strict { // --strict refuses host-provided values: no token unless asked for
		if a != nil {
			p.fail("automountServiceAccountToken", "true: the service-account token is host-provided (issued and visible to the node); --strict refuses host-provided values (set it to false, or drop --strict)")
		}
		return
	}
	if p.isVolume(serviceAccountVolume) {
		p.fail("volumes", "volume name %q is reserved for the service-account token (rename the volume, or set automountServiceAccountToken: false)", serviceAccountVolume)
		return
	}
	p.volumes[serviceAccountVolume] = spec.Volume{Name: serviceAccountVolume, Kind: spec.VolumeHostObject, Source: spec.HostServiceAccountSource}
	for _, cs := range [][]spec.Container{p.sealed.InitContainers, p.sealed.Containers} {
		for i := range cs {
			if !mountsAt(cs[i].Mounts, serviceAccountMountPath) {
				cs[i].Mounts = append(cs[i].Mounts, spec.Mount{Volume: serviceAccountVolume, Path: serviceAccountMountPath, ReadOnly: true})
			}
		}
	}
	p.s.warnOnce("service-account-token", "service-account tokens are host-provided: pods that do not set automountServiceAccountToken: false get the token the node issues (visible to the node) at "+serviceAccountMountPath+", as untrusted input (docs/sealing.md)")
}

func mountsAt(ms []spec.Mount, path string) bool {
	for _, m := range ms {
		if m.Path == path {
			return true
		}
	}
	return false
}
