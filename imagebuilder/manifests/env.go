package manifests

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/sealpod/sealpod/agent/hostvalue"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// env seals a container's env and envFrom. Values (and Secrets/ConfigMaps) are sealed;
// downward-API fields become FromHost references the agent fills from host values checked
// against the table of agent/hostvalue, which also decides here which fields exist.
// The order is Kubernetes': envFrom sources first, in order, then env, so that the agent's
// "later wins" lets env override envFrom. Values from Secrets and ConfigMaps are Literal:
// Kubernetes never expands $(VAR) or $$ in them.
func (p *pod) env(field string, c *corev1.Container) []spec.EnvVar {
	out := p.envFrom(field, c)
	for i, e := range c.Env {
		ef := fmt.Sprintf("%s.env[%d]", field, i)
		switch {
		case e.ValueFrom == nil:
			out = append(out, spec.EnvVar{Name: e.Name, Value: e.Value})
		case e.ValueFrom.SecretKeyRef != nil:
			r := e.ValueFrom.SecretKeyRef
			if ev, ok := p.keyRef(ef+".valueFrom.secretKeyRef", e.Name, "Secret", r.Name, r.Key, r.Optional); ok {
				out = append(out, ev)
			}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			r := e.ValueFrom.ConfigMapKeyRef
			if ev, ok := p.keyRef(ef+".valueFrom.configMapKeyRef", e.Name, "ConfigMap", r.Name, r.Key, r.Optional); ok {
				out = append(out, ev)
			}
		case e.ValueFrom.FieldRef != nil:
			path := e.ValueFrom.FieldRef.FieldPath
			if _, err := hostvalue.Lookup(hostvalue.FieldRef + path); err != nil {
				p.fail(ef+".valueFrom.fieldRef.fieldPath", "%q is not a downward-API field an env var can read (metadata.name, metadata.namespace, metadata.uid, metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, spec.serviceAccountName, status.hostIP(s), status.podIP(s))", path)
				continue
			}
			out = append(out, spec.EnvVar{Name: e.Name, FromHost: hostvalue.FieldRef + path})
		case e.ValueFrom.ResourceFieldRef != nil:
			if ev, ok := p.resourceEnv(ef+".valueFrom.resourceFieldRef", e.Name, e.ValueFrom.ResourceFieldRef); ok {
				out = append(out, ev)
			}
		default:
			p.fail(ef+".valueFrom", "unsupported source")
		}
	}
	return out
}

// envFrom seals a container's envFrom sources in order, each's keys sorted (as the kubelet).
func (p *pod) envFrom(field string, c *corev1.Container) []spec.EnvVar {
	var out []spec.EnvVar
	for i, ef := range c.EnvFrom {
		f := fmt.Sprintf("%s.envFrom[%d]", field, i)
		switch {
		case ef.SecretRef != nil:
			out = append(out, p.objectEnv(f+".secretRef", "Secret", ef.SecretRef.Name, ef.Prefix, ef.SecretRef.Optional)...)
		case ef.ConfigMapRef != nil:
			out = append(out, p.objectEnv(f+".configMapRef", "ConfigMap", ef.ConfigMapRef.Name, ef.Prefix, ef.ConfigMapRef.Optional)...)
		}
	}
	return out
}

// resourceEnv seals a resourceFieldRef with its containerName and divisor (canonical form);
// the agent divides the host's value in base units by it, as the kubelet does.
func (p *pod) resourceEnv(field, name string, r *corev1.ResourceFieldSelector) (spec.EnvVar, bool) {
	ev := spec.EnvVar{Name: name, FromHost: hostvalue.ResourceFieldRef + r.Resource, ContainerName: r.ContainerName}
	if !hostvalue.IsResource(r.Resource) {
		p.fail(field+".resource", "%q: an env var can read limits.* or requests.* of cpu, memory, ephemeral-storage or hugepages-<size>", r.Resource)
		return ev, false
	}
	if r.ContainerName != "" && !p.hasContainer(r.ContainerName) {
		p.fail(field+".containerName", "no container named %q in this pod", r.ContainerName)
		return ev, false
	}
	if !r.Divisor.IsZero() {
		ev.Divisor = r.Divisor.String()
	}
	if _, err := hostvalue.Divisor(r.Resource, ev.Divisor); err != nil {
		p.fail(field+".divisor", "%v", err)
		return ev, false
	}
	return ev, true
}

func (p *pod) hasContainer(name string) bool {
	for _, cs := range [][]corev1.Container{p.tmpl.Spec.InitContainers, p.tmpl.Spec.Containers} {
		for _, c := range cs {
			if c.Name == name {
				return true
			}
		}
	}
	return false
}

// refuseOpaqueArgv refuses $(VAR) in command/args when VAR carries an annotation value or a
// host-provided Secret/ConfigMap value, directly or through another variable: such values
// have no syntax the guest can check (the host chooses them), so they may be env values but
// never become part of argv (the agent refuses the same for annotations at run time).
func (p *pod) refuseOpaqueArgv(field string, sc *spec.Container) {
	opaque := map[string]string{} // variable -> what it carries and why that is opaque ("" = nothing)
	type hostPrefix struct{ prefix, why string }
	var hostFrom []hostPrefix // host-provided envFrom sources: any variable with the prefix
	carried := func(name string) string {
		if why, ok := opaque[name]; ok {
			return why
		}
		for _, h := range hostFrom {
			if strings.HasPrefix(name, h.prefix) {
				return h.why
			}
		}
		return ""
	}
	for _, e := range sc.Env {
		if obj, ok := p.hostObject(e); ok {
			why := obj + ": host-provided values (not in the input) are chosen by the host"
			if e.Name == "" { // envFrom: every key, as Prefix+key, overriding earlier variables
				for name := range opaque {
					if strings.HasPrefix(name, e.Prefix) {
						opaque[name] = why
					}
				}
				hostFrom = append(hostFrom, hostPrefix{e.Prefix, why})
				continue
			}
			opaque[e.Name] = why
			continue
		}
		why := ""
		switch {
		case hostvalue.Opaque(e.FromHost):
			why = strings.TrimPrefix(e.FromHost, hostvalue.FieldRef) + ": annotation values have no syntax"
		case e.FromHost == "" && !e.Literal: // a Literal value is never expanded
			for _, r := range hostvalue.Refs(e.Value) {
				if f := carried(r); f != "" {
					why = f
					break
				}
			}
		}
		opaque[e.Name] = why
	}
	for _, part := range []struct {
		name string
		argv []string
	}{{"command", sc.Command}, {"args", sc.Args}} {
		for i, a := range part.argv {
			for _, r := range hostvalue.Refs(a) {
				if f := carried(r); f != "" {
					p.fail(fmt.Sprintf("%s.%s[%d]", field, part.name, i),
						"container %q: $(%s) carries %s, so they are never substituted into command or args; read the variable from the environment instead (\"$%s\" in a shell)",
						sc.Name, r, f, r)
					break
				}
			}
		}
	}
}

// hostObject names the host-provided Secret or ConfigMap (and key) an env entry reads.
func (p *pod) hostObject(e spec.EnvVar) (string, bool) {
	for _, h := range []struct{ prefix, kind string }{
		{spec.HostSecretKeyRef, "Secret"}, {spec.HostConfigMapKeyRef, "ConfigMap"},
		{spec.HostSecretRef, "Secret"}, {spec.HostConfigMapRef, "ConfigMap"},
	} {
		if ref, ok := strings.CutPrefix(e.FromHost, h.prefix); ok {
			name, key, hasKey := strings.Cut(ref, "/")
			obj := h.kind + " " + p.s.ns(p.o) + "/" + name
			if hasKey {
				obj += " key " + key
			}
			return obj, true
		}
	}
	return "", false
}
