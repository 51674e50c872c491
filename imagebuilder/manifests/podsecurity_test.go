package manifests

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// podSecurityLevel is the strictest Pod Security Standards level (the pod-security-admission
// library's checks at its latest version, as the API server's admission plugin runs them) that
// admits the pod template, and the reasons the next stricter level refuses it.
func podSecurityLevel(t *testing.T, tmpl *corev1.PodTemplateSpec) (psapi.Level, string) {
	t.Helper()
	ev, err := policy.NewEvaluator(policy.DefaultChecks())
	if err != nil {
		t.Fatal(err)
	}
	why := ""
	for _, lvl := range []psapi.Level{psapi.LevelRestricted, psapi.LevelBaseline} {
		res := policy.AggregateCheckResults(ev.EvaluatePod(psapi.LevelVersion{Level: lvl, Version: psapi.LatestVersion()}, &tmpl.ObjectMeta, &tmpl.Spec))
		if res.Allowed {
			return lvl, why
		}
		if why == "" {
			why = res.ForbiddenDetail()
		}
	}
	return psapi.LevelPrivileged, why
}

// podTemplates returns the pod template of every pod-carrying object of a YAML text, by
// "Kind/name".
func podTemplates(t *testing.T, name string, text []byte) map[string]*corev1.PodTemplateSpec {
	t.Helper()
	objs, err := parseSource(Source{Name: name, Data: text})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*corev1.PodTemplateSpec{}
	for _, o := range objs {
		versions, ok := podKinds[o.kind]
		if !ok {
			continue
		}
		var m any = o.raw
		for _, k := range versions[o.apiVersion].path {
			m = m.(map[string]any)[k]
		}
		raw, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var tmpl corev1.PodTemplateSpec // a Pod has the same metadata and spec fields
		if err := json.Unmarshal(raw, &tmpl); err != nil {
			t.Fatalf("%s: %v", o.where(), err)
		}
		out[o.kind+"/"+o.name] = &tmpl
	}
	return out
}

// checkPodSecurityKept asserts that every sealed placeholder has the Pod Security level of
// its input template, and returns the input levels by object.
func checkPodSecurityKept(t *testing.T, input string, res *Result) map[string]psapi.Level {
	t.Helper()
	out, err := res.Render(testImageRef)
	if err != nil {
		t.Fatal(err)
	}
	in, sealed := podTemplates(t, "input", []byte(input)), podTemplates(t, "output", out)
	if len(in) == 0 {
		t.Fatal("no pod templates in the input")
	}
	levels := map[string]psapi.Level{}
	for obj, tmpl := range in {
		ph, ok := sealed[obj]
		if !ok {
			t.Fatalf("%s: not in the output", obj)
		}
		if ph.Annotations[AnnotationWorkload] == "" {
			t.Fatalf("%s: output template is not a sealed placeholder", obj)
		}
		want, _ := podSecurityLevel(t, tmpl)
		got, why := podSecurityLevel(t, ph)
		if got != want {
			t.Errorf("%s: placeholder is Pod Security %q, input %q (%s)", obj, got, want, why)
		}
		levels[obj] = want
	}
	return levels
}

const restrictedPod = `      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: c
        image: ` + pinned + `
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
          readOnlyRootFilesystem: true
`

// A manifest keeps its Pod Security level (restricted, baseline, privileged) when sealed.
func TestPodSecurityLevelKept(t *testing.T) {
	local := map[string][]byte{"profiles/deny-keys.json": []byte(testSeccompProfile)}
	tests := []struct {
		name  string
		input string
		opts  Options
		level psapi.Level
	}{
		{name: "restricted, pod-level runAsNonRoot and seccomp", input: deployment(restrictedPod), level: psapi.LevelRestricted},
		{name: "restricted, container-level everything, init and sidecar containers", level: psapi.LevelRestricted, input: deployment(`      securityContext: {fsGroup: 2000, supplementalGroups: [3000]}
      initContainers:
      - name: init
        image: ` + pinned + `
        securityContext: {runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}
      - name: side
        image: ` + pinned + `
        restartPolicy: Always
        securityContext: {runAsNonRoot: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: c
        image: ` + pinned + `
        securityContext: {runAsNonRoot: true, runAsUser: 1000, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}
`)},
		{name: "restricted with a sealed Localhost seccomp profile", opts: Options{SeccompProfiles: local}, level: psapi.LevelRestricted,
			input: deployment(strings.Replace(restrictedPod, "{type: RuntimeDefault}", "{type: Localhost, localhostProfile: profiles/deny-keys.json}", 1))},
		{name: "restricted with an encrypted ephemeral volume and a Block device", level: psapi.LevelRestricted,
			input: deployment(strings.Replace(restrictedPod, "          readOnlyRootFilesystem: true\n", "          readOnlyRootFilesystem: true\n        volumeMounts: [{name: e, mountPath: /e}]\n        volumeDevices: [{name: r, devicePath: /dev/r}]\n", 1) +
				"      volumes:\n      - {name: e, ephemeral: {volumeClaimTemplate: {spec: {resources: {requests: {storage: 1Gi}}}}}}\n" +
				"      - {name: r, ephemeral: {volumeClaimTemplate: {spec: {volumeMode: Block, resources: {requests: {storage: 1Gi}}}}}}\n")},
		{name: "baseline: no securityContext", input: deployment("      containers: [{name: c, image: " + pinned + "}]\n"), level: psapi.LevelBaseline},
		{name: "baseline: restricted but for allowPrivilegeEscalation", level: psapi.LevelBaseline,
			input: deployment(strings.Replace(restrictedPod, "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", 1))},
		{name: "baseline: restricted but for runAsUser 0", level: psapi.LevelBaseline,
			input: deployment(strings.Replace(restrictedPod, "runAsNonRoot: true", "runAsNonRoot: true\n        runAsUser: 0", 1))},
		{name: "baseline: capabilities of the baseline set added", level: psapi.LevelBaseline,
			input: deployment("      containers: [{name: c, image: " + pinned + ", securityContext: {capabilities: {add: [CHOWN, KILL]}}}]\n")},
		{name: "privileged: capability outside baseline", level: psapi.LevelPrivileged,
			input: deployment("      containers: [{name: c, image: " + pinned + ", securityContext: {capabilities: {add: [IPC_LOCK]}}}]\n")},
		{name: "privileged: Unconfined seccomp", level: psapi.LevelPrivileged,
			input: deployment("      securityContext: {seccompProfile: {type: Unconfined}}\n      containers: [{name: c, image: " + pinned + "}]\n")},
		{name: "privileged: privileged container with --allow-privileged", opts: Options{AllowPrivileged: true}, level: psapi.LevelPrivileged,
			input: deployment("      containers: [{name: c, image: " + pinned + ", securityContext: {privileged: true}}]\n")},
		{name: "privileged: unsafe sysctl", level: psapi.LevelPrivileged,
			input: deployment("      securityContext: {sysctls: [{name: kernel.msgmax, value: \"65536\"}]}\n      containers: [{name: c, image: " + pinned + "}]\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := sealOrRefuse(t, tt.input, tt.opts, nil)
			levels := checkPodSecurityKept(t, tt.input, res)
			if got := levels["Deployment/app"]; got != tt.level {
				t.Fatalf("input is Pod Security %q, the test expects %q: fix the test input", got, tt.level)
			}
		})
	}
}

// The real-world manifests that seal keep their Pod Security level.
func TestPodSecuritySharedManifests(t *testing.T) {
	dir := sharedDir(t, "manifests")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	var texts []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		texts = append(texts, string(b))
	}
	resolver := startRegistry(t, texts...)
	sealed := 0
	for i, f := range files {
		base := filepath.Base(f)
		t.Run(base, func(t *testing.T) {
			res, err := Seal(context.Background(), []Source{{Name: base, Data: []byte(texts[i])}},
				Options{TEEs: []string{"sim"}, KBS: testKBS(), Resolver: resolver})
			if err != nil {
				t.Skipf("refused (TestSharedManifests checks why): %v", err)
			}
			sealed++
			checkPodSecurityKept(t, texts[i], res)
		})
	}
	if sealed == 0 {
		t.Fatal("no real-world manifest sealed")
	}
}

// The placeholder never carries a Localhost seccomp profile's name (the kubelet would read it
// from the node's disk; the guest applies the sealed content) and keeps no Windows identity.
func TestPlaceholderSecurityContextSealedParts(t *testing.T) {
	input := deployment(`      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: Localhost, localhostProfile: profiles/deny-keys.json}
        windowsOptions: {gmsaCredentialSpecName: webapp-gmsa, runAsUserName: ContainerAdministrator}
      containers:
      - name: c
        image: ` + pinned + `
        securityContext:
          seccompProfile: {type: Localhost, localhostProfile: profiles/deny-keys.json}
          capabilities: {drop: [ALL]}
`)
	res := sealOrRefuse(t, input, Options{SeccompProfiles: map[string][]byte{"profiles/deny-keys.json": []byte(testSeccompProfile)}}, nil)
	out, err := res.Render(testImageRef)
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{"deny-keys", "Localhost", "webapp-gmsa", "ContainerAdministrator"} {
		if strings.Contains(string(out), leak) {
			t.Errorf("placeholder carries %q:\n%s", leak, out)
		}
	}
	ph := podTemplates(t, "output", out)["Deployment/app"]
	if sc := ph.Spec.SecurityContext; sc == nil || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod seccompProfile on the placeholder = %+v, want RuntimeDefault", sc)
	}
	if sc := ph.Spec.Containers[0].SecurityContext; sc == nil || sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 {
		t.Errorf("container securityContext on the placeholder = %+v, want capabilities kept", sc)
	}
	if got := res.Workloads[0].Spec.Containers[0].SecurityContext.SeccompProfile; got == nil || string(got.Profile) != testSeccompProfile {
		t.Errorf("sealed seccomp profile = %+v, want the owner's file", got)
	}
}

// fsGroup is a supplemental group of every container, as the kubelet makes it.
func TestFSGroupSealedAsSupplementalGroup(t *testing.T) {
	res := sealOrRefuse(t, deployment("      securityContext: {fsGroup: 2000, supplementalGroups: [3000]}\n      containers: [{name: c, image: "+pinned+"}]\n"), Options{}, nil)
	sc := res.Workloads[0].Spec.Containers[0].SecurityContext
	if sc == nil || len(sc.SupplementalGroups) != 2 || sc.SupplementalGroups[0] != 3000 || sc.SupplementalGroups[1] != 2000 {
		t.Fatalf("sealed securityContext = %+v, want supplementalGroups [3000 2000]", sc)
	}
}
