// Package debimage builds OCI images of real applications from Debian packages, without
// Docker or a public registry (issue 16 item 9): it resolves the packages' dependency
// closure as apt resolves it on a machine where nothing is installed, downloads the exact
// versions (checked against the apt index's SHA-256) into a cache, reads their file trees
// (dpkg-deb --fsys-tarfile), and writes them as a deterministic layer — sorted entries,
// fixed times, no user names — plus a second layer with what the maintainer scripts would
// have created (users, groups, runtime directories, a container-suited configuration) and a
// config with a numeric non-root user. Two builds of the same package versions and recipe
// give the same image digest.
//
// Packages only the maintainer scripts use (adduser, debconf, perl, init-system-helpers…)
// are left out with whatever only they pull in; the scripts themselves never run.
package debimage

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strings"
)

// Package is one Debian binary package version, as apt resolved it.
type Package struct {
	Name    string `json:"package"`
	Version string `json:"version"`
	Arch    string `json:"arch"` // amd64, all, …
}

// String returns name=version, the form apt-get accepts.
func (p Package) String() string { return p.Name + "=" + p.Version }

// Runner runs a command and returns its standard output; the error carries standard error.
// Tests replace it to feed recorded apt output.
type Runner func(ctx context.Context, dir, name string, args ...string) ([]byte, error)

// ExecRunner runs the real command.
func ExecRunner(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	versionRE = regexp.MustCompile(`^[0-9A-Za-z.+~:-]+$`)
	archRE    = regexp.MustCompile(`^[a-z0-9-]+$`)
	// instRE matches a line of `apt-get -s install`: "Inst name (version Origin… [arch])".
	instRE = regexp.MustCompile(`^Inst (\S+) (?:\[\S+\] )?\((\S+) .*\[([a-z0-9-]+)\]\)`)
)

// ErrResolve is wrapped by every resolution error (apt missing, an unknown package, an
// unsatisfiable dependency).
var ErrResolve = errors.New("resolve Debian packages")

// ValidName reports whether s is a Debian package name.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// aptSimulate is apt-get install simulated against an empty dpkg status: the full closure
// apt would install on a machine with nothing installed, with apt's choice among
// alternatives and its candidate versions.
func aptSimulate(pkgs []string) []string {
	return append([]string{"-s", "-q", "-o", "Dir::State::status=/dev/null", "-o", "APT::Install-Recommends=false",
		"-o", "APT::Install-Suggests=false", "-o", "Debug::NoLocking=true", "install"}, pkgs...)
}

// ParseSimulation returns the packages of `apt-get -s install` output ("Inst" lines), sorted
// by name.
func ParseSimulation(out []byte) ([]Package, error) {
	var pkgs []Package
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "Inst ") {
			continue
		}
		m := instRE.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("%w: apt-get line %q: not name (version … [arch])", ErrResolve, line)
		}
		name, _, _ := strings.Cut(m[1], ":") // name:arch for foreign packages
		p := Package{Name: name, Version: m[2], Arch: m[3]}
		if !nameRE.MatchString(p.Name) || !versionRE.MatchString(p.Version) || !archRE.MatchString(p.Arch) {
			return nil, fmt.Errorf("%w: apt-get line %q: bad name, version or arch", ErrResolve, line)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("%w: package %s resolved twice (two architectures?)", ErrResolve, p.Name)
		}
		seen[p.Name] = true
		pkgs = append(pkgs, p)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	sort.Slice(pkgs, func(i, j int) bool { return pkgs[i].Name < pkgs[j].Name })
	return pkgs, nil
}

// ParseDepends reads `apt-cache depends` output (non-recursive, Depends and PreDepends only)
// into edges: package → the names it may depend on (every alternative and every provider of
// a virtual package; the caller keeps those apt actually chose).
func ParseDepends(out []byte) (map[string][]string, error) {
	edges := map[string][]string{}
	var cur string
	virtual := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " |"))
		field := strings.TrimSpace(strings.TrimLeft(line, " |"))
		switch {
		case indent == 0:
			cur, _, _ = strings.Cut(field, ":")
			if !nameRE.MatchString(cur) {
				return nil, fmt.Errorf("%w: apt-cache depends line %q: not a package", ErrResolve, line)
			}
			if _, ok := edges[cur]; !ok {
				edges[cur] = nil // present even without dependencies
			}
			virtual = false
		case cur == "":
			return nil, fmt.Errorf("%w: apt-cache depends line %q before any package", ErrResolve, line)
		case indent == 2:
			k, v, ok := strings.Cut(field, ": ")
			if !ok {
				return nil, fmt.Errorf("%w: apt-cache depends line %q: not Field: value", ErrResolve, line)
			}
			virtual = false
			if k != "Depends" && k != "PreDepends" {
				continue
			}
			if strings.HasPrefix(v, "<") && strings.HasSuffix(v, ">") {
				virtual = true // its providers follow, indented further
				continue
			}
			edges[cur] = append(edges[cur], baseName(v))
		default: // a provider of the virtual package above
			if virtual {
				edges[cur] = append(edges[cur], baseName(field))
			}
		}
	}
	return edges, sc.Err()
}

func baseName(s string) string {
	n, _, _ := strings.Cut(s, ":")
	return n
}

// Prune keeps the packages of resolved reachable from roots over edges, never entering an
// excluded package (unless it is a root) and ignoring edges to packages apt did not choose.
func Prune(resolved []Package, edges map[string][]string, roots, exclude []string) ([]Package, error) {
	byName := map[string]Package{}
	for _, p := range resolved {
		byName[p.Name] = p
	}
	ex := map[string]bool{}
	for _, e := range exclude {
		ex[e] = true
	}
	keep := map[string]bool{}
	var visit func(string)
	visit = func(n string) {
		if keep[n] {
			return
		}
		keep[n] = true
		for _, d := range edges[n] {
			if _, ok := byName[d]; ok && !ex[d] {
				visit(d)
			}
		}
	}
	for _, r := range roots {
		if _, ok := byName[r]; !ok {
			return nil, fmt.Errorf("%w: %s is not among the packages apt resolved", ErrResolve, r)
		}
		visit(r)
	}
	var out []Package
	for _, p := range resolved {
		if keep[p.Name] {
			out = append(out, p)
		}
	}
	return out, nil
}

// Resolve returns the packages an image of roots holds: apt's closure of roots, pruned of
// exclude and what only they need, sorted by name.
func Resolve(ctx context.Context, run Runner, roots, exclude []string) ([]Package, error) {
	if len(roots) == 0 {
		return nil, fmt.Errorf("%w: no packages", ErrResolve)
	}
	for _, r := range append(append([]string{}, roots...), exclude...) {
		if !nameRE.MatchString(r) {
			return nil, fmt.Errorf("%w: %q is not a Debian package name", ErrResolve, r)
		}
	}
	out, err := run(ctx, "/", "apt-get", aptSimulate(roots)...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrResolve, err)
	}
	all, err := ParseSimulation(out)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(all))
	for i, p := range all {
		names[i] = p.Name
	}
	out, err = run(ctx, "/", "apt-cache", append([]string{"depends", "--no-recommends", "--no-suggests", "--no-conflicts",
		"--no-breaks", "--no-replaces", "--no-enhances"}, names...)...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrResolve, err)
	}
	edges, err := ParseDepends(out)
	if err != nil {
		return nil, err
	}
	return Prune(all, edges, roots, exclude)
}
