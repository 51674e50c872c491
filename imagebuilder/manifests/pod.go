package manifests

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"reflect"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// pod seals one pod template.
type pod struct {
	s              *sealer
	o              *object
	path           string // field path of the PodSpec, e.g. "spec.template.spec"
	tmpl           *corev1.PodTemplateSpec
	claimTemplates []corev1.PersistentVolumeClaim // a StatefulSet's volumeClaimTemplates

	errs        []error
	volumes     map[string]spec.Volume // by name
	sealed      *spec.Spec
	pullSecrets []corev1.LocalObjectReference // kept on the placeholder
}

func (p *pod) fail(field, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s.%s: %s", p.o.where(), p.path, field, fmt.Sprintf(format, args...)))
}

func (p *pod) warn(field, format string, args ...any) {
	p.s.res.Warnings = append(p.s.res.Warnings, fmt.Sprintf("%s: %s.%s: %s", p.o.where(), p.path, field, fmt.Sprintf(format, args...)))
}

func (p *pod) annotation(key string) string {
	if v, ok := p.tmpl.Annotations[key]; ok {
		return v
	}
	if md, ok := p.o.raw["metadata"].(map[string]any); ok {
		if ann, ok := md["annotations"].(map[string]any); ok {
			if v, ok := ann[key].(string); ok {
				return v
			}
		}
	}
	return ""
}

// seal builds the sealed spec and envelope, and returns the placeholder template.
func (p *pod) seal() (*Workload, *corev1.PodTemplateSpec, error) {
	s, ps := p.s, &p.tmpl.Spec
	ns := s.ns(p.o)
	id := workloadID(ns, p.o.kind, p.o.name)
	p.sealed = &spec.Spec{Version: spec.Version, Workload: id, Pod: ns + "/" + p.o.name, Mirrors: p.s.opts.GuestMirrors}
	p.sealed.NoServiceLinks = ps.EnableServiceLinks != nil && !*ps.EnableServiceLinks
	p.volumes = map[string]spec.Volume{}

	if ps.HostNetwork && !s.opts.AllowHostNamespaces {
		p.fail("hostNetwork", "true shares the node's network namespace; refused (pass --allow-host-namespaces to accept)")
	}
	if ps.HostPID && !s.opts.AllowHostNamespaces {
		p.fail("hostPID", "true shares the node's PID namespace; refused (pass --allow-host-namespaces to accept)")
	}
	if ps.HostIPC && !s.opts.AllowHostNamespaces {
		p.fail("hostIPC", "true shares the node's IPC namespace; refused (pass --allow-host-namespaces to accept)")
	}
	if len(ps.EphemeralContainers) > 0 {
		p.fail("ephemeralContainers", "not supported by sealed pods")
	}
	for i := range ps.Volumes {
		if !p.isTemplate(ps.Volumes[i].Name) { // else the StatefulSet controller replaces it
			p.volume(i, &ps.Volumes[i])
		}
	}
	for i := range p.claimTemplates {
		p.templateVolume(i)
	}
	p.countEncrypted()
	p.pullSecrets = p.registryCredentials(ps.ImagePullSecrets)
	for i := range ps.InitContainers {
		c := &ps.InitContainers[i]
		sc := p.container(fmt.Sprintf("initContainers[%d]", i), c, ps.SecurityContext)
		sc.RestartAlways = c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		p.sealed.InitContainers = append(p.sealed.InitContainers, sc)
	}
	for i := range ps.Containers {
		p.sealed.Containers = append(p.sealed.Containers, p.container(fmt.Sprintf("containers[%d]", i), &ps.Containers[i], ps.SecurityContext))
	}
	if len(ps.Containers) == 0 {
		p.fail("containers", "empty")
	}
	p.serviceAccountToken() // serviceaccount.go
	names := map[string]bool{}
	for _, v := range p.volumes {
		names[v.Name] = true
	}
	for _, name := range sortedKeys(names) {
		p.sealed.Volumes = append(p.sealed.Volumes, p.volumes[name])
	}
	p.identity(ns)
	if len(p.errs) > 0 {
		return nil, nil, errors.Join(p.errs...)
	}

	plain, err := p.sealed.Marshal()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", p.o.where(), err)
	}
	if _, err := spec.Unmarshal(plain); err != nil { // what the agent checks
		return nil, nil, fmt.Errorf("%s: %w", p.o.where(), err)
	}
	key, err := envelope.NewKey()
	if err != nil {
		return nil, nil, err
	}
	env, err := envelope.Seal(plain, key, envelope.Header{Workload: id, TEEs: s.opts.TEEs, KBS: s.opts.KBS})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", p.o.where(), err)
	}
	w := &Workload{
		ID: id, Object: fmt.Sprintf("%s %s/%s", p.o.kind, ns, p.o.name),
		Spec: p.sealed, Key: key, Envelope: env, Digest: envelope.Sum(env),
		Limits: podLimits(ps), LimitsField: p.path + ".containers[*].resources.limits",
	}
	return w, p.placeholder(id), nil
}

// volume classifies one pod volume.
func (p *pod) volume(i int, v *corev1.Volume) {
	field := fmt.Sprintf("volumes[%d]", i)
	vs := &v.VolumeSource
	switch {
	case vs.EmptyDir != nil:
		sv := spec.Volume{Name: v.Name, Kind: spec.VolumeTmpfs}
		if vs.EmptyDir.SizeLimit != nil {
			sv.SizeLimit = vs.EmptyDir.SizeLimit.Value()
		}
		p.volumes[v.Name] = sv
	case vs.Secret != nil:
		p.objectVolume(field+".secret", v.Name, vs.Secret.DefaultMode, []objectSource{{field: field + ".secret", kind: "Secret", name: vs.Secret.SecretName, items: vs.Secret.Items, optional: vs.Secret.Optional}})
	case vs.ConfigMap != nil:
		p.objectVolume(field+".configMap", v.Name, vs.ConfigMap.DefaultMode, []objectSource{{field: field + ".configMap", kind: "ConfigMap", name: vs.ConfigMap.Name, items: vs.ConfigMap.Items, optional: vs.ConfigMap.Optional}})
	case vs.PersistentVolumeClaim != nil:
		p.claimVolume(field, v)
	case vs.Ephemeral != nil:
		p.ephemeralVolume(field, v)
	case vs.Projected != nil:
		srcs, ok := projectedObjects(field+".projected", vs.Projected)
		if !ok {
			p.hostVolume(field, v.Name, volumeKind(vs))
			return
		}
		p.objectVolume(field+".projected", v.Name, vs.Projected.DefaultMode, srcs)
	default:
		p.hostVolume(field, v.Name, volumeKind(vs))
	}
}

// volumeKind names a host volume source by its JSON field.
func volumeKind(vs *corev1.VolumeSource) string {
	raw, _ := json.Marshal(vs)
	var m map[string]json.RawMessage
	_ = json.Unmarshal(raw, &m)
	for k := range m {
		return k
	}
	return "unknown"
}

func (p *pod) hostVolume(field, name, kind string) {
	if !p.s.opts.AllowHostVolumes {
		p.fail(field, "volume %q is a host volume (%s): its contents are neither confidential nor integrity-protected; refused (pass --allow-host-volumes to accept, or use emptyDir, a PersistentVolumeClaim (an encrypted volume) or sealed Secrets)", name, kind)
		return
	}
	p.warn(field, "host volume %q (%s) allowed by --allow-host-volumes: the node can read and change it", name, kind)
	p.volumes[name] = spec.Volume{Name: name, Kind: spec.VolumeHost, Source: kind}
}

// container seals one container.
func (p *pod) container(field string, c *corev1.Container, podSC *corev1.PodSecurityContext) spec.Container {
	sc := spec.Container{
		Name: c.Name, Command: c.Command, Args: c.Args, WorkingDir: c.WorkingDir,
		TTY: c.TTY, Stdin: c.Stdin,
	}
	if c.Image == "" {
		p.fail(field+".image", "missing")
	} else if pinned, err := p.s.pin(c.Image); err != nil {
		p.fail(field+".image", "%v", err)
	} else {
		sc.Image = pinned
	}
	sc.Env = p.env(field, c)
	p.refuseOpaqueArgv(field, &sc)
	sc.SecurityContext = p.securityContext(field+".securityContext", c.SecurityContext, podSC)
	p.containerVolumes(field, c, &sc)
	sc.Hooks = p.hooks(field, c) // hooks.go
	sc.Probes = p.probes(field, c)
	return sc
}

// declaredVolume reports whether the pod spec declares a volume of that name.
func (p *pod) declaredVolume(name string) bool {
	for _, v := range p.tmpl.Spec.Volumes {
		if v.Name == name {
			return true
		}
	}
	return false
}

// isVolume reports whether a name is a volume (declared or claim template), even one
// already refused.
func (p *pod) isVolume(name string) bool {
	return p.declaredVolume(name) || p.isTemplate(name)
}

func (p *pod) securityContext(field string, c *corev1.SecurityContext, podSC *corev1.PodSecurityContext) *spec.SecurityContext {
	out := &spec.SecurityContext{}
	if podSC != nil {
		out.RunAsUser, out.RunAsGroup, out.RunAsNonRoot = podSC.RunAsUser, podSC.RunAsGroup, podSC.RunAsNonRoot
		out.SupplementalGroups = slices.Clone(podSC.SupplementalGroups)
		if podSC.FSGroup != nil && !slices.Contains(out.SupplementalGroups, *podSC.FSGroup) {
			// The kubelet makes fsGroup a supplemental group of every container.
			out.SupplementalGroups = append(out.SupplementalGroups, *podSC.FSGroup)
		}
	}
	if c != nil {
		if c.Privileged != nil && *c.Privileged {
			if !p.s.opts.AllowPrivileged {
				p.fail(field+".privileged", "true gives the container every device and capability of the guest; refused (pass --allow-privileged to accept)")
			}
			out.Privileged = true
		}
		if c.RunAsUser != nil {
			out.RunAsUser = c.RunAsUser
		}
		if c.RunAsGroup != nil {
			out.RunAsGroup = c.RunAsGroup
		}
		if c.RunAsNonRoot != nil {
			out.RunAsNonRoot = c.RunAsNonRoot
		}
		if c.ReadOnlyRootFilesystem != nil {
			out.ReadOnlyRootFilesystem = *c.ReadOnlyRootFilesystem
		}
		out.AllowPrivilegeEscalate = c.AllowPrivilegeEscalation
		if c.Capabilities != nil {
			for _, cp := range c.Capabilities.Add {
				out.CapAdd = append(out.CapAdd, string(cp))
			}
			for _, cp := range c.Capabilities.Drop {
				out.CapDrop = append(out.CapDrop, string(cp))
			}
		}
	}
	out.SeccompProfile = p.seccompProfile(field, c, podSC)
	if reflect.ValueOf(*out).IsZero() {
		return nil
	}
	return out
}

// identity fills SANs, the TLS directory and the log policy.
func (p *pod) identity(ns string) {
	id := &p.sealed.Identity
	id.TLSDir = spec.DefaultTLSDir
	if d := p.annotation(AnnotationTLSDir); d != "" {
		if !path.IsAbs(d) || path.Clean(d) != d || d == "/" {
			p.fail("metadata.annotations["+AnnotationTLSDir+"]", "%q is not a clean absolute path", d)
		}
		id.TLSDir = d
	}
	if v := p.annotation(AnnotationSANs); v != "" {
		for _, san := range strings.Split(v, ",") {
			if san = strings.TrimSpace(san); san != "" {
				id.SANs = append(id.SANs, san)
			}
		}
	} else {
		// Every Service of the input that selects this pod names it.
		podLabels := labels.Set(p.tmpl.Labels)
		for _, svc := range p.s.services[ns] {
			if svc.selector.Matches(podLabels) {
				n := svc.name
				id.SANs = append(id.SANs, n, n+"."+ns, n+"."+ns+".svc", n+"."+ns+".svc.cluster.local")
			}
		}
		id.SANs = append(id.SANs, fmt.Sprintf("spiffe://sealpod/ns/%s/%s/%s", ns, strings.ToLower(p.o.kind), p.o.name))
	}
	p.sealed.Policy.Logs = p.s.opts.Logs
	if v := p.annotation(AnnotationLogs); v != "" {
		if v != spec.LogsAllow && v != spec.LogsDeny {
			p.fail("metadata.annotations["+AnnotationLogs+"]", "%q: want allow or deny", v)
		}
		p.sealed.Policy.Logs = v
	}
	p.execPolicy()
}

// placeholder returns the host-visible pod template: same container names, ports,
// resources and probes, the secure image, and nothing confidential.
func (p *pod) placeholder(id string) *corev1.PodTemplateSpec {
	in := p.tmpl
	out := &corev1.PodTemplateSpec{ObjectMeta: in.ObjectMeta}
	out.Annotations = map[string]string{}
	for k, v := range in.Annotations {
		if !isOwnerAnnotation(k) && k != spec.AnnotationVolumes {
			out.Annotations[k] = v
		}
	}
	out.Annotations[AnnotationImage] = imagePlaceholder
	out.Annotations[AnnotationWorkload] = id
	out.Annotations[AnnotationKBS] = p.s.opts.KBS.URL
	if p.s.opts.MinTCB != "" {
		out.Annotations[AnnotationMinTCB] = p.s.opts.MinTCB
	}
	if vols := p.placeholderVolumes(); vols != "" {
		out.Annotations[spec.AnnotationVolumes] = vols
	}

	ps := in.Spec.DeepCopy()
	if ps.RuntimeClassName != nil && *ps.RuntimeClassName != p.s.opts.RuntimeClass {
		p.warn("runtimeClassName", "%q replaced by %q", *ps.RuntimeClassName, p.s.opts.RuntimeClass)
	}
	rc := p.s.opts.RuntimeClass
	ps.RuntimeClassName = &rc
	// automountServiceAccountToken stays as the input had it (serviceaccount.go), but for
	// --strict, which keeps host-provided tokens out.
	if p.s.opts.Strict && ps.AutomountServiceAccountToken == nil {
		no := false
		ps.AutomountServiceAccountToken = &no
	}
	ps.SecurityContext = placeholderPodSecurity(in.Spec.SecurityContext)
	ps.Overhead = nil
	ps.ImagePullSecrets = p.pullSecrets
	ps.Volumes = nil
	for _, v := range in.Spec.Volumes {
		if k := p.volumes[v.Name].Kind; k == spec.VolumeHost || k == spec.VolumeHostObject || k == spec.VolumeEncrypted {
			ps.Volumes = append(ps.Volumes, v)
		}
	}
	for i := range ps.InitContainers {
		p.placeholderContainer(&ps.InitContainers[i])
	}
	for i := range ps.Containers {
		p.placeholderContainer(&ps.Containers[i])
	}
	out.Spec = *ps
	return out
}

func (p *pod) placeholderContainer(c *corev1.Container) {
	c.Image = imagePlaceholder
	c.ImagePullPolicy = corev1.PullIfNotPresent
	c.Command, c.Args, c.WorkingDir = nil, nil, ""
	var envFrom []corev1.EnvFromSource
	for _, e := range c.EnvFrom {
		if p.keepEnvFrom(e) {
			// Tagged, so the agent finds this source's variables (spec.HostEnvFromPrefix).
			e.Prefix = spec.HostEnvFromPrefix(len(envFrom)) + e.Prefix
			envFrom = append(envFrom, e)
		}
	}
	c.EnvFrom = envFrom
	c.SecurityContext = placeholderContainerSecurity(c.SecurityContext)
	c.Lifecycle = placeholderLifecycle(c) // hooks.go
	c.TerminationMessagePath, c.TerminationMessagePolicy = "", ""
	stubProbes(c)
	var env []corev1.EnvVar
	for _, e := range c.Env {
		// Downward-API values and host-provided objects are resolved by the kubelet and
		// handed to the guest as untrusted input; they hold no sealed value. Everything
		// else is sealed.
		if p.keepEnv(e) {
			env = append(env, e)
		}
	}
	c.Env = env
	c.VolumeMounts, c.VolumeDevices = p.placeholderMounts(c)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
