package manifests

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/sealpod/sealpod/imagebuilder/image"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// pin returns ref pinned by digest, with the repository fully qualified.
func (s *sealer) pin(ref string) (string, error) {
	if v, ok := s.resolved[ref]; ok {
		return v, nil
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("%q is not a valid image reference: %v", ref, err)
	}
	var pinned string
	switch {
	case isDigest(r):
		pinned = r.Context().Name() + "@" + r.Identifier()
	case s.opts.Resolver == nil:
		return "", fmt.Errorf("%q is not pinned by digest; write it as image@sha256:<digest> or let sealctl resolve tags (--resolve)", ref)
	default:
		if pinned, err = s.opts.Resolver.Resolve(s.ctx, ref); err != nil {
			return "", err
		}
	}
	s.resolved[ref] = pinned
	return pinned, nil
}

func isDigest(r name.Reference) bool {
	_, ok := r.(name.Digest)
	return ok
}

// RegistryResolver resolves tags against registries (or their mirrors).
type RegistryResolver struct {
	Options image.RegistryOptions
	// Mirrors maps a registry host (docker.io, gcr.io, ...) to the host that answers for
	// it. The digest is content-addressed, so the pinned reference keeps the original
	// repository name and pulls from the original registry give the same content.
	Mirrors map[string]string
}

// Resolve implements Resolver.
func (rr *RegistryResolver) Resolve(ctx context.Context, ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("%q is not a valid image reference: %v", ref, err)
	}
	lookup := r
	reg := r.Context().RegistryStr()
	mirror, ok := rr.Mirrors[reg]
	if !ok && reg == name.DefaultRegistry {
		mirror, ok = rr.Mirrors["docker.io"]
	}
	if ok {
		lookup, err = image.ParseReference(mirror+"/"+r.Context().RepositoryStr()+":"+r.Identifier(), rr.Options)
		if err != nil {
			return "", err
		}
	} else if rr.Options.Insecure {
		if lookup, err = image.ParseReference(ref, rr.Options); err != nil {
			return "", err
		}
	}
	d, err := image.Resolve(ctx, lookup, rr.Options)
	if err != nil {
		return "", fmt.Errorf("resolve %q to a digest: %w", ref, err)
	}
	return r.Context().Name() + "@" + d.String(), nil
}

// ParseGuestMirrors parses "registry=host[:port]" pairs for Options.GuestMirrors, in order.
func ParseGuestMirrors(pairs []string) ([]spec.RegistryMirror, error) {
	var out []spec.RegistryMirror
	for _, p := range pairs {
		from, to, _ := strings.Cut(p, "=")
		m := spec.RegistryMirror{Registry: from, Endpoint: to}
		if !m.Valid() {
			return nil, fmt.Errorf("guest mirror %q: want REGISTRY=HOST[:PORT], e.g. gcr.io=10.244.0.1:5000", p)
		}
		out = append(out, m)
	}
	return out, nil
}

// ParseMirrors parses "registry=mirror" pairs.
func ParseMirrors(pairs []string) (map[string]string, error) {
	m := map[string]string{}
	for _, p := range pairs {
		from, to, ok := strings.Cut(p, "=")
		if !ok || from == "" || to == "" {
			return nil, fmt.Errorf("mirror %q: want REGISTRY=MIRROR, e.g. docker.io=127.0.0.1:5000", p)
		}
		m[from] = to
	}
	return m, nil
}
