package api_test

import (
	"go/build"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/sealpod/sealpod/"

// serverInternals are the broker's internals: the wire types and every client of the broker
// must link none of them.
var serverInternals = []string{"kbs/registry", "kbs/store", "kbs/audit", "kbs/server", "kbs/setup", "kbs/meshca", "kbs/admin"}

// projectDeps returns the project packages pkg imports, directly or not (production files
// only), as paths relative to the module root. It reads import lines with go/build, so it
// needs no go command.
func projectDeps(t *testing.T, root, pkg string) []string {
	t.Helper()
	seen := map[string]bool{}
	var walk func(rel string)
	walk = func(rel string) {
		p, err := build.Default.ImportDir(filepath.Join(root, rel), 0)
		if err != nil {
			t.Fatalf("read package %s: %v", rel, err)
		}
		for _, imp := range p.Imports {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok || seen[dep] {
				continue
			}
			seen[dep] = true
			walk(dep)
		}
	}
	walk(pkg)
	out := make([]string, 0, len(seen))
	for d := range seen {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// TestWireTypesImportNoServer holds docs/kbs.md ("Packages"): the wire types, the broker
// client, the admin API client and sealctl (with its offline manifest verifier) link nothing
// of the broker's server side.
func TestWireTypesImportNoServer(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	for _, pkg := range []string{"kbs/api", "kbs/client", "kbs/adminclient", "ctl/internal/verify", "ctl/internal/cli", "ctl/cmd/sealctl"} {
		t.Run(pkg, func(t *testing.T) {
			for _, dep := range projectDeps(t, root, pkg) {
				for _, bad := range serverInternals {
					if dep == bad || strings.HasPrefix(dep, bad+"/") {
						t.Errorf("%s links broker internal %s", pkg, dep)
					}
				}
			}
		})
	}
}

// TestCtlImportsNoRegistry: sealctl's own code uses the wire types of kbs/api, never the
// broker's registry, store, audit log or server (TestWireTypesImportNoServer checks what it
// links: the admin API client is kbs/adminclient).
func TestCtlImportsNoRegistry(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	for _, pkg := range []string{"ctl/internal/cli", "ctl/internal/verify", "ctl/cmd/sealctl"} {
		p, err := build.Default.ImportDir(filepath.Join(root, pkg), 0)
		if err != nil {
			t.Fatalf("read package %s: %v", pkg, err)
		}
		for _, imp := range p.Imports {
			for _, bad := range []string{"kbs/registry", "kbs/store", "kbs/audit", "kbs/server"} {
				if imp == module+bad || strings.HasPrefix(imp, module+bad+"/") {
					t.Errorf("%s imports broker internal %s", pkg, imp)
				}
			}
		}
	}
}
