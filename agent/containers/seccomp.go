package containers

import (
	"fmt"
	"slices"

	"github.com/opencontainers/runc/libcontainer/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// seccompSupported is false when the agent was built without libseccomp (build tag
// seccomp): containers that need a filter are then refused, never run unconfined.
var seccompSupported = seccomp.Enabled

// seccompFilter returns the container's seccomp filter, by the sealed profile type:
//   - none or RuntimeDefault: containerd's default profile for the container's bounding
//     capabilities (seccomp_default.go), as containerd's CRI plugin gives every pod, for the
//     architectures the kernel can run (narrowArches);
//   - Localhost: the profile content sealed at seal time (checked again here);
//   - Unconfined, or a privileged container without a profile (as containerd): no filter.
//
// The host has no say in any of this: the type and the content come from the sealed spec.
func seccompFilter(sctx *spec.SecurityContext, bounding []string) (*specs.LinuxSeccomp, error) {
	p := sctx.SeccompProfile
	if p == nil {
		if sctx.Privileged {
			return nil, nil
		}
		p = &spec.SeccompProfile{Type: spec.SeccompRuntimeDefault}
	}
	filter, err := p.Filter()
	if err != nil {
		return nil, fmt.Errorf("%w: securityContext.seccompProfile: %v", ErrInvalid, err)
	}
	switch p.Type {
	case spec.SeccompUnconfined:
		return nil, nil
	case spec.SeccompRuntimeDefault:
		filter = defaultSeccompProfile(slices.Clone(bounding))
		filter.Architectures = narrowArches(filter.Architectures, runningKernelABIs())
	}
	if !seccompSupported {
		return nil, fmt.Errorf("%w: securityContext.seccompProfile %s: this agent was built without seccomp support (build tag seccomp, static libseccomp: make agent); refusing to run the container unconfined", ErrInvalid, p.Type)
	}
	return filter, nil
}
