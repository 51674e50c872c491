package manifests

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Lifecycle hooks (docs/sealing.md#lifecycle-hooks). An exec hook's argv and an httpGet
// hook's request (path, headers) are sealed, as for probes (probes.go): the placeholder
// carries the exec hook spec.HookStub(container, kind) instead, so the kubelet still decides
// when the hook runs (postStart right after the start, preStop before SIGTERM), and the agent
// answers the stub by running the sealed hook inside the guest (the argv in the container,
// or the HTTP request to 127.0.0.1:port). A sleep hook carries only a duration: it stays on
// the placeholder as the kubelet's own sleep, and nothing of it is sealed.

// hookKinds maps the Kubernetes lifecycle field to the sealed hook kind, in a fixed order.
var hookKinds = []string{spec.HookPostStart, spec.HookPreStop}

func lifecycleHandler(lc *corev1.Lifecycle, kind string) **corev1.LifecycleHandler {
	if kind == spec.HookPostStart {
		return &lc.PostStart
	}
	return &lc.PreStop
}

// hooks returns the container's sealed hooks; failures are recorded. An empty lifecycle
// seals nothing.
func (p *pod) hooks(field string, c *corev1.Container) []spec.Hook {
	lc := c.Lifecycle
	if lc == nil || lc.PostStart == nil && lc.PreStop == nil {
		return nil
	}
	if strings.HasPrefix(field, "initContainers[") && (c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways) {
		p.fail(field+".lifecycle", "hooks on an init container need restartPolicy: Always (a sidecar), as in Kubernetes")
		return nil
	}
	var out []spec.Hook
	for _, kind := range hookKinds {
		h := *lifecycleHandler(lc, kind)
		if h == nil {
			continue
		}
		f := field + ".lifecycle." + kind
		switch {
		case h.TCPSocket != nil:
			p.fail(f+".tcpSocket", "not supported as a lifecycle hook (Kubernetes ignores it); use exec, httpGet or sleep")
		case h.Sleep != nil:
			// A duration: kept on the placeholder, run by the kubelet.
		case h.Exec != nil:
			if len(h.Exec.Command) == 0 || h.Exec.Command[0] == "" {
				p.fail(f+".exec.command", "empty")
				continue
			}
			out = append(out, spec.Hook{Kind: kind, Exec: h.Exec.Command})
			p.warn(f+".exec", "exec hook sealed: it runs inside the guest and its argv never leaves the TEE; the placeholder carries the agent-answered exec hook %q", spec.HookStub(c.Name, kind))
		case h.HTTPGet != nil:
			sh, ok := p.sealHTTPGet(f+".httpGet", h.HTTPGet, c, "a sealed HTTP hook")
			if !ok {
				continue
			}
			out = append(out, spec.Hook{Kind: kind, HTTPGet: sh})
			p.warn(f+".httpGet", "HTTP hook sealed: the agent sends it inside the guest to 127.0.0.1:%d, so its path and headers never leave the TEE; the placeholder carries the agent-answered exec hook %q", sh.Port, spec.HookStub(c.Name, kind))
		default:
			p.fail(f, "no action: want one of exec, httpGet or sleep")
		}
	}
	return out
}

// placeholderLifecycle returns the placeholder's lifecycle for the input container c: every
// sealed hook replaced by its stub, sleep hooks as they were, nil when nothing is left.
func placeholderLifecycle(c *corev1.Container) *corev1.Lifecycle {
	if c.Lifecycle == nil {
		return nil
	}
	out := &corev1.Lifecycle{}
	for _, kind := range hookKinds {
		h := *lifecycleHandler(c.Lifecycle, kind)
		switch {
		case h == nil:
		case h.Sleep != nil:
			*lifecycleHandler(out, kind) = &corev1.LifecycleHandler{Sleep: h.Sleep.DeepCopy()}
		default: // exec or httpGet, sealed (anything else was refused)
			*lifecycleHandler(out, kind) = &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: spec.HookStub(c.Name, kind)}}
		}
	}
	if out.PostStart == nil && out.PreStop == nil {
		return nil
	}
	return out
}
