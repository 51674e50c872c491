package manifests

import (
	"strings"
	"testing"
)

func TestMinTCBAnnotation(t *testing.T) {
	app := "registry.test/app/server@sha256:" + strings.Repeat("1", 64)
	in := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: prod}\nspec:\n  selector: {matchLabels: {app: d}}\n" +
		"  template:\n    metadata: {labels: {app: d}}\n    spec:\n      containers:\n      - name: web\n        image: " + app + "\n"
	runLeakCases(t, []leakCase{
		{
			name: "declared on every sealed template", input: in, opts: Options{MinTCB: "snp=3,0,8,115"},
			check: func(t *testing.T, res *Result, out string) {
				tmpl := outputObject(t, out, "Deployment", "d")["spec"].(map[string]any)["template"].(map[string]any)
				ann, _ := tmpl["metadata"].(map[string]any)["annotations"].(map[string]any)
				if ann[AnnotationMinTCB] != "snp=3,0,8,115" {
					t.Errorf("template annotations %v, want %s=snp=3,0,8,115", ann, AnnotationMinTCB)
				}
			},
		},
		{
			name: "absent without a minimum", input: in,
			check: func(t *testing.T, res *Result, out string) {
				if strings.Contains(out, AnnotationMinTCB) {
					t.Errorf("%s without Options.MinTCB:\n%s", AnnotationMinTCB, out)
				}
			},
		},
	})
}
