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
