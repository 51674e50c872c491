package spec

import "fmt"

// Lifecycle hook kinds (Kubernetes' lifecycle.postStart and lifecycle.preStop).
const (
	HookPostStart = "postStart"
	HookPreStop   = "preStop"
)

// Hook is a container lifecycle hook whose action stays sealed: an exec argv, or an HTTP
// request (path, headers) sent inside the guest to 127.0.0.1:port. The host-visible
// placeholder carries the exec hook HookStub(container, kind) instead, so the kubelet still
// decides when the hook runs (postStart after the start, preStop before SIGTERM) and the
// agent decides what runs. A sleep hook is not sealed: it carries only a duration, and the
// placeholder keeps it as the kubelet's own sleep.
type Hook struct {
	Kind string `json:"kind"` // postStart | preStop
	// Exactly one of Exec and HTTPGet.
	Exec    []string       `json:"exec,omitempty"`
	HTTPGet *HTTPGetAction `json:"httpGet,omitempty"`
}

// HookStub is the argv of the exec hook the placeholder carries for a sealed hook. Like
// ProbeStub it names nothing the host does not already know.
func HookStub(container, kind string) []string {
	return []string{ProbeStubPath, "hook", container, kind}
}

// ParseHookStub reports whether argv is a hook stub and returns its container and kind.
func ParseHookStub(argv []string) (container, kind string, ok bool) {
	if len(argv) != 4 || argv[0] != ProbeStubPath || argv[1] != "hook" || !validHookKind(argv[3]) || argv[2] == "" {
		return "", "", false
	}
	return argv[2], argv[3], true
}

func validHookKind(k string) bool { return k == HookPostStart || k == HookPreStop }

// Hook returns the container's sealed hook of that kind.
func (c *Container) Hook(kind string) (*Hook, bool) {
	for i := range c.Hooks {
		if c.Hooks[i].Kind == kind {
			return &c.Hooks[i], true
		}
	}
	return nil, false
}

// validate checks one sealed hook.
func (h *Hook) validate() error {
	if !validHookKind(h.Kind) {
		return fmt.Errorf("kind %q: want postStart or preStop", h.Kind)
	}
	if (len(h.Exec) > 0) == (h.HTTPGet != nil) {
		return fmt.Errorf("%s: want exactly one of exec and httpGet", h.Kind)
	}
	if len(h.Exec) > 0 && h.Exec[0] == "" {
		return fmt.Errorf("%s: exec[0]: empty", h.Kind)
	}
	if h.HTTPGet != nil {
		if err := h.HTTPGet.validate(); err != nil {
			return fmt.Errorf("%s: %w", h.Kind, err)
		}
	}
	return nil
}

// validateHooks checks every sealed hook of every container: at most one of each kind.
func (s *Spec) validateHooks() error {
	for _, cs := range [][]Container{s.InitContainers, s.Containers} {
		for _, c := range cs {
			seen := map[string]bool{}
			for i := range c.Hooks {
				if err := c.Hooks[i].validate(); err != nil {
					return fmt.Errorf("sealed spec %s: container %s: hooks[%d]: %w", s.Workload, c.Name, i, err)
				}
				if seen[c.Hooks[i].Kind] {
					return fmt.Errorf("sealed spec %s: container %s: hooks[%d]: second %s hook", s.Workload, c.Name, i, c.Hooks[i].Kind)
				}
				seen[c.Hooks[i].Kind] = true
			}
		}
	}
	return nil
}
