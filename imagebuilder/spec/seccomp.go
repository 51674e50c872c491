package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Seccomp profile types, as Kubernetes names them.
const (
	// SeccompRuntimeDefault (or no profile) is the agent's default profile: containerd's
	// default (agent/containers/seccomp_default.go).
	SeccompRuntimeDefault = "RuntimeDefault"
	// SeccompUnconfined runs the container without a filter: only when the owner sealed it.
	SeccompUnconfined = "Unconfined"
	// SeccompLocalhost is a profile the owner supplied at seal time; its content is sealed.
	SeccompLocalhost = "Localhost"
)

// MaxSeccompProfileBytes bounds a sealed Localhost profile.
const MaxSeccompProfileBytes = 1 << 20

// SeccompProfile is a container's seccomp profile.
type SeccompProfile struct {
	Type string `json:"type"`
	// LocalhostProfile is the name the manifest used (Localhost only), for messages.
	LocalhostProfile string `json:"localhostProfile,omitempty"`
	// Profile is the Localhost profile itself, an OCI runtime-spec LinuxSeccomp document
	// (the format of the kubelet's seccomp profile files), read at seal time.
	Profile json.RawMessage `json:"profile,omitempty"`
}

// ErrSeccompProfile: a seccomp profile that cannot be applied as written.
var ErrSeccompProfile = errors.New("invalid seccomp profile")

var (
	seccompActions = []specs.LinuxSeccompAction{specs.ActKill, specs.ActKillProcess, specs.ActKillThread, specs.ActTrap,
		specs.ActErrno, specs.ActTrace, specs.ActAllow, specs.ActLog}
	seccompOps = []specs.LinuxSeccompOperator{specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual, specs.OpEqualTo,
		specs.OpGreaterEqual, specs.OpGreaterThan, specs.OpMaskedEqual}
)

// Filter returns the Localhost profile's filter (nil, nil for the other types); it checks
// the type and, for Localhost, the content: strict JSON (unknown fields refused), known
// actions and operators, named syscalls. The seal side and the agent both call it.
func (p *SeccompProfile) Filter() (*specs.LinuxSeccomp, error) {
	switch p.Type {
	case SeccompRuntimeDefault, SeccompUnconfined:
		if len(p.Profile) > 0 || p.LocalhostProfile != "" {
			return nil, fmt.Errorf("%w: type %s carries a localhost profile", ErrSeccompProfile, p.Type)
		}
		return nil, nil
	case SeccompLocalhost:
	default:
		return nil, fmt.Errorf("%w: type %q: want %s, %s or %s", ErrSeccompProfile, p.Type, SeccompRuntimeDefault, SeccompUnconfined, SeccompLocalhost)
	}
	return ParseSeccomp(p.Profile)
}

// ParseSeccomp decodes and checks an OCI runtime-spec LinuxSeccomp document.
func ParseSeccomp(b []byte) (*specs.LinuxSeccomp, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: Localhost profile has no content", ErrSeccompProfile)
	}
	if len(b) > MaxSeccompProfileBytes {
		return nil, fmt.Errorf("%w: %d bytes (at most %d)", ErrSeccompProfile, len(b), MaxSeccompProfileBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s specs.LinuxSeccomp
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSeccompProfile, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON document", ErrSeccompProfile)
	}
	if !slices.Contains(seccompActions, s.DefaultAction) {
		return nil, fmt.Errorf("%w: defaultAction %q", ErrSeccompProfile, s.DefaultAction)
	}
	if s.ListenerPath != "" {
		return nil, fmt.Errorf("%w: listenerPath (seccomp user notification) is not supported in the guest", ErrSeccompProfile)
	}
	for i, sc := range s.Syscalls {
		if len(sc.Names) == 0 || slices.Contains(sc.Names, "") {
			return nil, fmt.Errorf("%w: syscalls[%d]: names empty", ErrSeccompProfile, i)
		}
		if !slices.Contains(seccompActions, sc.Action) {
			return nil, fmt.Errorf("%w: syscalls[%d]: action %q", ErrSeccompProfile, i, sc.Action)
		}
		for j, a := range sc.Args {
			if !slices.Contains(seccompOps, a.Op) || a.Index > 5 {
				return nil, fmt.Errorf("%w: syscalls[%d].args[%d]: op %q index %d", ErrSeccompProfile, i, j, a.Op, a.Index)
			}
		}
	}
	return &s, nil
}
