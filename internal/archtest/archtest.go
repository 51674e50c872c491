// Package archtest checks the component rules of docs/design.md on the package graph that
// `go list` reports: which project packages the trusted agent may link, no cycles between the
// top-level components (except through their contract packages), no broker internals in the
// node or owner tools, no node/owner/guest code in the broker. Every violation names the import
// chain that breaks the rule (a -> b -> c), so the fix is obvious. The rules themselves are in
// archtest_test.go; `make lint` runs them.
package archtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
)

// Graph is the project's production import graph (no _test.go files), in module-relative
// package paths ("kbs/api").
type Graph struct {
	// Imports maps each project package to the project packages it imports directly.
	Imports map[string][]string
	// TestHelper marks packages that import "testing" themselves (etcdtest, kbstest, ...):
	// only tests link them, so the component rules do not hold them to a binary's limits.
	TestHelper map[string]bool
}

// Load runs `go list` on every package of the module in dir.
func Load(dir string) (*Graph, error) {
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Imports,Module,Error", "./...")
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list ./... in %s: %w: %s", dir, err, stderr.Bytes())
	}
	type pkg struct {
		ImportPath string
		Imports    []string
		Module     *struct{ Path string }
		Error      *struct{ Err string }
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("decode go list output: %w", err)
		}
		if p.Error != nil {
			return nil, fmt.Errorf("go list: package %s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 || pkgs[0].Module == nil {
		return nil, fmt.Errorf("go list ./... in %s: no module packages", dir)
	}
	mod := pkgs[0].Module.Path + "/"
	g := &Graph{Imports: map[string][]string{}, TestHelper: map[string]bool{}}
	for _, p := range pkgs {
		rel, ok := strings.CutPrefix(p.ImportPath, mod)
		if !ok {
			continue
		}
		g.Imports[rel] = nil
		for _, imp := range p.Imports {
			if imp == "testing" {
				g.TestHelper[rel] = true
			}
			if r, ok := strings.CutPrefix(imp, mod); ok {
				g.Imports[rel] = append(g.Imports[rel], r)
			}
		}
	}
	return g, nil
}

// Patterns is a list of package paths; "x/..." matches x and every package below it.
type Patterns []string

// Match reports whether pkg matches one of the patterns.
func (ps Patterns) Match(pkg string) bool {
	for _, p := range ps {
		if base, ok := strings.CutSuffix(p, "/..."); ok {
			if pkg == base || strings.HasPrefix(pkg, base+"/") {
				return true
			}
		} else if pkg == p {
			return true
		}
	}
	return false
}

// Component is a package's top-level folder ("kbs" for kbs/store/etcd).
func Component(pkg string) string {
	c, _, _ := strings.Cut(pkg, "/")
	return c
}

// Violation is one broken rule with the import chain that breaks it.
type Violation struct {
	Rule  string
	Chain []string
}

func (v Violation) String() string { return v.Rule + ": " + strings.Join(v.Chain, " -> ") }

// reach runs a breadth-first search over imports from roots and calls stop for every package
// reached; where stop returns true the search does not go past it. It returns the chain from
// a root to each package where stop returned true.
func (g *Graph) reach(roots []string, stop func(string) bool) [][]string {
	parent := map[string]string{}
	seen := map[string]bool{}
	queue := append([]string(nil), roots...)
	sort.Strings(queue)
	for _, r := range queue {
		seen[r] = true
	}
	var hits [][]string
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if stop(p) {
			var chain []string
			for q := p; ; q = parent[q] {
				chain = append([]string{q}, chain...)
				if _, ok := parent[q]; !ok {
					break
				}
			}
			hits = append(hits, chain)
			continue
		}
		imps := append([]string(nil), g.Imports[p]...)
		sort.Strings(imps)
		for _, q := range imps {
			if !seen[q] {
				seen[q] = true
				parent[q] = p
				queue = append(queue, q)
			}
		}
	}
	return hits
}

// linked returns every project package root links, root included, sorted.
func (g *Graph) linked(root string) []string {
	var all []string
	g.reach([]string{root}, func(p string) bool { all = append(all, p); return false })
	sort.Strings(all)
	return all
}

// Allowed checks that every project package root links is in allowed.
func (g *Graph) Allowed(rule, root string, allowed Patterns) []Violation {
	if _, ok := g.Imports[root]; !ok {
		return []Violation{{Rule: rule, Chain: []string{root + " (no such package)"}}}
	}
	var vs []Violation
	for _, c := range g.reach([]string{root}, func(p string) bool { return !allowed.Match(p) }) {
		vs = append(vs, Violation{Rule: rule, Chain: c})
	}
	return vs
}

// Forbidden checks that no production package matching from (test helpers aside) reaches a
// package matching forbidden, directly or through others; one chain per forbidden package.
func (g *Graph) Forbidden(rule string, from, forbidden Patterns) []Violation {
	var roots []string
	for p := range g.Imports {
		if from.Match(p) && !g.TestHelper[p] {
			roots = append(roots, p)
		}
	}
	var vs []Violation
	for _, c := range g.reach(roots, forbidden.Match) {
		vs = append(vs, Violation{Rule: rule, Chain: c})
	}
	return vs
}

// ComponentCycles reports every cycle between top-level components, counting an import of a
// contract package as no dependency on its component (test helpers aside). Each cycle is shown
// with one import per step: "a/x -> b/y ; b/z -> a/w".
func (g *Graph) ComponentCycles(rule string, contract Patterns) []Violation {
	type edge struct{ from, to string }
	example := map[edge][2]string{}
	next := map[string][]string{}
	pkgs := make([]string, 0, len(g.Imports))
	for p := range g.Imports {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	for _, p := range pkgs {
		if g.TestHelper[p] {
			continue
		}
		for _, q := range g.Imports[p] {
			a, b := Component(p), Component(q)
			if a == b || contract.Match(q) {
				continue
			}
			e := edge{a, b}
			if _, ok := example[e]; !ok {
				example[e] = [2]string{p, q}
				next[a] = append(next[a], b)
			}
		}
	}
	comps := make([]string, 0, len(next))
	for c := range next {
		comps = append(comps, c)
		sort.Strings(next[c])
	}
	sort.Strings(comps)
	var vs []Violation
	reported := map[string]bool{}
	for _, start := range comps {
		// shortest path from start back to itself
		parent := map[string]string{}
		queue := []string{start}
		found := false
		for len(queue) > 0 && !found {
			c := queue[0]
			queue = queue[1:]
			for _, d := range next[c] {
				if d == start {
					parent[start] = c
					found = true
					break
				}
				if _, ok := parent[d]; !ok && d != start {
					parent[d] = c
					queue = append(queue, d)
				}
			}
		}
		if !found {
			continue
		}
		cycle := []string{start}
		for c := parent[start]; c != start; c = parent[c] {
			cycle = append([]string{c}, cycle...)
		}
		cycle = append([]string{start}, cycle...)
		members := append([]string(nil), cycle[1:]...)
		sort.Strings(members)
		key := strings.Join(members, ",")
		if reported[key] {
			continue
		}
		reported[key] = true
		chain := []string{strings.Join(cycle, " => ")}
		for i := 0; i+1 < len(cycle); i++ {
			ex := example[edge{cycle[i], cycle[i+1]}]
			chain = append(chain, ex[0]+" imports "+ex[1])
		}
		vs = append(vs, Violation{Rule: rule, Chain: []string{strings.Join(chain, "; ")}})
	}
	return vs
}
