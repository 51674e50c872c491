package manifests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	sigsyaml "sigs.k8s.io/yaml"

	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

const pinned = "registry.test/app/server@sha256:1111111111111111111111111111111111111111111111111111111111111111"

const canaryInput = `
apiVersion: v1
kind: Secret
metadata: {name: db-creds}
stringData:
  password: CANARY-SECRET-PASSWORD-7f3a
---
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data:
  app.conf: "listen=CANARY-CONFIG-LINE-91b2"
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: web-data}
spec:
  accessModes: [ReadWriteOncePod]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations: {sealpod.io/logs: deny}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      initContainers:
      - name: setup
        image: canary-registry.test/team/canary-init-image:v3
        command: ["/bin/canary-init-command", "--canary-init-flag"]
      containers:
      - name: server
        image: canary-registry.test/team/canary-server-image:1.0
        command: ["/usr/bin/canary-server-command"]
        args: ["--canary-arg=s3cr3t-arg-value"]
        workingDir: /canary/workdir
        env:
        - {name: API_TOKEN, value: CANARY-ENV-VALUE-0c1d}
        - name: DB_PASSWORD
          valueFrom: {secretKeyRef: {name: db-creds, key: password}}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        ports: [{containerPort: 8080, name: http}]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}}
        livenessProbe: {exec: {command: ["/bin/check", "--live"]}}
        volumeMounts:
        - {name: config, mountPath: /etc/app}
        - {name: scratch, mountPath: /tmp}
        - {name: data, mountPath: /canary/pvc-mount-path, subPath: canary-subpath-5e}
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: web-data}
      - name: config
        configMap: {name: app-config}
      - name: scratch
        emptyDir: {sizeLimit: 64Mi}
`

var canaries = []string{
	"CANARY-SECRET-PASSWORD-7f3a", "CANARY-CONFIG-LINE-91b2", "canary-init-image", "canary-server-image",
	"canary-registry.test", "/bin/canary-init-command", "--canary-init-flag", "/usr/bin/canary-server-command",
	"s3cr3t-arg-value", "/canary/workdir", "CANARY-ENV-VALUE-0c1d", "/etc/app", "/bin/check",
	"/canary/pvc-mount-path", "canary-subpath-5e",
}

func TestCanaryNeverInOutput(t *testing.T) {
	res, err := sealText(t, canaryInput, Options{SealSecrets: true, Resolver: startRegistry(t, canaryInput)})
	if err != nil {
		t.Fatal(err)
	}
	out, err := res.Render(testImageRef)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range canaries {
		if bytes.Contains(out, []byte(c)) {
			t.Errorf("canary %q in sealed manifests", c)
		}
		if bytes.Contains(res.Workloads[0].Envelope, []byte(c)) {
			t.Errorf("canary %q in envelope", c)
		}
	}
	// Positive control: the canaries are inside the envelope, and the spec is complete.
	_, plain, err := envelope.Open(res.Workloads[0].Envelope, res.Workloads[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := spec.Unmarshal(plain)
	if err != nil {
		t.Fatal(err)
	}
	s = withoutServiceAccount(s)
	view := bytes.Clone(plain)
	for _, f := range s.Files {
		view = append(view, f.Data...) // file contents are base64 in the JSON
	}
	for _, c := range canaries {
		if !bytes.Contains(view, []byte(c)) {
			t.Errorf("canary %q missing from the sealed spec", c)
		}
	}
	srv := s.Containers[0]
	if !strings.HasPrefix(srv.Image, "canary-registry.test/team/canary-server-image@sha256:") {
		t.Errorf("image not pinned: %s", srv.Image)
	}
	wantEnv := []spec.EnvVar{{Name: "API_TOKEN", Value: "CANARY-ENV-VALUE-0c1d"}, {Name: "DB_PASSWORD", Value: "CANARY-SECRET-PASSWORD-7f3a", Literal: true}, {Name: "POD_NAME", FromHost: "fieldRef:metadata.name"}}
	if len(srv.Env) != len(wantEnv) {
		t.Fatalf("env %+v", srv.Env)
	}
	for i := range wantEnv {
		if srv.Env[i] != wantEnv[i] {
			t.Errorf("env[%d] = %+v, want %+v", i, srv.Env[i], wantEnv[i])
		}
	}
	// The exec probe is sealed and answered by the agent: its argv is no exec allow-list entry.
	if s.Policy.Logs != spec.LogsDeny || s.Policy.AllowsExec("server", []string{"/bin/check", "--live"}) || s.Policy.AllowsExec("server", []string{"/bin/sh"}) {
		t.Errorf("policy %+v", s.Policy)
	}
	if pr, ok := srv.Probe(spec.ProbeLiveness); !ok || !slices.Equal(pr.Exec, []string{"/bin/check", "--live"}) {
		t.Errorf("sealed probes %+v", srv.Probes)
	}
	if len(s.Files) != 1 || s.Files[0].Path != "app.conf" || s.Files[0].Volume != "config" {
		t.Errorf("files %+v", s.Files)
	}
	if len(s.Volumes) != 3 || s.Volumes[2].Kind != spec.VolumeTmpfs || s.Volumes[2].SizeLimit != 64<<20 {
		t.Errorf("volumes %+v", s.Volumes)
	}
	if v := s.Volumes[1]; v.Kind != spec.VolumeEncrypted || v.Claim == nil || v.Claim.ClaimName != "web-data" || v.Claim.Namespace != "default" {
		t.Errorf("encrypted volume %+v", v)
	}
	if s.Identity.SANs[0] != "web" || s.Identity.TLSDir != spec.DefaultTLSDir {
		t.Errorf("identity %+v", s.Identity)
	}
	// The sealed Secret and ConfigMap are gone from the output, with a warning each.
	for _, kind := range []string{"kind: Secret", "kind: ConfigMap", "sealpod.io/logs"} {
		if bytes.Contains(out, []byte(kind)) {
			t.Errorf("output still has %q", kind)
		}
	}
	if w := strings.Join(res.Warnings, "\n"); !strings.Contains(w, "(Secret db-creds): sealed") || !strings.Contains(w, "(ConfigMap app-config): sealed") {
		t.Errorf("warnings %q", w)
	}
	// Host-visible parts that Kubernetes needs are kept.
	for _, keep := range []string{"containerPort: 8080", "path: /healthz", "fieldPath: metadata.name", "name: POD_NAME", "runtimeClassName: sealpod-sim", "replicas: 2", "name: setup",
		"kind: PersistentVolumeClaim", "claimName: web-data", "mountPath: " + spec.PlaceholderVolumePath("data"), spec.AnnotationVolumes + `: "{\"data\":{\"mode\":\"Filesystem\",\"sizeBytes\":1073741824}}"`} {
		if !bytes.Contains(out, []byte(keep)) {
			t.Errorf("output lacks %q:\n%s", keep, out)
		}
	}
}

func deployment(podSpec string) string {
	return `apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: prod}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
    spec:
` + podSpec
}

func TestRules(t *testing.T) {
	tests := []leakCase{
		{
			name:    "hostNetwork refused",
			input:   deployment("      hostNetwork: true\n      containers: [{name: c, image: " + pinned + "}]\n"),
			wantErr: []string{"input.yaml: document 0 (Deployment prod/app): spec.template.spec.hostNetwork", "--allow-host-namespaces"},
		},
		{
			name:  "hostNetwork allowed by flag",
			input: deployment("      hostNetwork: true\n      containers: [{name: c, image: " + pinned + "}]\n"),
			opts:  Options{AllowHostNamespaces: true},
			check: func(t *testing.T, _ *Result, out string) {
				if !strings.Contains(out, "hostNetwork: true") {
					t.Error("hostNetwork dropped")
				}
			},
		},
		{
			name:    "privileged refused",
			input:   deployment("      containers: [{name: c, image: " + pinned + ", securityContext: {privileged: true}}]\n"),
			wantErr: []string{"spec.template.spec.containers[0].securityContext.privileged", "--allow-privileged"},
		},
		{
			name:    "hostPath refused",
			input:   deployment("      containers: [{name: c, image: " + pinned + ", volumeMounts: [{name: h, mountPath: /h}]}]\n      volumes: [{name: h, hostPath: {path: /etc}}]\n"),
			wantErr: []string{"spec.template.spec.volumes[0]", `volume "h" is a host volume (hostPath)`},
		},
		{
			name:  "hostPath allowed keeps volume and mount on the placeholder",
			input: deployment("      containers: [{name: c, image: " + pinned + ", volumeMounts: [{name: h, mountPath: /h}, {name: t, mountPath: /t}]}]\n      volumes: [{name: h, hostPath: {path: /etc}}, {name: t, emptyDir: {}}]\n"),
			opts:  Options{AllowHostVolumes: true},
			check: func(t *testing.T, res *Result, out string) {
				if !strings.Contains(out, "path: /etc") || !strings.Contains(out, "mountPath: /h") || strings.Contains(out, "mountPath: /t") || strings.Contains(out, "emptyDir") {
					t.Errorf("placeholder volumes wrong:\n%s", out)
				}
				if v := withoutServiceAccount(res.Workloads[0].Spec).Volumes; len(v) != 2 || v[0].Kind != spec.VolumeHost {
					t.Errorf("sealed volumes %+v", v)
				}
			},
		},
		{
			name:    "secret of the input without --seal-secrets",
			input:   "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: prod}\nstringData: {k: v}\n---\n" + deployment("      containers: [{name: c, image: "+pinned+", env: [{name: X, valueFrom: {secretKeyRef: {name: s, key: k}}}]}]\n"),
			wantErr: []string{"spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef", "Secret prod/s, which is in the input", "--seal-secrets"},
		},
		{
			name:  "secret missing from the input is host-provided",
			input: deployment("      containers: [{name: c, image: " + pinned + ", envFrom: [{secretRef: {name: s}}]}]\n"),
			opts:  Options{SealSecrets: true},
			check: func(t *testing.T, res *Result, out string) {
				if e := res.Workloads[0].Spec.Containers[0].Env; len(e) != 1 || e[0].FromHost != spec.HostSecretRef+"s" {
					t.Errorf("env %+v", e)
				}
				warned(t, res, "Secret prod/s is not in the input")
			},
		},
		{
			name:  "optional missing secret is skipped",
			input: deployment("      containers: [{name: c, image: " + pinned + ", envFrom: [{secretRef: {name: s, optional: true}}]}]\n"),
			opts:  Options{SealSecrets: true},
		},
		{
			name:    "missing key",
			input:   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: prod}\ndata: {a: b}\n---\n" + deployment("      containers: [{name: c, image: "+pinned+", env: [{name: X, valueFrom: {configMapKeyRef: {name: cm, key: nope}}}]}]\n"),
			opts:    Options{SealSecrets: true},
			wantErr: []string{"document 1 (Deployment prod/app)", "configMapKeyRef.key", `has no key "nope"`},
		},
		{
			name:  "envFrom with prefix and configMap items",
			input: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: prod}\ndata: {a: \"1\", b: \"2\"}\n---\n" + deployment("      containers: [{name: c, image: "+pinned+", envFrom: [{prefix: P_, configMapRef: {name: cm}}], volumeMounts: [{name: v, mountPath: /v}]}]\n      volumes: [{name: v, configMap: {name: cm, items: [{key: b, path: sub/b.txt, mode: 0400}]}}]\n"),
			opts:  Options{SealSecrets: true},
			check: func(t *testing.T, res *Result, _ string) {
				s := res.Workloads[0].Spec
				if e := s.Containers[0].Env; len(e) != 2 || e[0].Name != "P_a" || e[1].Value != "2" {
					t.Errorf("env %+v", e)
				}
				if f := s.Files; len(f) != 1 || f[0].Path != "sub/b.txt" || f[0].Mode != 0o400 || string(f[0].Data) != "2" {
					t.Errorf("files %+v", f)
				}
			},
		},
		{
			name:    "item path escaping the volume",
			input:   "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: prod}\nstringData: {a: b}\n---\n" + deployment("      containers: [{name: c, image: "+pinned+"}]\n      volumes: [{name: v, secret: {secretName: s, items: [{key: a, path: ../../etc/passwd}]}}]\n"),
			opts:    Options{SealSecrets: true},
			wantErr: []string{"volumes[0].secret", "escapes the volume"},
		},
		{
			name:    "tag without resolver",
			input:   deployment("      containers: [{name: c, image: nginx:1.25}]\n"),
			wantErr: []string{"spec.template.spec.containers[0].image", `"nginx:1.25" is not pinned by digest`},
		},
		{
			name:    "tcpSocket lifecycle hook refused", // exec, httpGet and sleep hooks: hooks_test.go
			input:   deployment("      containers: [{name: c, image: " + pinned + ", lifecycle: {preStop: {tcpSocket: {port: 80}}}}]\n"),
			wantErr: []string{"containers[0].lifecycle.preStop.tcpSocket"},
		},
		{
			name:    "unknown field",
			input:   deployment("      containers: [{name: c, image: " + pinned + ", comand: [x]}]\n"),
			wantErr: []string{"(Deployment prod/app): spec.template", `unknown field "comand"`},
		},
		{
			name:    "unsupported apiVersion",
			input:   "apiVersion: apps/v1beta9\nkind: Deployment\nmetadata: {name: x}\nspec: {}\n",
			wantErr: []string{"(Deployment x): apiVersion: apps/v1beta9 Deployment is not supported (use one of apps/v1, apps/v1beta1"},
		},
		{
			name:  "extensions/v1beta1 converted with selector defaulted",
			input: "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: old}\nspec:\n  rollbackTo: {revision: 1}\n  template:\n    metadata: {labels: {app: old}}\n    spec:\n      containers: [{name: c, image: " + pinned + "}]\n",
			check: func(t *testing.T, res *Result, out string) {
				if !strings.Contains(out, "apiVersion: apps/v1\n") || !strings.Contains(out, "matchLabels:\n      app: old") || strings.Contains(out, "rollbackTo") {
					t.Errorf("not converted:\n%s", out)
				}
				if !strings.Contains(strings.Join(res.Warnings, "\n"), "converted extensions/v1beta1 to apps/v1") {
					t.Errorf("no warning: %v", res.Warnings)
				}
			},
		},
		{
			name:  "kind List, CronJob and Job",
			input: "apiVersion: v1\nkind: List\nitems:\n- apiVersion: batch/v1\n  kind: CronJob\n  metadata: {name: cj}\n  spec:\n    schedule: '* * * * *'\n    jobTemplate:\n      spec:\n        template:\n          spec:\n            restartPolicy: Never\n            containers: [{name: c, image: " + pinned + "}]\n- apiVersion: batch/v1\n  kind: Job\n  metadata: {name: j}\n  spec:\n    template:\n      spec:\n        restartPolicy: Never\n        containers: [{name: c, image: " + pinned + "}]\n",
			check: func(t *testing.T, res *Result, out string) {
				if len(res.Workloads) != 2 || res.Workloads[0].ID != "default.cronjob.cj" || res.Workloads[1].ID != "default.job.j" {
					t.Errorf("workloads %v", res.Workloads)
				}
				if strings.Count(out, "sealpod.io/workload:") != 2 {
					t.Errorf("output:\n%s", out)
				}
			},
		},
		{
			name:    "all errors reported at once",
			input:   deployment("      hostPID: true\n      containers: [{name: c, image: nginx}]\n") + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: x, securityContext: {privileged: true}}]}\n",
			wantErr: []string{"document 0 (Deployment prod/app): spec.template.spec.hostPID", "document 0 (Deployment prod/app): spec.template.spec.containers[0].image", "document 1 (Pod p): spec.containers[0].securityContext.privileged"},
		},
		{
			name:    "no pod templates",
			input:   "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n",
			wantErr: []string{"no pod templates"},
		},
		{
			name:    "broken YAML",
			input:   "apiVersion: v1\nkind: Pod\nmetadata: {name: [\n",
			wantErr: []string{"input.yaml: document 0"},
		},
		{
			name:    "missing kind",
			input:   "---\n# comment only\n---\napiVersion: v1\nmetadata: {name: x}\n",
			wantErr: []string{"input.yaml: document 0", "kind: missing"},
		},
		{
			name:  "explicit SANs and tls dir",
			input: "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {sealpod.io/sans: 'a.example, 10.0.0.1', sealpod.io/tls-dir: /run/tls}\nspec: {containers: [{name: c, image: " + pinned + "}]}\n",
			check: func(t *testing.T, res *Result, out string) {
				id := res.Workloads[0].Spec.Identity
				if strings.Join(id.SANs, ",") != "a.example,10.0.0.1" || id.TLSDir != "/run/tls" {
					t.Errorf("identity %+v", id)
				}
				if strings.Contains(out, "sealpod.io/sans") || strings.Contains(out, "tls-dir") {
					t.Errorf("owner annotations left in output:\n%s", out)
				}
			},
		},
	}
	runLeakCases(t, tests)
}

func TestDuplicateWorkloadIDs(t *testing.T) {
	p := "apiVersion: v1\nkind: Pod\nmetadata: {name: same}\nspec: {containers: [{name: c, image: " + pinned + "}]}\n"
	_, err := Seal(context.Background(), []Source{{Name: "a.yaml", Data: []byte(p)}, {Name: "b.yaml", Data: []byte(p)}}, Options{TEEs: []string{"sim"}, KBS: testKBS()})
	if err == nil || !strings.Contains(err.Error(), `both map to workload id "default.pod.same"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestDuplicateObjects(t *testing.T) {
	sec := "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: v}\n"
	_, err := sealText(t, sec+"---\n"+sec+"---\n"+deployment("      containers: [{name: c, image: "+pinned+"}]\n"), Options{SealSecrets: true})
	if err == nil || !strings.Contains(err.Error(), "input.yaml: document 1 (Secret s): metadata.name: Secret default/s is also defined at input.yaml: document 0") {
		t.Fatalf("err = %v", err)
	}
}

func TestCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Seal(ctx, []Source{{Name: "a", Data: []byte(deployment("      containers: [{name: c, image: " + pinned + "}]\n"))}}, Options{TEEs: []string{"sim"}, KBS: testKBS()})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestRenderNeedsDigest(t *testing.T) {
	res, err := sealText(t, deployment("      containers: [{name: c, image: "+pinned+"}]\n"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.Render("registry.test/x:latest"); err == nil {
		t.Fatal("rendered with an unpinned image")
	}
}

func FuzzSeal(f *testing.F) {
	f.Add([]byte(canaryInput))
	f.Add([]byte(deployment("      containers: [{name: c, image: " + pinned + "}]\n")))
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Pod, metadata: {name: a}, spec: {containers: [{name: c, image: " + pinned + "}]}}]\n"))
	f.Add([]byte("---\n---\n"))
	// Typed lists, host-provided references and a malformed Secret (issue #16 items 1 and 4).
	f.Add([]byte("apiVersion: v1\nkind: SecretList\nitems: [{metadata: {name: s}, data: {k: '%%'}}]\n---\napiVersion: v1\nkind: PodList\nitems: [{metadata: {name: a}, spec: {containers: [{name: c, image: " + pinned + ", envFrom: [{secretRef: {name: s}}, {prefix: P_, configMapRef: {name: rt}}], env: [{name: X, valueFrom: {secretKeyRef: {name: rt2, key: k, optional: true}}}]}], volumes: [{name: v, projected: {sources: [{secret: {name: rt3}}]}}]}}]\n"))
	// Encrypted volumes: claim templates, a Block PVC, an ephemeral claim (issue #15 item 1).
	f.Add([]byte("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: raw}\nspec: {volumeMode: Block, accessModes: [ReadWriteOncePod], resources: {requests: {storage: 1Gi}}}\n---\n" +
		"apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n" +
		"      containers: [{name: c, image: " + pinned + ", volumeMounts: [{name: data, mountPath: /d, subPath: s}, {name: e, mountPath: /e}], volumeDevices: [{name: raw, devicePath: /dev/r}]}]\n" +
		"      volumes: [{name: raw, persistentVolumeClaim: {claimName: raw}}, {name: e, ephemeral: {volumeClaimTemplate: {spec: {resources: {requests: {storage: 100Mi}}}}}}]\n" +
		"  volumeClaimTemplates: [{metadata: {name: data}, spec: {resources: {requests: {storage: 2Gi}}}}]\n"))
	kbs := envelope.KBS{URL: "https://kbs.test", CASHA256: strings.Repeat("c", 64)}
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Seal(context.Background(), []Source{{Name: "fuzz.yaml", Data: data}}, Options{TEEs: []string{"sim"}, KBS: kbs, SealSecrets: true})
		if err != nil {
			return
		}
		out, err := res.Render(testImageRef)
		if err != nil {
			t.Fatalf("sealed but cannot render: %v", err)
		}
		if _, err := sigsyaml.YAMLToJSON(out); err != nil && !bytes.Contains(out, []byte("\n---\n")) {
			t.Fatalf("rendered YAML does not parse: %v", err)
		}
		for _, o := range res.out {
			checkRoundTrip(t, o)
		}
		for _, w := range res.Workloads {
			if _, _, err := envelope.Open(w.Envelope, w.Key); err != nil {
				t.Fatalf("sealed envelope does not open: %v", err)
			}
		}
	})
}

// BenchmarkSealTemplates measures pod templates sealed per second: parse, build the sealed
// spec, fresh key, envelope, placeholder. Run with -cpu 1 for the one-core figure.
func BenchmarkSealTemplates(b *testing.B) {
	const perOp = 100
	var in bytes.Buffer
	for i := 0; i < perOp; i++ {
		// Distinct names, labels and Secrets per template, as in a real multi-app input.
		r := strings.NewReplacer("web", fmt.Sprintf("web%03d", i), "db-creds", fmt.Sprintf("db-creds%03d", i), "app-config", fmt.Sprintf("app-config%03d", i))
		in.WriteString(r.Replace(canaryInput))
		in.WriteString("\n---\n")
	}
	text := strings.ReplaceAll(in.String(), "canary-registry.test/team/canary-init-image:v3", pinned)
	text = strings.ReplaceAll(text, "canary-registry.test/team/canary-server-image:1.0", pinned)
	src := []Source{{Name: "bench.yaml", Data: []byte(text)}}
	opts := Options{TEEs: []string{"sim"}, KBS: testKBS(), SealSecrets: true}
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	for b.Loop() {
		res, err := Seal(context.Background(), src, opts)
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Workloads) != perOp {
			b.Fatalf("%d workloads", len(res.Workloads))
		}
		if _, err := res.Render(testImageRef); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(perOp*b.N)/b.Elapsed().Seconds(), "templates/s")
	// CPU seconds of the process (user+sys) stay meaningful when other work shares the
	// machine; with -cpu 1 this is the one-core rate.
	b.ReportMetric(float64(perOp*b.N)/(cpuTime(b)-cpu0).Seconds(), "templates/cpu-s")
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// --guest-mirror: the mirrors are sealed into every workload's spec (inside the envelope, so
// the node cannot redirect the guest's pulls), in the order given.
func TestGuestMirrors(t *testing.T) {
	for _, tc := range []struct {
		pairs   []string
		want    []spec.RegistryMirror
		wantErr string
	}{
		{pairs: []string{"gcr.io=10.244.0.1:5000", "docker.io=mirror.example"},
			want: []spec.RegistryMirror{{Registry: "gcr.io", Endpoint: "10.244.0.1:5000"}, {Registry: "docker.io", Endpoint: "mirror.example"}}},
		{pairs: []string{"gcr.io"}, wantErr: `guest mirror "gcr.io": want REGISTRY=HOST[:PORT]`},
		{pairs: []string{"gcr.io=http://x"}, wantErr: `guest mirror "gcr.io=http://x"`},
		{pairs: []string{"=x"}, wantErr: `guest mirror "=x"`},
	} {
		got, err := ParseGuestMirrors(tc.pairs)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: err %v, want %q", tc.pairs, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%v: %v %v", tc.pairs, got, err)
		}
	}
	mirrors, _ := ParseGuestMirrors([]string{"gcr.io=10.244.0.1:5000"})
	res, err := sealText(t, canaryInput, Options{SealSecrets: true, Resolver: startRegistry(t, canaryInput), GuestMirrors: mirrors})
	if err != nil {
		t.Fatal(err)
	}
	_, plain, err := envelope.Open(res.Workloads[0].Envelope, res.Workloads[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := spec.Unmarshal(plain)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Mirrors, mirrors) {
		t.Fatalf("sealed mirrors %v, want %v", s.Mirrors, mirrors)
	}
}
