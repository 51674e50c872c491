package manifests

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Issue #16 item 1: Secrets and ConfigMaps that are not in the input are created at run time
// (by an operator, cert-manager, kubectl create secret): they become host-provided values
// (DESIGN §4.2), kept on the placeholder for the kubelet and marked as untrusted host input
// in the sealed spec, never sealed.

// podWith is a Deployment in namespace prod whose one container has the given extra fields
// (indented under the container) and whose pod spec has the given volumes.
func podWith(container, volumes string) string {
	s := "      containers:\n      - name: c\n        image: " + pinned + "\n" + container
	if volumes != "" {
		s += "      volumes:\n" + volumes
	}
	return deployment(s)
}

// warnedCount is the number of warnings containing every part.
func warnedCount(res *Result, parts ...string) int {
	n := 0
	for _, w := range res.Warnings {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(w, p)
		}
		if ok {
			n++
		}
	}
	return n
}

func TestHostProvidedObjects(t *testing.T) {
	const inputSecret = "apiVersion: v1\nkind: Secret\nmetadata: {name: sealed, namespace: prod}\nstringData: {k: SEALED-VALUE-5d1e}\n---\n"
	tests := []leakCase{
		{
			name:  "secretKeyRef to an absent Secret is host-provided, warned once",
			input: podWith("        env:\n        - {name: TOKEN, valueFrom: {secretKeyRef: {name: hf-secret, key: hf_token}}}\n        - {name: TOKEN2, valueFrom: {secretKeyRef: {name: hf-secret, key: other}}}\n", ""),
			check: func(t *testing.T, res *Result, out string) {
				env := res.Workloads[0].Spec.Containers[0].Env
				if len(env) != 2 || env[0] != (spec.EnvVar{Name: "TOKEN", FromHost: "secretKeyRef:hf-secret/hf_token"}) || env[1].FromHost != "secretKeyRef:hf-secret/other" {
					t.Errorf("sealed env %+v", env)
				}
				if !strings.Contains(out, "secretKeyRef:\n") || !strings.Contains(out, "name: hf-secret") || !strings.Contains(out, "key: hf_token") || !strings.Contains(out, "name: TOKEN2") {
					t.Errorf("placeholder lost the host-provided reference:\n%s", out)
				}
				if n := warnedCount(res, "Secret prod/hf-secret", "not in the input", "host-provided"); n != 1 {
					t.Errorf("%d warnings naming the Secret, want 1: %q", n, res.Warnings)
				}
			},
		},
		{
			name:    "--strict refuses an absent Secret",
			input:   podWith("        env:\n        - {name: TOKEN, valueFrom: {secretKeyRef: {name: hf-secret, key: hf_token}}}\n", ""),
			opts:    Options{Strict: true},
			wantErr: []string{"(Deployment prod/app): spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef", "Secret prod/hf-secret", "not in the input", "--strict"},
		},
		{
			name:  "envFrom of an absent ConfigMap keeps prefix and order",
			input: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: here, namespace: prod}\ndata: {A: sealed-a}\n---\n" + podWith("        envFrom:\n        - {configMapRef: {name: here}}\n        - {prefix: P_, configMapRef: {name: runtime-cm}}\n        env:\n        - {name: B, value: b}\n", ""),
			opts:  Options{SealSecrets: true},
			check: func(t *testing.T, res *Result, out string) {
				sameEnv(t, res.Workloads[0].Spec.Containers[0].Env, []spec.EnvVar{{Name: "A", Value: "sealed-a", Literal: true}, {FromHost: "configMapRef:runtime-cm", Prefix: "P_"}, {Name: "B", Value: "b"}})
				if !strings.Contains(out, "envFrom:\n") || !strings.Contains(out, "name: runtime-cm") || !strings.Contains(out, "prefix: "+spec.HostEnvFromPrefix(0)+"P_") {
					t.Errorf("placeholder lost envFrom (tagged for the agent):\n%s", out)
				}
				notIn(t, out, "sealed-a", "name: here")
				warned(t, res, "ConfigMap prod/runtime-cm")
			},
		},
		{
			name:  "secret and configMap volumes of absent objects stay on the placeholder",
			input: podWith("        volumeMounts:\n        - {name: tls, mountPath: /etc/tls}\n        - {name: conf, mountPath: /etc/conf}\n        - {name: tmp, mountPath: /tmp}\n", "      - {name: tls, secret: {secretName: cert-manager-tls, defaultMode: 0400}}\n      - {name: conf, configMap: {name: runtime-conf, items: [{key: a, path: a.conf}]}}\n      - {name: tmp, emptyDir: {}}\n"),
			check: func(t *testing.T, res *Result, out string) {
				s := withoutServiceAccount(res.Workloads[0].Spec)
				vols := map[string]spec.Volume{}
				for _, v := range s.Volumes {
					vols[v.Name] = v
				}
				if v := vols["tls"]; v.Kind != spec.VolumeHostObject || len(v.Objects) != 1 || v.Objects[0] != (spec.ObjectRef{Kind: "Secret", Name: "cert-manager-tls"}) {
					t.Errorf("tls volume %+v", v)
				}
				if v := vols["conf"]; v.Kind != spec.VolumeHostObject || len(v.Objects) != 1 || v.Objects[0].Kind != "ConfigMap" {
					t.Errorf("conf volume %+v", v)
				}
				if len(s.Files) != 0 {
					t.Errorf("files %+v", s.Files)
				}
				if m := s.Containers[0].Mounts; len(m) != 3 {
					t.Errorf("mounts %+v", m)
				}
				for _, keep := range []string{"secretName: cert-manager-tls", "name: runtime-conf", "mountPath: /etc/tls", "mountPath: /etc/conf", "path: a.conf"} {
					if !strings.Contains(out, keep) {
						t.Errorf("placeholder lacks %q:\n%s", keep, out)
					}
				}
				notIn(t, out, "mountPath: /tmp", "emptyDir")
				warned(t, res, "Secret prod/cert-manager-tls")
				warned(t, res, "ConfigMap prod/runtime-conf")
			},
		},
		{
			name:  "optional absent objects are host-provided and optional",
			input: podWith("        env:\n        - {name: X, valueFrom: {configMapKeyRef: {name: maybe, key: x, optional: true}}}\n        envFrom: [{secretRef: {name: maybe-s, optional: true}}]\n", "      - {name: v, secret: {secretName: maybe-v, optional: true}}\n"),
			check: func(t *testing.T, res *Result, out string) {
				s := withoutServiceAccount(res.Workloads[0].Spec)
				env := s.Containers[0].Env
				if len(env) != 2 || env[0] != (spec.EnvVar{FromHost: "secretRef:maybe-s", Optional: true}) || env[1] != (spec.EnvVar{Name: "X", FromHost: "configMapKeyRef:maybe/x", Optional: true}) {
					t.Errorf("env %+v", env)
				}
				if len(s.Volumes) != 1 || !s.Volumes[0].Objects[0].Optional {
					t.Errorf("volumes %+v", s.Volumes)
				}
				if strings.Count(out, "optional: true") != 3 {
					t.Errorf("placeholder lost optional:\n%s", out)
				}
			},
		},
		{
			name:  "--strict skips optional absent objects",
			input: podWith("        env:\n        - {name: X, valueFrom: {configMapKeyRef: {name: maybe, key: x, optional: true}}}\n        envFrom: [{secretRef: {name: maybe-s, optional: true}}]\n        volumeMounts: [{name: v, mountPath: /v}]\n", "      - {name: v, secret: {secretName: maybe-v, optional: true}}\n"),
			opts:  Options{Strict: true},
			check: func(t *testing.T, res *Result, out string) {
				s := res.Workloads[0].Spec
				if len(s.Containers[0].Env) != 0 {
					t.Errorf("env %+v", s.Containers[0].Env)
				}
				for _, v := range s.Volumes {
					if v.Kind == spec.VolumeHostObject {
						t.Errorf("host volume under --strict: %+v", v)
					}
				}
				notIn(t, out, "maybe", "optional")
				warned(t, res, "ConfigMap prod/maybe", "skipped")
			},
		},
		{
			name:    "object in the input without the key is an error naming both",
			input:   inputSecret + podWith("        env:\n        - {name: X, valueFrom: {secretKeyRef: {name: sealed, key: nope}}}\n", ""),
			opts:    Options{SealSecrets: true},
			wantErr: []string{"(Deployment prod/app): spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.key", `Secret prod/sealed has no key "nope"`},
		},
		{
			name:  "object in the input without an optional key skips it",
			input: inputSecret + podWith("        env:\n        - {name: X, valueFrom: {secretKeyRef: {name: sealed, key: nope, optional: true}}}\n", ""),
			opts:  Options{SealSecrets: true},
			check: func(t *testing.T, res *Result, out string) {
				if env := res.Workloads[0].Spec.Containers[0].Env; len(env) != 0 {
					t.Errorf("env %+v", env)
				}
				notIn(t, out, "nope")
			},
		},
		{
			name:    "malformed Secret is blamed on the Secret",
			input:   "apiVersion: v1\nkind: Secret\nmetadata: {name: bad, namespace: prod}\ndata: {k: '%%not-base64%%'}\n---\n" + podWith("        env:\n        - {name: X, valueFrom: {secretKeyRef: {name: bad, key: k}}}\n", ""),
			opts:    Options{SealSecrets: true},
			wantErr: []string{"document 0 (Secret prod/bad): data[k]", "base64"},
		},
		{
			name:    "Secret with an invalid key is blamed on the Secret",
			input:   "apiVersion: v1\nkind: Secret\nmetadata: {name: bad, namespace: prod}\nstringData: {'../x': v}\n---\n" + podWith("", "      - {name: v, secret: {secretName: bad}}\n"),
			opts:    Options{SealSecrets: true},
			wantErr: []string{"document 0 (Secret prod/bad): stringData[../x]"},
		},
		{
			name:    "host-provided reference with a name or key Kubernetes does not allow",
			input:   podWith("        env:\n        - {name: X, valueFrom: {secretKeyRef: {name: a/b, key: k}}}\n        - {name: Y1, valueFrom: {configMapKeyRef: {name: ok, key: 'k/../x'}}}\n", ""),
			wantErr: []string{"containers[0].env[0].valueFrom.secretKeyRef.name", `"a/b"`, "containers[0].env[1].valueFrom.configMapKeyRef.key", `"k/../x"`},
		},
		{
			name:    "host-provided value substituted into args is refused",
			input:   podWith("        command: [sh, -c, 'echo $(TOKEN)']\n        env:\n        - {name: TOKEN, valueFrom: {secretKeyRef: {name: hf-secret, key: t}}}\n", ""),
			wantErr: []string{"containers[0].command[2]", "$(TOKEN)", "host-provided"},
		},
		{
			name:    "projected volume mixing sealed and host-provided sources is refused",
			input:   inputSecret + podWith("", "      - name: p\n        projected:\n          sources:\n          - secret: {name: sealed}\n          - configMap: {name: runtime-cm}\n"),
			opts:    Options{SealSecrets: true},
			wantErr: []string{"spec.template.spec.volumes[0].projected", "ConfigMap prod/runtime-cm", "Secret prod/sealed"},
		},
		{
			name:  "projected volume of host-provided sources",
			input: podWith("        volumeMounts: [{name: p, mountPath: /p}]\n", "      - name: p\n        projected:\n          sources:\n          - secret: {name: rt-a}\n          - configMap: {name: rt-b, optional: true}\n"),
			check: func(t *testing.T, res *Result, out string) {
				v := withoutServiceAccount(res.Workloads[0].Spec).Volumes
				if len(v) != 1 || v[0].Kind != spec.VolumeHostObject || len(v[0].Objects) != 2 || v[0].Objects[1] != (spec.ObjectRef{Kind: "ConfigMap", Name: "rt-b", Optional: true}) {
					t.Errorf("volumes %+v", v)
				}
				if !strings.Contains(out, "projected:") || !strings.Contains(out, "name: rt-a") {
					t.Errorf("placeholder lost the projected volume:\n%s", out)
				}
			},
		},
		{
			name:  "projected volume of sealed sources",
			input: inputSecret + podWith("        volumeMounts: [{name: p, mountPath: /p}]\n", "      - name: p\n        projected:\n          defaultMode: 0440\n          sources:\n          - secret: {name: sealed, items: [{key: k, path: dir/k.txt}]}\n          - configMap: {name: absent-optional, optional: true}\n"),
			opts:  Options{SealSecrets: true, Strict: true},
			check: func(t *testing.T, res *Result, out string) {
				s := res.Workloads[0].Spec
				if len(s.Files) != 1 || s.Files[0].Path != "dir/k.txt" || s.Files[0].Mode != 0o440 || string(s.Files[0].Data) != "SEALED-VALUE-5d1e" {
					t.Errorf("files %+v", s.Files)
				}
				notIn(t, out, "SEALED-VALUE-5d1e", "projected", "absent-optional")
			},
		},
	}
	runLeakCases(t, tests)
}

// The canary holds on the host-provided path: a pod that mixes sealed values (a literal, a
// Secret of the input) with host-provided references leaks none of the sealed ones, and the
// host-provided references carry no sealed value into the envelope either.
func TestHostProvidedCanary(t *testing.T) {
	input := "apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: prod}\nstringData: {password: CANARY-HP-SECRET-91aa}\n---\n" +
		podWith("        args: ['--flag=CANARY-HP-ARG-3c2b']\n        env:\n        - {name: LIT, value: CANARY-HP-LITERAL-77de}\n        - {name: DB, valueFrom: {secretKeyRef: {name: db, key: password}}}\n        - {name: RT, valueFrom: {secretKeyRef: {name: runtime, key: token}}}\n        envFrom: [{secretRef: {name: db}}, {configMapRef: {name: runtime-cm}}]\n        volumeMounts: [{name: v, mountPath: /v}, {name: h, mountPath: /h}]\n",
			"      - {name: v, secret: {secretName: db}}\n      - {name: h, secret: {secretName: runtime-tls}}\n")
	res := sealOrRefuse(t, input, Options{SealSecrets: true}, nil)
	out, err := res.Render(testImageRef)
	if err != nil {
		t.Fatal(err)
	}
	canaries := []string{"CANARY-HP-SECRET-91aa", "CANARY-HP-ARG-3c2b", "CANARY-HP-LITERAL-77de"}
	for _, c := range canaries {
		if bytes.Contains(out, []byte(c)) {
			t.Errorf("canary %q in the sealed manifests", c)
		}
	}
	_, plain, err := envelope.Open(res.Workloads[0].Envelope, res.Workloads[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := spec.Unmarshal(plain)
	if err != nil {
		t.Fatal(err)
	}
	// Positive control: the canaries are sealed; the host-provided refs carry no value.
	view := string(plain)
	for _, f := range s.Files {
		view += string(f.Data)
	}
	for _, c := range canaries {
		if !strings.Contains(view, c) {
			t.Errorf("canary %q missing from the sealed spec", c)
		}
	}
	for _, e := range s.Containers[0].Env {
		if e.FromHost != "" && (e.Value != "" || e.Literal) {
			t.Errorf("host-provided env mixed with a sealed value: %+v", e)
		}
	}
	// The placeholder keeps only the host-provided references: the sealed Secret is gone.
	notIn(t, string(out), "name: db\n", "secretName: db\n", "kind: Secret", "name: DB\n", "name: LIT")
	for _, keep := range []string{"name: runtime\n", "name: runtime-cm", "secretName: runtime-tls", "name: RT"} {
		if !strings.Contains(string(out), keep) {
			t.Errorf("placeholder lacks %q:\n%s", keep, out)
		}
	}
}
