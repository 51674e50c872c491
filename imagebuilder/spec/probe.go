package spec

import (
	"fmt"
	"strings"
)

// Probe kinds.
const (
	ProbeLiveness  = "liveness"
	ProbeReadiness = "readiness"
	ProbeStartup   = "startup"
)

// Probe is a container probe whose action stays sealed (an exec argv, or an HTTP request
// with headers such as a bearer token). The host-visible placeholder carries the exec probe
// ProbeStub(container, kind) instead, which the agent answers by running this probe inside
// the guest.
type Probe struct {
	Kind string `json:"kind"` // liveness | readiness | startup
	// Exactly one of Exec and HTTPGet.
	Exec    []string       `json:"exec,omitempty"`
	HTTPGet *HTTPGetAction `json:"httpGet,omitempty"`
	// TimeoutSeconds bounds one run (Kubernetes default 1).
	TimeoutSeconds int32 `json:"timeoutSeconds,omitempty"`
}

// HTTPGetAction is an HTTP request (a probe's or a hook's) sent from inside the guest to
// 127.0.0.1:Port.
type HTTPGetAction struct {
	Path    string       `json:"path,omitempty"`
	Port    int32        `json:"port"`
	Scheme  string       `json:"scheme,omitempty"` // HTTP (default) or HTTPS
	Headers []HTTPHeader `json:"headers,omitempty"`
}

// HTTPHeader is one request header of an HTTP probe or hook.
type HTTPHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// MaxProbeTimeoutSeconds bounds a sealed probe's timeout.
const MaxProbeTimeoutSeconds = 3600

// ProbeStubPath is argv[0] of every probe and hook stub. It is not a file in any container:
// the agent answers the exec itself.
const ProbeStubPath = "/sealpod"

// ProbeStub is the argv of the exec probe the placeholder carries for a sealed probe. It
// names nothing the host does not already know (the container name and the probe kind).
func ProbeStub(container, kind string) []string {
	return []string{ProbeStubPath, "probe", container, kind}
}

// ParseProbeStub reports whether argv is a probe stub and returns its container and kind.
func ParseProbeStub(argv []string) (container, kind string, ok bool) {
	if len(argv) != 4 || argv[0] != ProbeStubPath || argv[1] != "probe" || !validProbeKind(argv[3]) || argv[2] == "" {
		return "", "", false
	}
	return argv[2], argv[3], true
}

func validProbeKind(k string) bool {
	return k == ProbeLiveness || k == ProbeReadiness || k == ProbeStartup
}

// Probe returns the container's sealed probe of that kind.
func (c *Container) Probe(kind string) (*Probe, bool) {
	for i := range c.Probes {
		if c.Probes[i].Kind == kind {
			return &c.Probes[i], true
		}
	}
	return nil, false
}

// Timeout returns the probe's timeout in seconds (1 when unset, as in Kubernetes).
func (p *Probe) Timeout() int32 {
	if p.TimeoutSeconds <= 0 {
		return 1
	}
	return p.TimeoutSeconds
}

// validate checks one sealed probe.
func (p *Probe) validate() error {
	if !validProbeKind(p.Kind) {
		return fmt.Errorf("kind %q: want liveness, readiness or startup", p.Kind)
	}
	if (len(p.Exec) > 0) == (p.HTTPGet != nil) {
		return fmt.Errorf("%s: want exactly one of exec and httpGet", p.Kind)
	}
	if p.TimeoutSeconds < 0 || p.TimeoutSeconds > MaxProbeTimeoutSeconds {
		return fmt.Errorf("%s: timeoutSeconds %d out of range 0..%d", p.Kind, p.TimeoutSeconds, MaxProbeTimeoutSeconds)
	}
	if p.HTTPGet != nil {
		if err := p.HTTPGet.validate(); err != nil {
			return fmt.Errorf("%s: %w", p.Kind, err)
		}
	}
	return nil
}

// validate checks a sealed HTTP request (of a probe or a hook).
func (h *HTTPGetAction) validate() error {
	if h.Port < 1 || h.Port > 65535 {
		return fmt.Errorf("httpGet.port %d out of range 1..65535", h.Port)
	}
	if h.Scheme != "" && h.Scheme != "HTTP" && h.Scheme != "HTTPS" {
		return fmt.Errorf("httpGet.scheme %q: want HTTP or HTTPS", h.Scheme)
	}
	for i, hd := range h.Headers {
		if !validHeaderName(hd.Name) {
			return fmt.Errorf("httpGet.headers[%d]: invalid name", i)
		}
	}
	return nil
}

// validHeaderName reports whether n is an HTTP token (RFC 9110 §5.6.2).
func validHeaderName(n string) bool {
	return n != "" && !strings.ContainsFunc(n, func(r rune) bool {
		return r <= ' ' || r >= 0x7f || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", r)
	})
}

// validateProbes checks every sealed probe of every container.
func (s *Spec) validateProbes() error {
	for _, cs := range [][]Container{s.InitContainers, s.Containers} {
		for _, c := range cs {
			seen := map[string]bool{}
			for i := range c.Probes {
				if err := c.Probes[i].validate(); err != nil {
					return fmt.Errorf("sealed spec %s: container %s: probes[%d]: %w", s.Workload, c.Name, i, err)
				}
				if seen[c.Probes[i].Kind] {
					return fmt.Errorf("sealed spec %s: container %s: probes[%d]: second %s probe", s.Workload, c.Name, i, c.Probes[i].Kind)
				}
				seen[c.Probes[i].Kind] = true
			}
		}
	}
	return nil
}
