package manifests

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Registry credentials (docs/design.md#run, docs/sealing.md): the guest pulls the app images itself, so their
// credentials are sealed into the workload and never left for the node. The kubelet pulls
// only the secure image: the placeholder keeps the pull secrets that hold credentials for
// the secure image's registry (a Secret that also holds other registries' credentials is
// reduced to those entries in the output) and the ones named by --node-pull-secret.

// pullKeep says how a pull Secret of the input appears in the output.
type pullKeep struct {
	whole   bool            // --node-pull-secret: unchanged
	entries map[string]bool // else: only these registry entries (the secure registry's)
}

// registryCredentials seals the pod's pull secrets found in the input for in-guest pulls
// and returns the references the placeholder keeps.
func (p *pod) registryCredentials(refs []corev1.LocalObjectReference) []corev1.LocalObjectReference {
	if !p.s.opts.SealSecrets {
		return refs // nothing sealed: the Secrets pass through as the owner wrote them
	}
	var kept []corev1.LocalObjectReference
	for i, ref := range refs {
		field := fmt.Sprintf("imagePullSecrets[%d]", i)
		node := slices.Contains(p.s.opts.NodePullSecrets, ref.Name)
		if node {
			p.s.nodePullUsed[ref.Name] = true
		}
		key := p.s.ns(p.o) + "/" + ref.Name
		if err := p.s.badSource["Secret "+key]; err != nil {
			if !p.s.reported["Secret "+key] {
				p.s.reported["Secret "+key] = true
				p.errs = append(p.errs, err)
			}
			continue
		}
		sec, ok := p.s.secrets[key]
		if !ok {
			// Not in the input: created on the cluster, nothing to seal.
			kept = append(kept, ref)
			continue
		}
		obj := p.s.sourceObj["Secret "+key]
		creds, err := dockerCredentials(sec)
		if err != nil {
			p.fail(field, "Secret %q: %v", ref.Name, err)
			continue
		}
		p.sealed.Registries = append(p.sealed.Registries, creds...)
		k := p.s.pullKeep[obj]
		if k == nil {
			k = &pullKeep{entries: map[string]bool{}}
		}
		if node {
			k.whole = true
			p.warn(field, "Secret %q kept whole in the output (--node-pull-secret): the node can read every registry credential in it", ref.Name)
		}
		for _, c := range creds {
			if registryMatches(c.Registry, p.s.opts.SecureImage) {
				k.entries[c.Registry] = true
			}
		}
		if k.whole || len(k.entries) > 0 {
			p.s.pullKeep[obj] = k
			kept = append(kept, ref)
			continue
		}
		if _, ok := p.s.pullKeep[obj]; !ok {
			p.s.removed[obj] = true
		}
	}
	return kept
}

// applyPullKeep rewrites a kept pull Secret in the output to the entries the node needs and
// returns the warning to print, or "".
func (s *sealer) applyPullKeep(o *object, k *pullKeep) (string, error) {
	stripLastApplied(o.raw)
	if k.whole {
		return "", nil
	}
	sec := s.secrets[s.ns(o)+"/"+o.name]
	dataKey := corev1.DockerConfigJsonKey
	if sec.Type == corev1.SecretTypeDockercfg {
		dataKey = corev1.DockerConfigKey
	}
	var auths map[string]json.RawMessage
	if sec.Type == corev1.SecretTypeDockercfg {
		if err := json.Unmarshal(sec.Data[dataKey], &auths); err != nil {
			return "", fmt.Errorf("%s: data[%s]: %w", o.where(), dataKey, err)
		}
	} else {
		var cfg struct {
			Auths map[string]json.RawMessage `json:"auths"`
		}
		if err := json.Unmarshal(sec.Data[dataKey], &cfg); err != nil {
			return "", fmt.Errorf("%s: data[%s]: %w", o.where(), dataKey, err)
		}
		auths = cfg.Auths
	}
	if len(auths) == len(k.entries) && len(sec.Data) == 1 {
		return "", nil // nothing but the secure registry's credentials
	}
	keep := map[string]json.RawMessage{}
	for reg := range k.entries {
		keep[reg] = auths[reg]
	}
	var out any = keep
	if sec.Type != corev1.SecretTypeDockercfg {
		out = map[string]any{"auths": keep}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", err
	}
	o.raw["data"] = map[string]any{dataKey: base64.StdEncoding.EncodeToString(b)}
	delete(o.raw, "stringData")
	return fmt.Sprintf("%s: split: the output keeps only the credentials for the secure image's registry (%s); the other registry credentials are sealed into the workloads that use them", o.where(), strings.Join(sortedKeys(k.entries), ", ")), nil
}

// registryMatches reports whether a docker config key (as the kubelet reads it: optional
// scheme, host with * wildcards per label, optional path prefix, /v1/ or /v2/ ignored) covers
// the repository repo.
func registryMatches(key, repo string) bool {
	if repo == "" {
		return false
	}
	r, err := name.NewRepository(repo)
	if err != nil {
		return false
	}
	imgHost, imgPath := normalRegistry(r.RegistryStr()), r.RepositoryStr()
	key = strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	host, kpath, _ := strings.Cut(key, "/")
	kpath = strings.Trim(kpath, "/")
	if kpath == "v1" || kpath == "v2" || strings.HasPrefix(kpath, "v1/") || strings.HasPrefix(kpath, "v2/") {
		kpath = strings.Trim(kpath[2:], "/")
	}
	host = normalRegistry(host)
	hp, ip := strings.Split(host, "."), strings.Split(imgHost, ".")
	if len(hp) != len(ip) {
		return false
	}
	for i := range hp {
		if ok, err := path.Match(hp[i], ip[i]); err != nil || !ok {
			return false
		}
	}
	return kpath == "" || imgPath == kpath || strings.HasPrefix(imgPath, kpath+"/")
}

func normalRegistry(h string) string { return spec.HubAlias(strings.ToLower(h)) }

func dockerCredentials(sec *corev1.Secret) ([]spec.RegistryCredential, error) {
	type entry struct{ Username, Password, Auth string }
	var auths map[string]entry
	switch sec.Type {
	case corev1.SecretTypeDockerConfigJson:
		var cfg struct {
			Auths map[string]entry `json:"auths"`
		}
		if err := json.Unmarshal(sec.Data[corev1.DockerConfigJsonKey], &cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", corev1.DockerConfigJsonKey, err)
		}
		auths = cfg.Auths
	case corev1.SecretTypeDockercfg:
		if err := json.Unmarshal(sec.Data[corev1.DockerConfigKey], &auths); err != nil {
			return nil, fmt.Errorf("%s: %w", corev1.DockerConfigKey, err)
		}
	default:
		return nil, fmt.Errorf("type %q is not a registry credential", sec.Type)
	}
	var out []spec.RegistryCredential
	for _, reg := range sortedKeys(auths) {
		a := auths[reg]
		out = append(out, spec.RegistryCredential{Registry: reg, Username: a.Username, Password: a.Password, Auth: a.Auth})
	}
	return out, nil
}
