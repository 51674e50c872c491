package manifests

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	sigsyaml "sigs.k8s.io/yaml"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Issue #11 items 3 and 4: nothing sealed reaches the host through clear metadata, probes or
// pull secrets.

// outputObject returns the rendered object of that kind and name.
func outputObject(t *testing.T, out, kind, name string) map[string]any {
	t.Helper()
	for _, doc := range strings.Split(out, "\n---\n") {
		var m map[string]any
		if err := sigsyaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("output does not parse: %v", err)
		}
		md, _ := m["metadata"].(map[string]any)
		if m["kind"] == kind && md["name"] == name {
			return m
		}
	}
	return nil
}

func notIn(t *testing.T, out string, values ...string) {
	t.Helper()
	for _, v := range values {
		if strings.Contains(out, v) {
			t.Errorf("%q in the sealed manifests:\n%s", v, out)
		}
	}
}

func warned(t *testing.T, res *Result, parts ...string) {
	t.Helper()
	for _, w := range res.Warnings {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(w, p)
		}
		if ok {
			return
		}
	}
	t.Errorf("no warning with %q in %q", parts, res.Warnings)
}

const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

func TestClearMetadata(t *testing.T) {
	app := "registry.test/app/server@sha256:" + strings.Repeat("1", 64)
	withMetaSpec := func(meta, tmplMeta, podSpec, container string) string {
		return "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n  namespace: prod\n" + meta +
			"spec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata:\n      labels:\n        app: a\n" + tmplMeta +
			"    spec:\n" + podSpec + "      containers:\n      - " + container + "\n"
	}
	withMeta := func(meta, tmplMeta, container string) string { return withMetaSpec(meta, tmplMeta, "", container) }
	ctr := "{name: c, image: " + app + ", command: [/bin/server-main], env: [{name: MODE, value: production-eu}, {name: DEBUG, value: \"true\"}]}"
	applied := `{"apiVersion":"apps/v1","kind":"Deployment","spec":{"template":{"spec":{"containers":[{"image":"` + app + `","env":[{"name":"MODE","value":"production-eu"}]}]}}}}`
	tests := []leakCase{
		{
			name: "last-applied-configuration dropped from the object and the template",
			input: withMeta("  annotations:\n    "+lastApplied+": '"+applied+"'\n    team: web\n",
				"      annotations:\n        "+lastApplied+": '"+applied+"'\n", ctr),
			check: func(t *testing.T, _ *Result, out string) {
				notIn(t, out, lastApplied, "production-eu", "registry.test/app")
				if !strings.Contains(out, "team: web") {
					t.Errorf("other annotations lost:\n%s", out)
				}
			},
		},
		{
			name:  "last-applied-configuration dropped from a Pod",
			input: "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    " + lastApplied + ": '" + applied + "'\nspec:\n  containers:\n  - " + ctr + "\n",
			check: func(t *testing.T, _ *Result, out string) { notIn(t, out, lastApplied, "production-eu") },
		},
		{
			name:    "annotation quoting the image refused",
			input:   withMeta("  annotations: {built-from: \"image "+app+"\"}\n", "", ctr),
			wantErr: []string{"(Deployment prod/app)", "metadata.annotations[built-from]", "sealed"},
		},
		{
			name:    "template label holding an env value refused",
			input:   withMeta("", "        env: production-eu\n", ctr),
			wantErr: []string{"(Deployment prod/app)", "spec.template.metadata.labels[env]"},
		},
		{
			name:    "annotation quoting a command refused",
			input:   withMeta("", "      annotations: {cmd: /bin/server-main}\n", ctr),
			wantErr: []string{"spec.template.metadata.annotations[cmd]"},
		},
		{
			name:  "short values are too common to count",
			input: withMeta("  annotations: {debug: \"true\"}\n", "", ctr),
			check: func(t *testing.T, _ *Result, out string) {
				if !strings.Contains(out, `debug: "true"`) {
					t.Errorf("short annotation dropped:\n%s", out)
				}
			},
		},
		{
			name: "annotation holding a sealed Secret value refused",
			input: "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: prod}\nstringData: {token: tok-5f2e9a11}\n---\n" +
				withMeta("  annotations: {hint: tok-5f2e9a11}\n", "", "{name: c, image: "+app+", envFrom: [{secretRef: {name: s}}]}"),
			opts:    Options{SealSecrets: true},
			wantErr: []string{"(Deployment prod/app)", "metadata.annotations[hint]"},
		},
		{
			name: "annotation holding a sealed registry password refused",
			input: dockerSecret("pull", map[string]string{"registry.test": "app-pass-91c4"}) +
				withMetaSpec("  annotations: {note: app-pass-91c4}\n", "", "      imagePullSecrets: [{name: pull}]\n", "{name: c, image: "+app+"}"),
			opts:    Options{SealSecrets: true},
			wantErr: []string{"metadata.annotations[note]"},
		},
		{
			name:    "an unsealed object's annotation is checked too",
			input:   "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: prod, annotations: {x: production-eu}}\nspec: {selector: {app: a}, ports: [{port: 80}]}\n---\n" + withMeta("", "", ctr),
			wantErr: []string{"(Service prod/s)", "metadata.annotations[x]"},
		},
	}
	runLeakCases(t, tests)
}

// dockerSecret is a dockerconfigjson Secret in namespace prod with one entry per registry
// (password as given, user "u").
func dockerSecret(name string, passwords map[string]string) string {
	auths := map[string]map[string]string{}
	for reg, pw := range passwords {
		auths[reg] = map[string]string{"username": "u", "password": pw, "auth": base64.StdEncoding.EncodeToString([]byte("u:" + pw))}
	}
	cfg, _ := json.Marshal(map[string]any{"auths": auths})
	return "apiVersion: v1\nkind: Secret\nmetadata: {name: " + name + ", namespace: prod}\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: " +
		base64.StdEncoding.EncodeToString(cfg) + "\n---\n"
}

func TestSealedProbes(t *testing.T) {
	app := "registry.test/app/server@sha256:" + strings.Repeat("1", 64)
	pod := func(probes string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: prod}\nspec:\n  containers:\n  - name: web\n    image: " + app +
			"\n    ports: [{name: http, containerPort: 8080}]\n" + probes
	}
	// stubbed reports whether the output Pod's probe of that kind is exactly the stub.
	stubbed := func(t *testing.T, out, kind string) bool {
		t.Helper()
		c := outputObject(t, out, "Pod", "p")["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
		pr, _ := c[kind+"Probe"].(map[string]any)
		ex, _ := pr["exec"].(map[string]any)
		cmd, _ := ex["command"].([]any)
		var got []string
		for _, a := range cmd {
			got = append(got, a.(string))
		}
		return len(pr) > 0 && slices.Equal(got, spec.ProbeStub("web", kind))
	}
	tests := []leakCase{
		{
			name: "httpGet with headers moves into the guest",
			input: pod("    livenessProbe:\n      httpGet: {path: /live, port: http, scheme: HTTPS, httpHeaders: [{name: Authorization, value: Bearer probe-token-77aa}]}\n" +
				"      timeoutSeconds: 3\n      periodSeconds: 7\n"),
			check: func(t *testing.T, res *Result, out string) {
				notIn(t, out, "probe-token-77aa", "Authorization", "httpGet", "/live")
				if !stubbed(t, out, "liveness") || !strings.Contains(out, "periodSeconds: 7") || !strings.Contains(out, "timeoutSeconds: 3") {
					t.Errorf("placeholder probe is not the stub with the same timing:\n%s", out)
				}
				c := res.Workloads[0].Spec.Containers[0]
				want := spec.Probe{Kind: spec.ProbeLiveness, TimeoutSeconds: 3, HTTPGet: &spec.HTTPGetAction{Path: "/live", Port: 8080, Scheme: "HTTPS",
					Headers: []spec.HTTPHeader{{Name: "Authorization", Value: "Bearer probe-token-77aa"}}}}
				if got, _ := json.Marshal(c.Probes); string(got) != string(mustJSON(t, []spec.Probe{want})) {
					t.Errorf("sealed probes %s", got)
				}
				warned(t, res, "livenessProbe", "inside the guest")
			},
		},
		{
			name:  "exec probe argv stays sealed and is not an exec allow-list entry",
			input: pod("    readinessProbe: {exec: {command: [/bin/check-ready, --secret-flag]}, timeoutSeconds: 2}\n"),
			check: func(t *testing.T, res *Result, out string) {
				notIn(t, out, "/bin/check-ready", "--secret-flag")
				if !stubbed(t, out, "readiness") {
					t.Errorf("no stub:\n%s", out)
				}
				s := res.Workloads[0].Spec
				if p, ok := s.Containers[0].Probe(spec.ProbeReadiness); !ok || !slices.Equal(p.Exec, []string{"/bin/check-ready", "--secret-flag"}) || p.TimeoutSeconds != 2 {
					t.Errorf("sealed probes %+v", s.Containers[0].Probes)
				}
				if len(s.Policy.Exec) != 0 {
					t.Errorf("probe argv is an exec allow-list entry: %+v", s.Policy.Exec)
				}
				warned(t, res, "readinessProbe", "inside the guest")
			},
		},
		{
			name:  "httpGet without headers, tcpSocket and grpc stay network probes",
			input: pod("    livenessProbe: {httpGet: {path: /healthz, port: 8080}}\n    readinessProbe: {tcpSocket: {port: 8080}}\n    startupProbe: {grpc: {port: 9090}}\n"),
			check: func(t *testing.T, res *Result, out string) {
				for _, keep := range []string{"path: /healthz", "tcpSocket:", "grpc:"} {
					if !strings.Contains(out, keep) {
						t.Errorf("output lacks %q:\n%s", keep, out)
					}
				}
				notIn(t, out, "- "+spec.ProbeStubPath+"\n")
				if p := res.Workloads[0].Spec.Containers[0].Probes; len(p) != 0 {
					t.Errorf("sealed probes %+v", p)
				}
			},
		},
		{
			name:    "header probe to another host refused",
			input:   pod("    livenessProbe: {httpGet: {host: 10.0.0.9, port: 80, httpHeaders: [{name: X-Token, value: abcdefgh12}]}}\n"),
			wantErr: []string{"(Pod prod/p)", "spec.containers[0].livenessProbe.httpGet.host"},
		},
		{
			name:    "unknown named port refused",
			input:   pod("    livenessProbe: {httpGet: {port: admin, httpHeaders: [{name: X-Token, value: abcdefgh12}]}}\n"),
			wantErr: []string{"spec.containers[0].livenessProbe.httpGet.port", `"admin"`},
		},
	}
	runLeakCases(t, tests)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Pull secrets: app-image credentials exist only in the sealed spec; the node keeps only
// credentials for the secure image's registry (or the secrets named --node-pull-secret).
func TestPullSecrets(t *testing.T) {
	const secure = "registry.sealed.test/team/app-sealed"
	app := "registry.app.test/team/server@sha256:" + strings.Repeat("1", 64)
	pod := func(pullSecrets string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: prod}\nspec:\n  imagePullSecrets: [" + pullSecrets + "]\n  containers: [{name: c, image: " + app + "}]\n"
	}
	opts := Options{SealSecrets: true, SecureImage: secure}
	sealedRegs := func(t *testing.T, res *Result, want ...string) {
		t.Helper()
		var got []string
		for _, r := range res.Workloads[0].Spec.Registries {
			got = append(got, r.Registry+"="+r.Password)
		}
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("sealed registries %v lack %s", got, w)
			}
		}
	}
	tests := []leakCase{
		{
			name:  "app-only credentials sealed, Secret and reference dropped",
			input: dockerSecret("app-pull", map[string]string{"registry.app.test": "app-pass-1234"}) + pod("{name: app-pull}"),
			opts:  opts,
			check: func(t *testing.T, res *Result, out string) {
				if got := pullSecretNames(t, out); len(got) != 0 {
					t.Errorf("placeholder pull secrets %v", got)
				}
				notIn(t, out, "app-pull", "kind: Secret", base64.StdEncoding.EncodeToString([]byte("u:app-pass-1234")))
				sealedRegs(t, res, "registry.app.test=app-pass-1234")
				warned(t, res, "(Secret prod/app-pull)", "removed from the output")
			},
		},
		{
			name:  "a Secret holding both is split",
			input: dockerSecret("both", map[string]string{"registry.app.test": "app-pass-1234", "https://registry.sealed.test/v1/": "node-pass-5678"}) + pod("{name: both}"),
			opts:  opts,
			check: func(t *testing.T, res *Result, out string) {
				sec := outputObject(t, out, "Secret", "both")
				if sec == nil {
					t.Fatalf("split Secret missing:\n%s", out)
				}
				auths := decodeAuths(t, sec)
				if len(auths) != 1 || auths["https://registry.sealed.test/v1/"] == nil {
					t.Errorf("output Secret holds %v, want only the secure registry", auths)
				}
				if got := pullSecretNames(t, out); !slices.Equal(got, []string{"both"}) {
					t.Errorf("reference dropped:\n%s", out)
				}
				notIn(t, out, "registry.app.test", "app-pass-1234")
				sealedRegs(t, res, "registry.app.test=app-pass-1234")
				warned(t, res, "(Secret prod/both)", "registry.sealed.test")
			},
		},
		{
			name:  "separate Secrets: node one kept, app one dropped",
			input: dockerSecret("node", map[string]string{"registry.sealed.test": "node-pass-5678"}) + dockerSecret("app-pull", map[string]string{"registry.app.test": "app-pass-1234"}) + pod("{name: node}, {name: app-pull}"),
			opts:  opts,
			check: func(t *testing.T, res *Result, out string) {
				if outputObject(t, out, "Secret", "node") == nil || !slices.Equal(pullSecretNames(t, out), []string{"node"}) {
					t.Errorf("want only the node pull secret kept and referenced:\n%s", out)
				}
				notIn(t, out, "app-pull", "app-pass-1234")
			},
		},
		{
			name:  "--node-pull-secret keeps a Secret whole",
			input: dockerSecret("mirror", map[string]string{"mirror.node.test": "mirror-pass-42"}) + pod("{name: mirror}"),
			opts:  Options{SealSecrets: true, SecureImage: secure, NodePullSecrets: []string{"mirror"}},
			check: func(t *testing.T, res *Result, out string) {
				if sec := outputObject(t, out, "Secret", "mirror"); sec == nil || decodeAuths(t, sec)["mirror.node.test"] == nil {
					t.Errorf("node pull secret not kept whole:\n%s", out)
				}
				if !slices.Equal(pullSecretNames(t, out), []string{"mirror"}) {
					t.Errorf("reference dropped:\n%s", out)
				}
				warned(t, res, "mirror", "--node-pull-secret")
			},
		},
		{
			name:    "--node-pull-secret naming no pull secret refused",
			input:   pod(""),
			opts:    Options{SealSecrets: true, SecureImage: secure, NodePullSecrets: []string{"nope"}},
			wantErr: []string{"--node-pull-secret", `"nope"`},
		},
	}
	runLeakCases(t, tests)
}

func decodeAuths(t *testing.T, sec map[string]any) map[string]any {
	t.Helper()
	data, _ := sec["data"].(map[string]any)
	raw, err := base64.StdEncoding.DecodeString(data[".dockerconfigjson"].(string))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Auths map[string]any `json:"auths"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Auths
}

// pullSecretNames returns the imagePullSecrets of the output Pod prod/p.
func pullSecretNames(t *testing.T, out string) []string {
	t.Helper()
	p := outputObject(t, out, "Pod", "p")
	if p == nil {
		t.Fatalf("no Pod p in the output:\n%s", out)
	}
	var names []string
	refs, _ := p["spec"].(map[string]any)["imagePullSecrets"].([]any)
	for _, r := range refs {
		names = append(names, r.(map[string]any)["name"].(string))
	}
	return names
}
