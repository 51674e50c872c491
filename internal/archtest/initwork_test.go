package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// initRegexps lists, as "file:line", the package-level variables of the Go package in dir
// (test files aside) whose initialiser compiles a regular expression through package regexp:
// work done at every start of every binary that links the package.
func initRegexps(t *testing.T, dir string) []string {
	t.Helper()
	fset := token.NewFileSet()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var hits []string
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		local := map[string]bool{} // the names package regexp is imported as in this file
		for _, imp := range f.Imports {
			if imp.Path.Value == `"regexp"` {
				if imp.Name != nil {
					local[imp.Name.Name] = true
				} else {
					local["regexp"] = true
				}
			}
		}
		if len(local) == 0 {
			continue
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			ast.Inspect(gd, func(n ast.Node) bool {
				if _, ok := n.(*ast.FuncLit); ok {
					return false // a function value compiles when called, not at init
				}
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if x, ok := sel.X.(*ast.Ident); ok && local[x.Name] && strings.Contains(sel.Sel.Name, "Compile") {
					hits = append(hits, fset.Position(call.Pos()).String())
				}
				return true
			})
		}
	}
	sort.Strings(hits)
	return hits
}

// The agent binary starts several times per pod (boot, `runc init`, exec probes), under
// software emulation where a regexp compile costs milliseconds: no package it links compiles one
// at initialisation (internal/lazyregexp compiles on first use).
func TestAgentCompilesNoRegexpAtInit(t *testing.T) {
	root := repoRoot(t)
	g := repoGraph(t)
	linked := g.linked("agent/cmd/sealpod-agent")
	if len(linked) < 10 {
		t.Fatalf("agent links %d project packages: %v", len(linked), linked)
	}
	for _, p := range linked {
		for _, h := range initRegexps(t, filepath.Join(root, p)) {
			t.Errorf("%s: a package-level regexp compile in a package the agent links: use internal/lazyregexp", h)
		}
	}
}

// The check can fail: it finds package-level compiles under any import name, and not the ones
// inside functions or function literals.
func TestInitRegexpsFindsOne(t *testing.T) {
	dir := t.TempDir()
	src := `package x

import (
	"regexp"
	re2 "regexp"
)

var a = regexp.MustCompile("a")

var (
	b, c = re2.MustCompile("b"), 1
	d    = func() *regexp.Regexp { return regexp.MustCompile("d") }
)

func f() { _ = regexp.MustCompile("f") }
`
	if err := os.WriteFile(filepath.Join(dir, "x.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "x_test.go"), []byte("package x\n\nimport \"regexp\"\n\nvar t = regexp.MustCompile(\"t\")\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := initRegexps(t, dir)
	if len(got) != 2 || !strings.HasSuffix(got[0], "x.go:11:9") || !strings.HasSuffix(got[1], "x.go:8:9") {
		t.Fatalf("initRegexps = %v, want x.go:8 and x.go:11", got)
	}
}
