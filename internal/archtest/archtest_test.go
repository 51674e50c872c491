package archtest

import (
	"strings"
	"testing"
)

// The component rules (docs/design.md, docs/testing.md). Change them only with the design.
var (
	// agentAllowed is every project package the agent binary (the only code that runs inside
	// the TEE) may link: its own packages, the contract packages it reads (the sealed spec, the
	// envelope opener, the guest bundle format), the broker's wire types and client, and three
	// small shared helpers. No measurement code, no broker store/registry, no simulated signer.
	agentAllowed = Patterns{
		"agent/...",
		"imagebuilder/envelope", "imagebuilder/spec", "imagebuilder/bundle",
		"kbs/api", "kbs/client",
		"internal/atomicfile", "internal/lazyregexp", "internal/tee",
	}
	// contracts are the packages through which components talk: importing one is no
	// dependency on the rest of its component.
	contracts = Patterns{
		"imagebuilder/envelope", "imagebuilder/spec", "imagebuilder/bundle",
		"kbs/api", "kbs/client",
		"agent/api", "agent/hostvalue",
		"internal/...",
	}
	// brokerInternals are the key broker's server side: its store, registry, audit log, server,
	// admin API handler, workload CA and state setup (clients use kbs/api, kbs/client and
	// kbs/adminclient).
	brokerInternals = Patterns{"kbs/store/...", "kbs/registry/...", "kbs/audit/...", "kbs/server/...",
		"kbs/admin/...", "kbs/meshca/...", "kbs/setup/..."}
)

func repoGraph(t *testing.T) *Graph {
	t.Helper()
	g, err := Load(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestComponentRules holds the project's own tree to the rules.
func TestComponentRules(t *testing.T) {
	g := repoGraph(t)
	for _, tc := range []struct {
		name string
		vs   []Violation
	}{
		{"agent links only what runs in the TEE", g.Allowed("agent binary links a package outside its allowed list", "agent/cmd/sealpod-agent", agentAllowed)},
		{"no cycles between components", g.ComponentCycles("component cycle", contracts)},
		{"shim never imports broker internals", g.Forbidden("runtime-shim imports a broker internal", Patterns{"runtime-shim/..."}, brokerInternals)},
		{"ctl never imports broker internals", g.Forbidden("ctl imports a broker internal", Patterns{"ctl/..."}, brokerInternals)},
		{"broker wire types and clients link no broker internals", g.Forbidden("a broker client links a broker internal", Patterns{"kbs/api", "kbs/client", "kbs/adminclient"}, brokerInternals)},
		{"broker imports no node, owner or guest code", g.Forbidden("kbs imports node, owner or guest code", Patterns{"kbs/..."}, Patterns{"runtime-shim/...", "agent/...", "ctl/...", "guest-image/..."})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range tc.vs {
				t.Error(v)
			}
		})
	}
}

// TestRulesFindChains checks the checkers on a small made-up graph: each rule reports the
// import chain that breaks it, and a clean graph passes.
func TestRulesFindChains(t *testing.T) {
	g := &Graph{
		Imports: map[string][]string{
			"agent/cmd/a":         {"agent/unseal", "internal/tee"},
			"agent/unseal":        {"kbs/client", "guest-image/measure"},
			"kbs/client":          {"kbs/api"},
			"kbs/api":             nil,
			"kbs/registry":        {"kbs/api"},
			"kbs/server":          {"kbs/registry", "guest-image/measure"},
			"kbs/kbstest":         {"agent/unseal"},
			"internal/tee":        nil,
			"ctl/cli":             {"ctl/verify"},
			"ctl/verify":          {"kbs/registry"},
			"runtime-shim/q":      {"kbs/api", "agent/api"},
			"agent/api":           nil,
			"guest-image/measure": {"imagebuilder/bundle", "imagebuilder/x"},
			"imagebuilder/bundle": nil,
			"imagebuilder/x":      {"guest-image/y"},
			"guest-image/y":       nil,
		},
		TestHelper: map[string]bool{"kbs/kbstest": true},
	}
	for _, tc := range []struct {
		name string
		vs   []Violation
		want []string
	}{
		{"allowed", g.Allowed("agent", "agent/cmd/a", Patterns{"agent/...", "kbs/api", "kbs/client", "internal/tee"}),
			[]string{"agent: agent/cmd/a -> agent/unseal -> guest-image/measure"}},
		{"allowed, clean", g.Allowed("agent", "agent/cmd/a", Patterns{"agent/...", "kbs/...", "internal/...", "guest-image/...", "imagebuilder/..."}), nil},
		{"missing root", g.Allowed("agent", "agent/cmd/none", Patterns{"agent/..."}), []string{"agent: agent/cmd/none (no such package)"}},
		{"forbidden, transitive", g.Forbidden("ctl", Patterns{"ctl/..."}, Patterns{"kbs/registry"}),
			[]string{"ctl: ctl/verify -> kbs/registry"}},
		{"forbidden, clean", g.Forbidden("shim", Patterns{"runtime-shim/..."}, Patterns{"kbs/registry", "kbs/server"}), nil},
		{"forbidden, test helper aside", g.Forbidden("kbs", Patterns{"kbs/..."}, Patterns{"agent/..."}), nil},
		{"forbidden, deep", g.Forbidden("kbs", Patterns{"kbs/server"}, Patterns{"guest-image/y"}),
			[]string{"kbs: kbs/server -> guest-image/measure -> imagebuilder/x -> guest-image/y"}},
		{"cycle", g.ComponentCycles("cycle", Patterns{"imagebuilder/bundle", "kbs/api", "kbs/client", "internal/...", "agent/api"}),
			[]string{"cycle: guest-image => imagebuilder => guest-image; guest-image/measure imports imagebuilder/x; imagebuilder/x imports guest-image/y"}},
		{"cycle through contract is none", g.ComponentCycles("cycle", Patterns{"imagebuilder/...", "kbs/...", "internal/...", "agent/api"}), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, v := range tc.vs {
				got = append(got, v.String())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestPatterns(t *testing.T) {
	ps := Patterns{"kbs/store/...", "kbs/api"}
	for pkg, want := range map[string]bool{
		"kbs/store": true, "kbs/store/etcd": true, "kbs/storex": false,
		"kbs/api": true, "kbs/api/v2": false, "kbs": false,
	} {
		if got := ps.Match(pkg); got != want {
			t.Errorf("Match(%q) = %v, want %v", pkg, got, want)
		}
	}
}
