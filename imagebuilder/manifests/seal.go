package manifests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Annotations the sealed manifests carry (docs/sealing.md): the only host-visible metadata.
const (
	AnnotationImage    = "sealpod.io/image"
	AnnotationWorkload = "sealpod.io/workload"
	AnnotationKBS      = "sealpod.io/kbs"
)

// Annotations the owner may put on an input object or its pod template to tune sealing.
// They are removed from the output.
const (
	AnnotationSANs   = "sealpod.io/sans"    // comma-separated SANs of the workload certificate
	AnnotationLogs   = "sealpod.io/logs"    // allow | deny
	AnnotationTLSDir = "sealpod.io/tls-dir" // where the certificate appears in every container
)

// AnnotationMinTCB on a sealed pod template declares the minimum TCB its owner registered
// (Options.MinTCB): "snp=BOOTLOADER,TEE,SNP,MICROCODE", "tdx=<32 hex>", or both joined by ";".
// It is not secret: the broker's signed manifest publishes the policy.
const AnnotationMinTCB = "sealpod.io/min-tcb"

// imagePlaceholder stands for the secure image reference until Render knows its digest.
const imagePlaceholder = "sealpod.invalid/secure-image@sha256:0000000000000000000000000000000000000000000000000000000000000000"

// Resolver pins image references to digests.
type Resolver interface {
	// Resolve returns ref as "repository@sha256:<hex>".
	Resolve(ctx context.Context, ref string) (string, error)
}

// Options control sealing.
type Options struct {
	TEEs         []string
	KBS          envelope.KBS
	RuntimeClass string // default "sealpod-" + TEEs[0]
	Namespace    string // for objects without metadata.namespace; default "default"
	Logs         string // default policy: allow | deny; default allow
	// MinTCB, when set, is written to every sealed template as AnnotationMinTCB
	// ("snp=B,T,S,M;tdx=HEX", the minimum TCB registered with the broker), so that
	// `sealctl verify --expect` can check the broker's policy against it.
	MinTCB string

	SealSecrets bool
	// Strict refuses host-provided values: a reference to a Secret or ConfigMap that is not
	// in the input is an error instead of a warning (an optional one is skipped).
	Strict              bool
	AllowHostVolumes    bool
	AllowHostNamespaces bool
	AllowPrivileged     bool

	// Resolver pins tags to digests; nil means every image must already be pinned.
	Resolver Resolver
	// GuestMirrors are sealed into every workload: the agent pulls a registry's images from
	// its mirror first (the digests pin the content).
	GuestMirrors []spec.RegistryMirror

	// SecureImage is the repository the nodes pull the secure image from
	// ("registry.example.com/team/app-sealed"). Pull secrets holding credentials for it stay
	// in the output (reduced to that entry); all other registry credentials are sealed only.
	SecureImage string
	// NodePullSecrets name pull secrets kept in the output whole (--node-pull-secret).
	NodePullSecrets []string
	// SeccompProfiles are the Localhost seccomp profiles the owner gives (--seccomp-profile
	// NAME=FILE), by the localhostProfile name the manifests use; sealed with the spec.
	SeccompProfiles map[string][]byte
	// AllowExec are the owner's --allow-exec rules (ParseAllowExec): each is sealed into the
	// exec policy of every pod template with a container of that name, beside the
	// sealpod.io/exec annotation's rules.
	AllowExec []spec.ExecRule
}

// Workload is one sealed pod template.
type Workload struct {
	ID       string
	Object   string // "Deployment default/web", for messages
	Spec     *spec.Spec
	Key      []byte
	Envelope []byte
	Digest   envelope.Digest // the expected HOST_DATA/MRCONFIGID
	// Limits are the pod's effective limits (as the kubelet computes the sandbox's), which
	// size the workload's guest; LimitsField names their source in the input, for messages.
	Limits      bundle.Limits
	LimitsField string
}

// Result is the outcome of Seal. Render produces the sealed manifests once the secure
// image's digest is known.
type Result struct {
	Workloads []*Workload
	Warnings  []string
	out       []map[string]any
}

// Seal reads every source, seals every pod template and prepares the sealed manifests. It
// returns all problems at once (errors.Join); on error nothing is usable.
func Seal(ctx context.Context, sources []Source, opts Options) (*Result, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	objs, err := parseSources(sources)
	if err != nil {
		return nil, err
	}
	s := &sealer{ctx: ctx, opts: opts, res: &Result{}, resolved: map[string]string{}, removed: map[*object]bool{}}
	var errs []error
	if err := s.checkDuplicates(objs); err != nil {
		errs = append(errs, err)
	}
	s.index(objs)
	for _, o := range objs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := s.object(o); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.checkIDs(); err != nil {
		errs = append(errs, err)
	}
	for i, r := range opts.AllowExec {
		if !s.allowExecUsed[i] {
			errs = append(errs, fmt.Errorf("--allow-exec %s=%s: no sealed pod template has a container named %q", r.Container, FormatArgv(r.Argv), r.Container))
		}
	}
	if opts.SealSecrets {
		for _, n := range opts.NodePullSecrets {
			if !s.nodePullUsed[n] {
				errs = append(errs, fmt.Errorf("--node-pull-secret %q: no sealed pod names it in imagePullSecrets", n))
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(s.res.Workloads) == 0 {
		return nil, errors.New("no pod templates found in the input: nothing to seal")
	}
	for _, o := range objs {
		if k := s.pullKeep[o]; k != nil {
			w, err := s.applyPullKeep(o, k)
			if err != nil {
				errs = append(errs, err)
			}
			if w != "" {
				s.res.Warnings = append(s.res.Warnings, w)
			}
		} else if s.removed[o] {
			s.res.Warnings = append(s.res.Warnings, fmt.Sprintf("%s: sealed into the workloads that use it and removed from the output", o.where()))
			continue
		}
		errs = append(errs, s.checkMetadata(o)...)
		s.placeNamespace(o)
		s.res.out = append(s.res.out, o.raw)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s.res, nil
}

func (o *Options) setDefaults() error {
	if len(o.TEEs) == 0 {
		return errors.New("no TEE given (snp, tdx, pef or sim)")
	}
	if o.RuntimeClass == "" {
		o.RuntimeClass = "sealpod-" + o.TEEs[0]
	}
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if len(o.NodePullSecrets) > 0 && !o.SealSecrets {
		return errors.New("--node-pull-secret: only with --seal-secrets (without it every pull Secret passes through unchanged)")
	}
	switch o.Logs {
	case "":
		o.Logs = spec.LogsAllow
	case spec.LogsAllow, spec.LogsDeny:
	default:
		return fmt.Errorf("logs policy %q: want allow or deny", o.Logs)
	}
	return nil
}

// service is a Service of the input that may name sealed pods in their certificates.
type service struct {
	name     string
	selector labels.Selector
}

type sealer struct {
	ctx      context.Context
	opts     Options
	res      *Result
	resolved map[string]string // image ref -> pinned ref

	secrets    map[string]*corev1.Secret                // ns/name
	sourceObj  map[string]*object                       // "Secret ns/name" -> input object
	sourceData map[string]map[string][]byte             // "Secret ns/name" -> its data (keys to bytes)
	badSource  map[string]error                         // "Secret ns/name" -> why it is malformed
	claims     map[string]*corev1.PersistentVolumeClaim // PersistentVolumeClaims of the input, by ns/name
	badClaims  map[string]error                         // ns/name -> why it does not decode
	reported   map[string]bool                          // malformed objects already reported
	warnedObj  map[string]bool                          // host-provided objects already warned about
	services   map[string][]service                     // by namespace
	removed    map[*object]bool                         // sealed Secrets/ConfigMaps left out of the output
	pullKeep   map[*object]*pullKeep                    // pull secrets the kubelet still needs
	// nodePullUsed: --node-pull-secret names some sealed pod uses.
	nodePullUsed map[string]bool
	// allowExecUsed: indexes of Options.AllowExec some pod template has the container of.
	allowExecUsed map[int]bool
	// sealedStrs: sealed strings (>= minSealedLen) that clear metadata may not contain,
	// each with what it is; sealedList is their lookup order, built on first use.
	sealedStrs map[string]string
	sealedList []string
}

func (s *sealer) ns(o *object) string {
	if o.namespace != "" {
		return o.namespace
	}
	return s.opts.Namespace
}

// index collects the Secrets, ConfigMaps and Services of the input.
func (s *sealer) index(objs []*object) {
	s.secrets, s.sourceObj = map[string]*corev1.Secret{}, map[string]*object{}
	s.sourceData, s.badSource, s.reported, s.warnedObj = map[string]map[string][]byte{}, map[string]error{}, map[string]bool{}, map[string]bool{}
	s.pullKeep, s.nodePullUsed, s.sealedStrs = map[*object]*pullKeep{}, map[string]bool{}, map[string]string{}
	s.services = map[string][]service{}
	s.claims, s.badClaims = map[string]*corev1.PersistentVolumeClaim{}, map[string]error{}
	for _, o := range objs {
		if o.apiVersion != "v1" {
			continue
		}
		key := s.ns(o) + "/" + o.name
		switch o.kind {
		case "Secret", "ConfigMap":
			id := o.kind + " " + key
			s.sourceObj[id] = o
			data, err := parseObjectData(o)
			if err != nil {
				s.badSource[id] = err
				continue
			}
			s.sourceData[id] = data
			if o.kind == "Secret" {
				var sec corev1.Secret
				if json.Unmarshal(o.json, &sec) == nil {
					sec.Data, sec.StringData = data, nil
					s.secrets[key] = &sec
				}
			}
		case "PersistentVolumeClaim":
			s.indexClaim(o)
		case "Service":
			var svc corev1.Service
			if json.Unmarshal(o.json, &svc) == nil && len(svc.Spec.Selector) > 0 {
				ns := s.ns(o)
				s.services[ns] = append(s.services[ns], service{name: svc.Name, selector: labels.SelectorFromSet(svc.Spec.Selector)})
			}
		}
	}
}

// templatePath says where the pod template of each pod-bearing kind lives; converted
// gives the apiVersion old groups are converted to.
type kindInfo struct {
	path      []string
	converted string
}

var podKinds = map[string]map[string]kindInfo{
	"Pod":                   {"v1": {path: nil}},
	"ReplicationController": {"v1": {path: []string{"spec", "template"}}},
	"Deployment": {
		"apps/v1": {path: []string{"spec", "template"}}, "apps/v1beta1": {[]string{"spec", "template"}, "apps/v1"},
		"apps/v1beta2": {[]string{"spec", "template"}, "apps/v1"}, "extensions/v1beta1": {[]string{"spec", "template"}, "apps/v1"},
	},
	"DaemonSet": {
		"apps/v1": {path: []string{"spec", "template"}}, "apps/v1beta2": {[]string{"spec", "template"}, "apps/v1"},
		"extensions/v1beta1": {[]string{"spec", "template"}, "apps/v1"},
	},
	"ReplicaSet": {
		"apps/v1": {path: []string{"spec", "template"}}, "apps/v1beta2": {[]string{"spec", "template"}, "apps/v1"},
		"extensions/v1beta1": {[]string{"spec", "template"}, "apps/v1"},
	},
	"StatefulSet": {
		"apps/v1": {path: []string{"spec", "template"}}, "apps/v1beta1": {[]string{"spec", "template"}, "apps/v1"},
		"apps/v1beta2": {[]string{"spec", "template"}, "apps/v1"},
	},
	"Job":     {"batch/v1": {path: []string{"spec", "template"}}},
	"CronJob": {"batch/v1": {path: []string{"spec", "jobTemplate", "spec", "template"}}, "batch/v1beta1": {[]string{"spec", "jobTemplate", "spec", "template"}, "batch/v1"}},
}

// fields of the old API groups that apps/v1 no longer has.
var obsoleteSpecFields = []string{"rollbackTo", "templateGeneration"}

func (s *sealer) object(o *object) error {
	versions, ok := podKinds[o.kind]
	if !ok {
		return nil // passes through unchanged
	}
	ki, ok := versions[o.apiVersion]
	if !ok {
		var known []string
		for v := range versions {
			known = append(known, v)
		}
		sort.Strings(known)
		return fmt.Errorf("%s: apiVersion: %s %s is not supported (use one of %s)", o.where(), o.apiVersion, o.kind, strings.Join(known, ", "))
	}
	if o.name == "" {
		return fmt.Errorf("%s: metadata.name: missing", o.where())
	}
	if ki.converted != "" {
		s.res.Warnings = append(s.res.Warnings, fmt.Sprintf("%s: converted %s to %s", o.where(), o.apiVersion, ki.converted))
		o.raw["apiVersion"] = ki.converted
		if sp, ok := o.raw["spec"].(map[string]any); ok {
			for _, f := range obsoleteSpecFields {
				delete(sp, f)
			}
		}
	}
	tmplMap := o.raw // the template's map, replaced below (a Pod is written back field by field)
	for _, k := range ki.path {
		next, ok := tmplMap[k].(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %s: missing", o.where(), strings.Join(ki.path, "."))
		}
		tmplMap = next
	}
	var tmpl corev1.PodTemplateSpec
	if err := strictDecode(o.json, ki.path, &tmpl); err != nil {
		return fmt.Errorf("%s: %s: %w", o.where(), fieldPath(ki.path, ""), err)
	}
	if ki.converted != "" && o.kind != "CronJob" {
		// apps/v1 requires a selector; the old groups defaulted it to the template labels.
		sp := o.raw["spec"].(map[string]any)
		if _, ok := sp["selector"]; !ok && len(tmpl.Labels) > 0 {
			labels := map[string]any{}
			for k, v := range tmpl.Labels {
				labels[k] = v
			}
			sp["selector"] = map[string]any{"matchLabels": labels}
		}
	}
	var templates []corev1.PersistentVolumeClaim
	if o.kind == "StatefulSet" {
		var err error
		if templates, err = claimTemplates(o); err != nil {
			return err
		}
	}
	p := &pod{s: s, o: o, path: fieldPath(ki.path, "spec"), tmpl: &tmpl, claimTemplates: templates}
	w, placeholder, err := p.seal()
	if err != nil {
		return err
	}
	out, err := runtime.DefaultUnstructuredConverter.ToUnstructured(placeholder)
	if err != nil {
		return fmt.Errorf("%s: %w", o.where(), err)
	}
	if md, ok := out["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	if len(ki.path) == 0 { // Pod: the template is the object itself
		md, _ := o.raw["metadata"].(map[string]any)
		o.raw["metadata"] = mergeMeta(md, out["metadata"])
		o.raw["spec"] = out["spec"]
		delete(o.raw, "status")
	} else {
		for k := range tmplMap {
			delete(tmplMap, k)
		}
		for k, v := range out {
			tmplMap[k] = v
		}
	}
	stripOwnerAnnotations(o.raw)
	stripLastApplied(o.raw)
	var written []string
	for _, c := range append(append([]corev1.Container(nil), tmpl.Spec.InitContainers...), tmpl.Spec.Containers...) {
		written = append(written, c.Image)
	}
	s.addSealed(w, written)
	s.res.Workloads = append(s.res.Workloads, w)
	return nil
}

// mergeMeta keeps a Pod's own metadata and takes the annotations computed for the template.
func mergeMeta(orig map[string]any, computed any) map[string]any {
	if orig == nil {
		orig = map[string]any{}
	}
	if cm, ok := computed.(map[string]any); ok {
		if a, ok := cm["annotations"]; ok {
			orig["annotations"] = a
		}
	}
	return orig
}

func stripOwnerAnnotations(raw map[string]any) {
	md, ok := raw["metadata"].(map[string]any)
	if !ok {
		return
	}
	ann, ok := md["annotations"].(map[string]any)
	if !ok {
		return
	}
	for _, k := range ownerAnnotations {
		delete(ann, k)
	}
	if len(ann) == 0 {
		delete(md, "annotations")
	}
}

func fieldPath(path []string, suffix string) string {
	parts := append([]string(nil), path...)
	if suffix != "" {
		parts = append(parts, suffix)
	}
	if len(parts) == 0 {
		return "(object)"
	}
	return strings.Join(parts, ".")
}

// strictDecode decodes the value at path inside a JSON object into v, refusing unknown
// fields. An empty path decodes the object's metadata and spec (a Pod as a template).
func strictDecode(doc []byte, path []string, v any) error {
	raw := json.RawMessage(doc)
	if len(path) == 0 {
		var pod struct {
			Metadata json.RawMessage `json:"metadata"`
			Spec     json.RawMessage `json:"spec"`
		}
		if err := json.Unmarshal(raw, &pod); err != nil {
			return err
		}
		var err error
		if raw, err = json.Marshal(map[string]json.RawMessage{"metadata": pod.Metadata, "spec": pod.Spec}); err != nil {
			return err
		}
	}
	for _, k := range path {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return err
		}
		raw = m[k]
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

var idInvalid = regexp.MustCompile(`[^a-z0-9.-]+`)

// workloadID is "<namespace>.<kind>.<name>", lower case, DNS-1123.
func workloadID(ns, kind, name string) string {
	id := strings.ToLower(ns + "." + kind + "." + name)
	id = idInvalid.ReplaceAllString(id, "-")
	id = strings.Trim(id, "-.")
	if len(id) > 253 {
		id = strings.TrimRight(id[:253], "-.")
	}
	return id
}

// checkDuplicates refuses two objects of the same kind, namespace and name: the API server
// would refuse the second, and a sealed Secret could silently shadow another.
func (s *sealer) checkDuplicates(objs []*object) error {
	seen := map[string]*object{}
	var errs []error
	for _, o := range objs {
		if o.name == "" {
			continue
		}
		group, _, _ := strings.Cut(o.apiVersion, "/")
		if !strings.Contains(o.apiVersion, "/") {
			group = ""
		}
		key := group + "/" + o.kind + "/" + s.ns(o) + "/" + o.name
		if prev, ok := seen[key]; ok {
			errs = append(errs, fmt.Errorf("%s: metadata.name: %s %s/%s is also defined at %s", o.where(), o.kind, s.ns(o), o.name, prev.where()))
			continue
		}
		seen[key] = o
	}
	return errors.Join(errs...)
}

func (s *sealer) checkIDs() error {
	seen := map[string]string{}
	var errs []error
	for _, w := range s.res.Workloads {
		if prev, ok := seen[w.ID]; ok {
			errs = append(errs, fmt.Errorf("%s and %s both map to workload id %q: rename one", prev, w.Object, w.ID))
		}
		seen[w.ID] = w.Object
	}
	return errors.Join(errs...)
}

// Render writes the sealed manifests as a multi-document YAML stream, with every pod
// template pointing at imageRef (repository@sha256:...).
func (r *Result) Render(imageRef string) ([]byte, error) {
	if !strings.Contains(imageRef, "@sha256:") {
		return nil, fmt.Errorf("render sealed manifests: image %q is not pinned by digest", imageRef)
	}
	var buf bytes.Buffer
	for i, obj := range r.out {
		if i > 0 {
			buf.WriteString("---\n")
		}
		if err := writeYAML(&buf, obj); err != nil {
			return nil, fmt.Errorf("render sealed manifests: %w", err)
		}
	}
	out := bytes.ReplaceAll(buf.Bytes(), []byte(imagePlaceholder), []byte(imageRef))
	return out, nil
}
