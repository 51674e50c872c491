package manifests

import (
	"slices"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

func TestExecAllowList(t *testing.T) {
	app := "registry.test/app/server@sha256:" + strings.Repeat("1", 64)
	pod := func(ann string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: prod\n" + ann +
			"spec:\n  containers:\n  - name: web\n    image: " + app + "\n  - name: side\n    image: " + app + "\n"
	}
	runLeakCases(t, []leakCase{
		{
			name:  "no annotation: exec denied",
			input: pod(""),
			check: func(t *testing.T, res *Result, out string) {
				if p := res.Workloads[0].Spec.Policy; len(p.Exec) != 0 || p.AllowsExec("web", []string{"/bin/sh"}) {
					t.Errorf("exec rules without an annotation: %+v", p.Exec)
				}
			},
		},
		{
			name:  "rules sealed, annotation not in the output",
			input: pod("  annotations:\n    sealpod.io/exec: '{\"web\": [[\"/bin/status\", \"--short-zz91\"]], \"side\": [[\"/bin/dump\"]]}'\n"),
			check: func(t *testing.T, res *Result, out string) {
				p := res.Workloads[0].Spec.Policy
				want := []spec.ExecRule{{Container: "side", Argv: []string{"/bin/dump"}}, {Container: "web", Argv: []string{"/bin/status", "--short-zz91"}}}
				if !slices.EqualFunc(p.Exec, want, func(a, b spec.ExecRule) bool { return a.Container == b.Container && slices.Equal(a.Argv, b.Argv) }) {
					t.Errorf("sealed exec rules %+v, want %+v", p.Exec, want)
				}
				if !p.AllowsExec("web", []string{"/bin/status", "--short-zz91"}) || p.AllowsExec("side", []string{"/bin/status", "--short-zz91"}) {
					t.Error("AllowsExec does not follow the sealed rules")
				}
				notIn(t, out, AnnotationExec, "--short-zz91", "/bin/dump")
				warned(t, res, AnnotationExec, "exec rule")
			},
		},
		{name: "not JSON", input: pod("  annotations: {sealpod.io/exec: 'web: /bin/sh'}\n"), wantErr: []string{"Pod prod/p", "metadata.annotations[sealpod.io/exec]", "JSON"}},
		{name: "unknown container", input: pod("  annotations: {sealpod.io/exec: '{\"db\": [[\"/bin/sh\"]]}'}\n"), wantErr: []string{"metadata.annotations[sealpod.io/exec]", `container "db"`}},
		{name: "empty argv", input: pod("  annotations: {sealpod.io/exec: '{\"web\": [[]]}'}\n"), wantErr: []string{"metadata.annotations[sealpod.io/exec]", "web[0]: empty argv"}},
	})
}

// TestAllowExecFlag: --allow-exec rules are sealed beside the annotation's into every
// template with that container, never written to the output; a rule whose container no
// template has is an error naming the flag.
func TestAllowExecFlag(t *testing.T) {
	app := "registry.test/app/server@sha256:" + strings.Repeat("1", 64)
	pod := func(name, ann string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\n  namespace: prod\n" + ann +
			"spec:\n  containers:\n  - name: web\n    image: " + app + "\n  - name: side\n    image: " + app + "\n"
	}
	shell := spec.ExecRule{Container: "web", Argv: []string{"/bin/sh-zz92"}}
	same := func(a, b spec.ExecRule) bool { return a.Container == b.Container && slices.Equal(a.Argv, b.Argv) }
	runLeakCases(t, []leakCase{
		{
			name:  "flag and annotation merged",
			input: pod("p", "  annotations:\n    sealpod.io/exec: '{\"web\": [[\"/bin/status\"], [\"/bin/sh-zz92\"]]}'\n"),
			opts:  Options{AllowExec: []spec.ExecRule{shell, {Container: "side", Argv: []string{"cat", "/tmp/x-zz93"}}}},
			check: func(t *testing.T, res *Result, out string) {
				p := res.Workloads[0].Spec.Policy
				want := []spec.ExecRule{{Container: "web", Argv: []string{"/bin/status"}}, shell, {Container: "side", Argv: []string{"cat", "/tmp/x-zz93"}}}
				if !slices.EqualFunc(p.Exec, want, same) {
					t.Errorf("sealed exec rules %+v, want %+v", p.Exec, want)
				}
				if !p.AllowsExec("web", []string{"/bin/sh-zz92"}) || p.AllowsExec("side", []string{"/bin/sh-zz92"}) {
					t.Error("AllowsExec does not follow the sealed rules")
				}
				notIn(t, out, "--allow-exec", "/bin/sh-zz92", "x-zz93")
				warned(t, res, "exec policy", "1 --allow-exec rule(s) sealed")
			},
		},
		{
			name:  "every template with the container",
			input: pod("a", "") + "---\n" + pod("b", ""),
			opts:  Options{AllowExec: []spec.ExecRule{shell}},
			check: func(t *testing.T, res *Result, out string) {
				for _, w := range res.Workloads {
					if !slices.EqualFunc(w.Spec.Policy.Exec, []spec.ExecRule{shell}, same) {
						t.Errorf("%s: exec rules %+v", w.Object, w.Spec.Policy.Exec)
					}
				}
			},
		},
		{name: "no such container", input: pod("p", ""), opts: Options{AllowExec: []spec.ExecRule{{Container: "db", Argv: []string{"/bin/sh"}}}},
			wantErr: []string{`--allow-exec db=["/bin/sh"]`, `no sealed pod template has a container named "db"`}},
	})
}

func TestParseAllowExec(t *testing.T) {
	for _, tc := range []struct {
		in       string
		ctr      string
		argv     []string
		errParts []string
	}{
		{in: "web=/bin/sh", ctr: "web", argv: []string{"/bin/sh"}},
		{in: "web=/bin/sh -i  -l", ctr: "web", argv: []string{"/bin/sh", "-i", "-l"}},
		{in: `web=["/bin/sh","-c","echo a b"]`, ctr: "web", argv: []string{"/bin/sh", "-c", "echo a b"}},
		{in: `web= ["x=y"]`, ctr: "web", argv: []string{"x=y"}},
		{in: "web", errParts: []string{"want CONTAINER=ARGV"}},
		{in: "Web=/bin/sh", errParts: []string{"not a DNS-1123 label"}},
		{in: "=/bin/sh", errParts: []string{"not a DNS-1123 label"}},
		{in: "web=", errParts: []string{"empty argv"}},
		{in: "web=[]", errParts: []string{"empty argv"}},
		{in: `web=[""]`, errParts: []string{"empty argv"}},
		{in: `web=sh -c 'date'`, errParts: []string{"JSON list"}},
		{in: `web=[1]`, errParts: []string{"JSON list of strings"}},
		{in: "web=[\"a\\u0000\"]", errParts: []string{"without NUL"}},
		{in: "web=/bin/" + strings.Repeat("x", 5000), errParts: []string{"longer than 4096"}},
	} {
		r, err := ParseAllowExec(tc.in)
		if tc.errParts != nil {
			if err == nil {
				t.Errorf("%.40q: accepted as %+v", tc.in, r)
				continue
			}
			for _, part := range tc.errParts {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("%.40q: error %q, want %q in it", tc.in, err, part)
				}
			}
			continue
		}
		if err != nil || r.Container != tc.ctr || !slices.Equal(r.Argv, tc.argv) {
			t.Errorf("%q: %+v %v, want %s %q", tc.in, r, err, tc.ctr, tc.argv)
		}
		// What FormatArgv writes parses back to the same rule.
		if back, err := ParseAllowExec(r.Container + "=" + FormatArgv(r.Argv)); err != nil || !slices.Equal(back.Argv, r.Argv) {
			t.Errorf("%q: round trip %+v %v", tc.in, back, err)
		}
	}
}

func FuzzParseAllowExec(f *testing.F) {
	for _, s := range []string{"web=/bin/sh", `web=["/bin/sh","-c","x"]`, "web", "a=b c", `x=["\u0000"]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseAllowExec(s)
		if err != nil {
			return
		}
		if checkArgv(r.Argv) != nil || r.Container == "" {
			t.Fatalf("%q accepted as %+v", s, r)
		}
		back, err := ParseAllowExec(r.Container + "=" + FormatArgv(r.Argv))
		if err != nil || !slices.Equal(back.Argv, r.Argv) {
			t.Fatalf("%q: round trip %+v %v", s, back, err)
		}
	})
}
