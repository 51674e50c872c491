package manifests

import (
	"fmt"
	"strconv"
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
			if ev, ok := p.resourceEnv(ef+".valueFrom.resourceFieldRef", e.Name, c, e.ValueFrom.ResourceFieldRef); ok {
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

// resourceEnv seals a resourceFieldRef as the kubelet resolves it
// (k8s.io/kubernetes/pkg/api/v1/resource.ExtractContainerResourceValue): the referenced
// container's (containerName, default the owner c) quantity in base units (millicores for
// cpu, bytes otherwise) divided by the divisor, rounded up, sealed as a value. Requests
// default to limits (API defaulting), an unset request is 0, an unset hugepages limit is 0.
// An unset cpu, memory or ephemeral-storage limit is the node's allocatable in Kubernetes;
// here the node is the guest, so the variable stays a reference (FromHost) that the agent
// fills with the guest's own capacity, never with a host value (agent/server hostvalues.go).
func (p *pod) resourceEnv(field, name string, c *corev1.Container, r *corev1.ResourceFieldSelector) (spec.EnvVar, bool) {
	ev := spec.EnvVar{Name: name, FromHost: hostvalue.ResourceFieldRef + r.Resource, ContainerName: r.ContainerName}
	if !hostvalue.IsResource(r.Resource) {
		p.fail(field+".resource", "%q: an env var can read limits.* or requests.* of cpu, memory, ephemeral-storage or hugepages-<size>", r.Resource)
		return ev, false
	}
	target := c
	if r.ContainerName != "" {
		if target = p.findContainer(r.ContainerName); target == nil {
			p.fail(field+".containerName", "no container named %q in this pod", r.ContainerName)
			return ev, false
		}
	}
	if !r.Divisor.IsZero() {
		ev.Divisor = r.Divisor.String()
	}
	d, err := hostvalue.Divisor(r.Resource, ev.Divisor)
	if err != nil {
		p.fail(field+".divisor", "%v", err)
		return ev, false
	}
	n, ok, err := containerResource(target, r.Resource)
	if err != nil {
		p.fail(field, "container %q: %v", target.Name, err)
		return ev, false
	}
	if !ok {
		return ev, true // the guest's capacity, filled by the agent
	}
	q := n / d
	if n%d != 0 {
		q++
	}
	return spec.EnvVar{Name: name, Value: strconv.FormatInt(q, 10), Literal: true}, true
}

// containerResource is c's quantity of resource ("limits.cpu", "requests.memory", ...) in
// base units; ok is false for an unset cpu, memory or ephemeral-storage limit.
func containerResource(c *corev1.Container, resource string) (n int64, ok bool, err error) {
	kind, res, _ := strings.Cut(resource, ".")
	rn := corev1.ResourceName(res)
	q, set := c.Resources.Limits[rn]
	if kind == "requests" {
		if rq, reqSet := c.Resources.Requests[rn]; reqSet {
			q, set = rq, true
		}
	}
	if !set {
		if kind == "limits" && !strings.HasPrefix(res, "hugepages-") {
			return 0, false, nil
		}
		return 0, true, nil
	}
	if q.Sign() < 0 {
		return 0, false, fmt.Errorf("resources.%s: negative", resource)
	}
	if rn == corev1.ResourceCPU {
		return q.MilliValue(), true, nil
	}
	return q.Value(), true, nil
}

// findContainer returns the pod's (init or app) container of that name, or nil.
func (p *pod) findContainer(name string) *corev1.Container {
	for _, cs := range [][]corev1.Container{p.tmpl.Spec.InitContainers, p.tmpl.Spec.Containers} {
		for i := range cs {
			if cs[i].Name == name {
				return &cs[i]
			}
		}
	}
	return nil
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
