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
			if v, ok := p.key(ef+".valueFrom.secretKeyRef", "Secret", r.Name, r.Key, r.Optional); ok {
				out = append(out, spec.EnvVar{Name: e.Name, Value: v, Literal: true})
			}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			r := e.ValueFrom.ConfigMapKeyRef
			if v, ok := p.key(ef+".valueFrom.configMapKeyRef", "ConfigMap", r.Name, r.Key, r.Optional); ok {
				out = append(out, spec.EnvVar{Name: e.Name, Value: v, Literal: true})
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
		var data map[string][]byte
		switch {
		case ef.SecretRef != nil:
			data = p.source(f+".secretRef", "Secret", ef.SecretRef.Name, ef.SecretRef.Optional)
		case ef.ConfigMapRef != nil:
			data = p.source(f+".configMapRef", "ConfigMap", ef.ConfigMapRef.Name, ef.ConfigMapRef.Optional)
		}
		for _, k := range sortedKeys(data) {
			out = append(out, spec.EnvVar{Name: ef.Prefix + k, Value: string(data[k]), Literal: true})
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

// refuseOpaqueArgv refuses $(VAR) in command/args when VAR carries an annotation value,
// directly or through another variable: annotation values have no syntax, so they may be
// env values but never become part of argv (the agent refuses the same at run time).
func (p *pod) refuseOpaqueArgv(field string, sc *spec.Container) {
	opaque := map[string]string{} // variable -> annotation field it carries
	for _, e := range sc.Env {
		opaque[e.Name] = ""
		switch {
		case hostvalue.Opaque(e.FromHost):
			opaque[e.Name] = strings.TrimPrefix(e.FromHost, hostvalue.FieldRef)
		case e.FromHost == "" && !e.Literal: // a Literal value is never expanded
			for _, r := range hostvalue.Refs(e.Value) {
				if f := opaque[r]; f != "" {
					opaque[e.Name] = f
					break
				}
			}
		}
	}
	for _, part := range []struct {
		name string
		argv []string
	}{{"command", sc.Command}, {"args", sc.Args}} {
		for i, a := range part.argv {
			for _, r := range hostvalue.Refs(a) {
				if f := opaque[r]; f != "" {
					p.fail(fmt.Sprintf("%s.%s[%d]", field, part.name, i),
						"container %q: $(%s) carries %s: annotation values have no syntax, so they are never substituted into command or args; read the variable from the environment instead (\"$%s\" in a shell)",
						sc.Name, r, f, r)
					break
				}
			}
		}
	}
}
