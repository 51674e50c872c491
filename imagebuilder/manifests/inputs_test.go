package manifests

import (
	"strings"
	"testing"
)

// Issue #16 item 4: inputs as kubectl reads them: typed lists (ConfigMapList, PodList, ...)
// expand like kind: List, and objects without metadata.namespace take Options.Namespace
// (-n, default "default"), written into the output as `kubectl create -n` would place them.
func TestInputsAsKubectlReadsThem(t *testing.T) {
	pod := func(name string) string {
		return "{metadata: {name: " + name + "}, spec: {containers: [{name: c, image: " + pinned + "}]}}"
	}
	tests := []leakCase{
		{
			name:  "PodList items take the list's kind and apiVersion",
			input: "apiVersion: v1\nkind: PodList\nitems: [" + pod("a") + ", " + pod("b") + "]\n",
			check: func(t *testing.T, res *Result, out string) {
				if len(res.Workloads) != 2 || res.Workloads[0].ID != "default.pod.a" || res.Workloads[1].ID != "default.pod.b" {
					t.Fatalf("workloads %v", res.Workloads)
				}
				if strings.Contains(out, "PodList") || strings.Count(out, "kind: Pod\n") != 2 {
					t.Errorf("output:\n%s", out)
				}
			},
		},
		{
			name: "SecretList and ConfigMapList feed sealing",
			input: "apiVersion: v1\nkind: SecretList\nitems:\n- metadata: {name: s}\n  stringData: {k: LISTED-SECRET-VALUE}\n---\n" +
				"apiVersion: v1\nkind: ConfigMapList\nitems:\n- metadata: {name: cm}\n  data: {c: LISTED-CONFIG-VALUE}\n---\n" +
				"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: " + pinned + "\n    envFrom: [{secretRef: {name: s}}, {configMapRef: {name: cm}}]\n",
			opts: Options{SealSecrets: true, Strict: true},
			check: func(t *testing.T, res *Result, out string) {
				env := res.Workloads[0].Spec.Containers[0].Env
				if len(env) != 2 || env[0].Value != "LISTED-SECRET-VALUE" || env[1].Value != "LISTED-CONFIG-VALUE" {
					t.Errorf("env %+v", env)
				}
				notIn(t, out, "LISTED-SECRET-VALUE", "LISTED-CONFIG-VALUE", "SecretList", "ConfigMapList")
			},
		},
		{
			name:  "DeploymentList items sealed",
			input: "apiVersion: apps/v1\nkind: DeploymentList\nitems:\n- metadata: {name: d}\n  spec:\n    selector: {matchLabels: {a: b}}\n    template:\n      metadata: {labels: {a: b}}\n      spec: {containers: [{name: c, image: " + pinned + "}]}\n",
			check: func(t *testing.T, res *Result, out string) {
				if len(res.Workloads) != 1 || res.Workloads[0].ID != "default.deployment.d" || !strings.Contains(out, "kind: Deployment\n") {
					t.Errorf("workloads %v\n%s", res.Workloads, out)
				}
			},
		},
		{
			name:  "typed list items keep their own kind, as kubectl decodes them",
			input: "apiVersion: v1\nkind: PodList\nitems: [{apiVersion: v1, kind: Service, metadata: {name: s}}, " + pod("p") + "]\n",
			check: func(t *testing.T, res *Result, out string) {
				if len(res.Workloads) != 1 || outputObject(t, out, "Service", "s") == nil {
					t.Errorf("workloads %v\n%s", res.Workloads, out)
				}
			},
		},
		{
			name:    "list item that is not an object",
			input:   "apiVersion: v1\nkind: ConfigMapList\nitems: [3]\n",
			wantErr: []string{"input.yaml: document 0", "items[0]: not an object"},
		},
		{
			name:  "a kind ending in List without items is an ordinary object",
			input: "apiVersion: example.com/v1\nkind: AllowList\nmetadata: {name: x}\nspec: {entries: [a]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: " + pinned + "}]}\n",
			check: func(t *testing.T, _ *Result, out string) {
				if !strings.Contains(out, "kind: AllowList") {
					t.Errorf("AllowList lost:\n%s", out)
				}
			},
		},
		{
			name:    "a Kustomization is kustomize's input, not an object",
			input:   "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [app.yaml]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: " + pinned + "}]}\n",
			wantErr: []string{"input.yaml: document 0 (Kustomization )", "build it with -k"},
		},
		{
			name: "objects without a namespace take --namespace",
			input: "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n---\n" +
				"apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\n" +
				"apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n---\n" +
				"apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: web}}\nspec: {containers: [{name: c, image: " + pinned + "}]}\n---\n" +
				"apiVersion: v1\nkind: Pod\nmetadata: {name: q, namespace: other}\nspec: {containers: [{name: c, image: " + pinned + "}]}\n",
			opts: Options{Namespace: "team"},
			check: func(t *testing.T, res *Result, out string) {
				if res.Workloads[0].ID != "team.pod.p" || res.Workloads[1].ID != "other.pod.q" || res.Workloads[0].Spec.Identity.SANs[1] != "web.team" {
					t.Errorf("workloads %v, SANs %v", res.Workloads, res.Workloads[0].Spec.Identity.SANs)
				}
				for _, o := range []struct{ kind, name, ns string }{{"Service", "web", "team"}, {"Pod", "p", "team"}, {"Pod", "q", "other"}, {"Namespace", "team", ""}, {"Widget", "w", ""}} {
					md, _ := outputObject(t, out, o.kind, o.name)["metadata"].(map[string]any)
					if got, _ := md["namespace"].(string); got != o.ns {
						t.Errorf("%s %s: namespace %q, want %q", o.kind, o.name, got, o.ns)
					}
				}
			},
		},
		{
			name:  "default namespace written when none is given",
			input: "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: " + pinned + "}]}\n",
			check: func(t *testing.T, _ *Result, out string) {
				md, _ := outputObject(t, out, "Pod", "p")["metadata"].(map[string]any)
				if md["namespace"] != "default" {
					t.Errorf("metadata %v", md)
				}
			},
		},
	}
	runLeakCases(t, tests)
}
