package manifests

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Probes (docs/sealing.md#probes-answered-inside-the-guest). An exec probe's argv and an HTTP probe's headers (often a bearer
// token) are sealed: the placeholder carries the exec probe spec.ProbeStub(container, kind)
// instead, with the same timing, and the agent answers it by running the sealed probe inside
// the guest (the argv in the container, or the HTTP request to 127.0.0.1:port). An HTTP probe
// without headers, a tcpSocket and a gRPC probe carry nothing secret (a port, a path, a
// service name): they stay network probes the kubelet runs against the pod IP, so their
// path stays visible on the host.

// probeKinds maps the Kubernetes probe field to the sealed probe kind, in a fixed order.
var probeKinds = []struct{ field, kind string }{
	{"livenessProbe", spec.ProbeLiveness},
	{"readinessProbe", spec.ProbeReadiness},
	{"startupProbe", spec.ProbeStartup},
}

func containerProbe(c *corev1.Container, kind string) **corev1.Probe {
	switch kind {
	case spec.ProbeLiveness:
		return &c.LivenessProbe
	case spec.ProbeReadiness:
		return &c.ReadinessProbe
	}
	return &c.StartupProbe
}

// sealedProbe reports whether a probe runs inside the guest.
func sealedProbe(pr *corev1.Probe) bool {
	return pr != nil && (pr.Exec != nil || pr.HTTPGet != nil && len(pr.HTTPGet.HTTPHeaders) > 0)
}

// probes returns the container's sealed probes; failures are recorded.
func (p *pod) probes(field string, c *corev1.Container) []spec.Probe {
	var out []spec.Probe
	for _, pk := range probeKinds {
		pr := *containerProbe(c, pk.kind)
		if !sealedProbe(pr) {
			continue
		}
		f := field + "." + pk.field
		sp := spec.Probe{Kind: pk.kind, TimeoutSeconds: pr.TimeoutSeconds}
		if pr.TimeoutSeconds < 0 || pr.TimeoutSeconds > spec.MaxProbeTimeoutSeconds {
			p.fail(f+".timeoutSeconds", "%d out of range 0..%d", pr.TimeoutSeconds, spec.MaxProbeTimeoutSeconds)
			continue
		}
		if pr.Exec != nil {
			if len(pr.Exec.Command) == 0 {
				p.fail(f+".exec.command", "empty")
				continue
			}
			sp.Exec = pr.Exec.Command
			p.warn(f+".exec", "exec probe sealed: it runs inside the guest and its argv never leaves the TEE; the placeholder carries the agent-answered exec probe %q, and the host cannot exec the sealed argv", spec.ProbeStub(c.Name, pk.kind))
		} else {
			sh, ok := p.sealHTTPGet(f+".httpGet", pr.HTTPGet, c, "a probe with httpHeaders")
			if !ok {
				continue
			}
			sp.HTTPGet = sh
			p.warn(f+".httpGet", "HTTP probe with httpHeaders sealed: the agent sends it inside the guest to 127.0.0.1:%d, so its headers never leave the TEE; the placeholder carries the agent-answered exec probe %q", sh.Port, spec.ProbeStub(c.Name, pk.kind))
		}
		out = append(out, sp)
	}
	return out
}

// sealHTTPGet converts a probe's or a hook's HTTP request (field f, what names the sealed
// action in messages) to the sealed request the agent sends inside the guest to
// 127.0.0.1:port; failures are recorded.
func (p *pod) sealHTTPGet(f string, h *corev1.HTTPGetAction, c *corev1.Container, what string) (*spec.HTTPGetAction, bool) {
	if h.Host != "" {
		p.fail(f+".host", "%q: %s runs inside the guest against 127.0.0.1; a host would send its path and headers out over the node's network (drop host)", h.Host, what)
		return nil, false
	}
	port, ok := resolvePort(h.Port, c)
	if !ok {
		p.fail(f+".port", "%q is neither a port number nor the name of a port of this container", h.Port.String())
		return nil, false
	}
	sh := &spec.HTTPGetAction{Path: h.Path, Port: port, Scheme: string(h.Scheme)}
	if sh.Scheme != "" && sh.Scheme != "HTTP" && sh.Scheme != "HTTPS" {
		p.fail(f+".scheme", "%q: want HTTP or HTTPS", sh.Scheme)
		return nil, false
	}
	for _, hd := range h.HTTPHeaders {
		sh.Headers = append(sh.Headers, spec.HTTPHeader{Name: hd.Name, Value: hd.Value})
	}
	return sh, true
}

// resolvePort returns a probe port as a number (a named port of the container resolved).
func resolvePort(v intstr.IntOrString, c *corev1.Container) (int32, bool) {
	if v.Type == intstr.Int {
		return v.IntVal, v.IntVal >= 1 && v.IntVal <= 65535
	}
	for _, cp := range c.Ports {
		if cp.Name != "" && cp.Name == v.StrVal {
			return cp.ContainerPort, cp.ContainerPort >= 1 && cp.ContainerPort <= 65535
		}
	}
	return 0, false
}

// stubProbes replaces the placeholder's sealed probes by the agent-answered stub, keeping
// their timing (period, timeout, thresholds).
func stubProbes(c *corev1.Container) {
	for _, pk := range probeKinds {
		pp := containerProbe(c, pk.kind)
		if !sealedProbe(*pp) {
			continue
		}
		stub := (*pp).DeepCopy()
		stub.ProbeHandler = corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: spec.ProbeStub(c.Name, pk.kind)}}
		*pp = stub
	}
}
