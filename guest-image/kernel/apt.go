// Package kernel obtains the guest kernel from Debian's linux-image package without installing
// it: it resolves the exact versioned package the linux-image-amd64 metapackage depends on
// (apt-cache), downloads that .deb (apt-get download) into a cache, checks it against the
// SHA-256 in the apt index, unpacks it (dpkg-deb -x) and resolves the kernel modules the guest
// needs, with their dependencies, from the modules' own .modinfo sections (the .deb ships no
// modules.dep: depmod runs only when the package is installed).
//
// Cache layout ($XDG_CACHE_HOME or $HOME/.cache, then sealpod/guest/):
//
//	debs/<file>.deb                       downloaded packages, verified
//	trees/<package>_<version>/            unpacked packages (boot/, lib/modules/…)
//	trees/<package>_<version>/.sealpod-source.json   written last: marks a complete unpack
//	.lock                                 flock held while fetching or unpacking
package kernel

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
)

// DefaultMetaPackage is the Debian metapackage that names the current kernel.
const DefaultMetaPackage = "linux-image-amd64"

// Errors callers may branch on: both mean "the package cannot be fetched here" (no apt, no
// `apt-get update` yet, a version no longer in the index, no network).
var (
	ErrNotFound = errors.New("package not found in the apt index")
	ErrDownload = errors.New("package download failed")
)

// Package identifies one Debian binary package version.
type Package struct {
	Name    string `json:"package"`
	Version string `json:"version"`
	// SHA256 and Filename come from the apt index; empty for a pin not yet looked up.
	SHA256   string `json:"sha256,omitempty"`
	Filename string `json:"filename,omitempty"`
}

// String returns name=version, the form apt-get accepts.
func (p Package) String() string { return p.Name + "=" + p.Version }

var (
	pkgNameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	pkgVersionRE = regexp.MustCompile(`^[0-9A-Za-z.+~:-]+$`)
	sha256RE     = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ParsePin parses "name=version" (e.g. linux-image-6.1.0-56-amd64=6.1.192-2).
func ParsePin(s string) (Package, error) {
	name, version, ok := strings.Cut(s, "=")
	if !ok || !pkgNameRE.MatchString(name) || !pkgVersionRE.MatchString(version) {
		return Package{}, fmt.Errorf("kernel package %q: want name=version (e.g. linux-image-6.1.0-56-amd64=6.1.192-2)", s)
	}
	return Package{Name: name, Version: version}, nil
}

// Stanza is one deb822 paragraph (field names as written, values with continuation lines
// joined by "\n").
type Stanza map[string]string

// ParseStanzas parses deb822 text as printed by `apt-cache show`.
func ParseStanzas(data []byte) ([]Stanza, error) {
	var (
		out  []Stanza
		cur  Stanza
		last string
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			if cur != nil {
				out = append(out, cur)
				cur, last = nil, ""
			}
		case line[0] == ' ' || line[0] == '\t':
			if last == "" {
				return nil, fmt.Errorf("apt index line %d: continuation without a field", n)
			}
			cur[last] += "\n" + strings.TrimSpace(line)
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok || k == "" || strings.ContainsAny(k, " \t") {
				return nil, fmt.Errorf("apt index line %d: %q is not a field", n, line)
			}
			if cur == nil {
				cur = Stanza{}
			}
			cur[k] = strings.TrimSpace(v)
			last = k
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("apt index: %w", err)
	}
	if cur != nil {
		out = append(out, cur)
	}
	return out, nil
}

// depRE matches one alternative of a Depends entry with an exact version: "name (= version)".
var depRE = regexp.MustCompile(`^([a-z0-9][a-z0-9+.-]+)\s*\(\s*=\s*([0-9A-Za-z.+~:-]+)\s*\)$`)

// KernelDependency returns the exactly-versioned linux-image-* package a metapackage stanza
// depends on.
func KernelDependency(s Stanza) (Package, error) {
	deps, ok := s["Depends"]
	if !ok {
		return Package{}, fmt.Errorf("metapackage %s: no Depends field", s["Package"])
	}
	for _, d := range strings.Split(deps, ",") {
		d = strings.TrimSpace(d)
		if !strings.HasPrefix(d, "linux-image-") {
			continue
		}
		m := depRE.FindStringSubmatch(d)
		if m == nil {
			// Debian's metapackage pins "(= version)"; a range would make builds drift.
			return Package{}, fmt.Errorf("metapackage %s: dependency %q has no exact version", s["Package"], d)
		}
		return Package{Name: m[1], Version: m[2]}, nil
	}
	return Package{}, fmt.Errorf("metapackage %s: no linux-image-* dependency in %q", s["Package"], deps)
}

// aptShow runs `apt-cache show` on one argument and returns the stanzas.
func aptShow(ctx context.Context, args ...string) ([]Stanza, error) {
	cmd := exec.CommandContext(ctx, "apt-cache", append([]string{"show"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if _, lookErr := exec.LookPath("apt-cache"); lookErr != nil {
			return nil, fmt.Errorf("apt-cache show %s: %w (this build needs Debian's apt): %w", strings.Join(args, " "), lookErr, ErrNotFound)
		}
		return nil, fmt.Errorf("apt-cache show %s: %w: %s (run `apt-get update`?): %w",
			strings.Join(args, " "), err, strings.TrimSpace(stderr.String()), ErrNotFound)
	}
	st, err := ParseStanzas(out)
	if err != nil {
		return nil, fmt.Errorf("apt-cache show %s: %w", strings.Join(args, " "), err)
	}
	if len(st) == 0 {
		return nil, fmt.Errorf("apt-cache show %s: %w", strings.Join(args, " "), ErrNotFound)
	}
	return st, nil
}

// Resolve returns the exact kernel package (with SHA-256 and file name) that the candidate
// version of the metapackage depends on.
func Resolve(ctx context.Context, meta string) (Package, error) {
	if !pkgNameRE.MatchString(meta) {
		return Package{}, fmt.Errorf("metapackage %q: not a package name", meta)
	}
	st, err := aptShow(ctx, "--no-all-versions", meta)
	if err != nil {
		return Package{}, err
	}
	p, err := KernelDependency(st[0])
	if err != nil {
		return Package{}, err
	}
	return Lookup(ctx, p)
}

// Lookup fills SHA256 and Filename of a pinned package from the apt index.
func Lookup(ctx context.Context, p Package) (Package, error) {
	st, err := aptShow(ctx, p.String())
	if err != nil {
		return Package{}, err
	}
	for _, s := range st {
		if s["Package"] != p.Name || s["Version"] != p.Version {
			continue
		}
		if s["Architecture"] != "" && s["Architecture"] != "amd64" {
			continue
		}
		p.SHA256, p.Filename = s["SHA256"], s["Filename"]
		if !sha256RE.MatchString(p.SHA256) {
			return Package{}, fmt.Errorf("apt index %s: SHA256 %q: not a SHA-256", p, p.SHA256)
		}
		if p.Filename == "" || !strings.HasSuffix(p.Filename, ".deb") {
			return Package{}, fmt.Errorf("apt index %s: Filename %q: not a .deb", p, p.Filename)
		}
		return p, nil
	}
	return Package{}, fmt.Errorf("apt index: %s (amd64): %w", p, ErrNotFound)
}
