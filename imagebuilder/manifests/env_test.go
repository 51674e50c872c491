package manifests

import (
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// sameEnv fails the test unless got is want, variable by variable.
func sameEnv(t *testing.T, got, want []spec.EnvVar) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("env %+v\nwant %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("env[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// Env fed by the host: annotation values (no syntax) never reach command/args, fieldRef
// paths are those Kubernetes allows, and resourceFieldRef keeps containerName and divisor.
func TestHostFedEnv(t *testing.T) {
	const ann = "        - {name: NOTE, valueFrom: {fieldRef: {fieldPath: \"metadata.annotations['note']\"}}}\n"
	tests := []struct {
		name    string
		spec    string // the pod spec under spec.template.spec
		wantErr []string
		check   func(t *testing.T, s *spec.Spec)
	}{
		{
			name:    "annotation variable in args refused",
			spec:    "      containers:\n      - name: web\n        image: " + pinned + "\n        command: [sh, -c]\n        args: ['echo $(NOTE)']\n        env:\n" + ann,
			wantErr: []string{"containers[0].args[0]", `container "web"`, "$(NOTE)", "metadata.annotations['note']"},
		},
		{
			name: "annotation variable in an init container's command refused",
			spec: "      initContainers:\n      - name: setup\n        image: " + pinned + "\n        command: [sh, -c, 'echo $(NOTE)']\n        env:\n" + ann +
				"      containers: [{name: web, image: " + pinned + "}]\n",
			wantErr: []string{"initContainers[0].command[2]", `container "setup"`, "$(NOTE)"},
		},
		{
			name: "annotation variable through another variable refused",
			spec: "      containers:\n      - name: web\n        image: " + pinned + "\n        args: ['--greeting=$(GREETING)']\n        env:\n" + ann +
				"        - {name: GREETING, value: 'hello $(NOTE)'}\n",
			wantErr: []string{"containers[0].args[0]", "$(GREETING)", "metadata.annotations['note']"},
		},
		{
			name: "annotation variable as env value, escaped reference and redefined name are fine",
			spec: "      containers:\n      - name: web\n        image: " + pinned + "\n        command: [sh, -c, 'echo \"$NOTE\" $$(NOTE) $(POD) $(SHADOW)']\n        env:\n" + ann +
				"        - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n" +
				"        - {name: SHADOW, value: '$(NOTE)'}\n" +
				"        - {name: SHADOW, value: plain}\n",
			check: func(t *testing.T, s *spec.Spec) {
				if env := s.Containers[0].Env; len(env) != 4 || env[0].FromHost != "fieldRef:metadata.annotations['note']" {
					t.Errorf("env %+v", env)
				}
			},
		},
		{
			name: "unknown fieldRef path refused",
			spec: "      containers:\n      - name: web\n        image: " + pinned + "\n        env:\n" +
				"        - {name: X, valueFrom: {fieldRef: {fieldPath: spec.hostname}}}\n",
			wantErr: []string{"containers[0].env[0].valueFrom.fieldRef.fieldPath", `"spec.hostname"`},
		},
		{
			name: "resourceFieldRef without resources: unset limits from the guest, unset requests 0",
			spec: "      containers:\n      - name: web\n        image: " + pinned + "\n        env:\n" +
				"        - {name: CPU_M, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}}\n" +
				"        - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}\n" +
				"        - {name: CPU, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1000m}}}\n" +
				"        - {name: SIDE, valueFrom: {resourceFieldRef: {containerName: side, resource: requests.ephemeral-storage}}}\n" +
				"      - {name: side, image: " + pinned + "}\n",
			check: func(t *testing.T, s *spec.Spec) {
				want := []spec.EnvVar{
					{Name: "CPU_M", FromHost: "resourceFieldRef:limits.cpu", Divisor: "1m"},
					{Name: "MEM", FromHost: "resourceFieldRef:limits.memory", Divisor: "1Mi"},
					{Name: "CPU", Value: "0", Literal: true},
					{Name: "SIDE", Value: "0", Literal: true},
				}
				sameEnv(t, s.Containers[0].Env, want)
			},
		},
		{
			name: "resourceFieldRef values computed from the sealed resources, as the kubelet",
			spec: "      containers:\n      - name: web\n        image: " + pinned + "\n" +
				"        resources: {limits: {cpu: 1500m, memory: 100Mi}, requests: {cpu: 250m}}\n        env:\n" +
				"        - {name: CPU_LIMIT, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}\n" +
				"        - {name: CPU_LIMIT_M, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}}\n" +
				"        - {name: CPU_REQ_M, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}}\n" +
				"        - {name: MEM_LIMIT_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}\n" +
				"        - {name: MEM_REQ, valueFrom: {resourceFieldRef: {resource: requests.memory}}}\n" +
				"        - {name: MEM_K, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1k}}}\n" +
				"        - {name: SIDE_MEM_REQ_GI, valueFrom: {resourceFieldRef: {containerName: side, resource: requests.memory, divisor: 1Gi}}}\n" +
				"        - {name: SIDE_CPU_LIMIT, valueFrom: {resourceFieldRef: {containerName: side, resource: limits.cpu}}}\n" +
				"        - {name: SIDE_HP, valueFrom: {resourceFieldRef: {containerName: side, resource: limits.hugepages-2Mi, divisor: 1Mi}}}\n" +
				"      - {name: side, image: " + pinned + ", resources: {limits: {memory: 1Gi, hugepages-2Mi: 4Mi}}}\n",
			check: func(t *testing.T, s *spec.Spec) {
				lit := func(name, v string) spec.EnvVar { return spec.EnvVar{Name: name, Value: v, Literal: true} }
				want := []spec.EnvVar{
					lit("CPU_LIMIT", "2"), // ceil(1.5)
					lit("CPU_LIMIT_M", "1500"),
					lit("CPU_REQ_M", "250"),
					lit("MEM_LIMIT_MI", "100"),
					lit("MEM_REQ", "104857600"), // requests default to limits
					lit("MEM_K", "104858"),      // ceil(104857.6)
					lit("SIDE_MEM_REQ_GI", "1"),
					{Name: "SIDE_CPU_LIMIT", FromHost: "resourceFieldRef:limits.cpu", ContainerName: "side"}, // no limit: the guest's capacity
					lit("SIDE_HP", "4"),
				}
				sameEnv(t, s.Containers[0].Env, want)
			},
		},
		{
			name: "resourceFieldRef divisor Kubernetes does not allow refused",
			spec: "      containers:\n      - name: web\n        image: " + pinned + "\n        env:\n" +
				"        - {name: CPU, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1Mi}}}\n",
			wantErr: []string{"containers[0].env[0].valueFrom.resourceFieldRef.divisor", `"1Mi"`, "limits.cpu"},
		},
		{
			name: "resourceFieldRef divisor not in canonical form refused, as by Kubernetes",
			spec: "      containers:\n      - name: web\n        image: " + pinned + "\n        env:\n" +
				"        - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1048576}}}\n",
			wantErr: []string{"containers[0].env[0].valueFrom.resourceFieldRef.divisor", `"1048576"`},
		},
		{
			name: "resourceFieldRef of an unknown container refused",
			spec: "      containers:\n      - name: web\n        image: " + pinned + "\n        env:\n" +
				"        - {name: CPU, valueFrom: {resourceFieldRef: {containerName: nope, resource: limits.cpu}}}\n",
			wantErr: []string{"containers[0].env[0].valueFrom.resourceFieldRef.containerName", `"nope"`},
		},
		{
			name: "resourceFieldRef of an unknown resource refused",
			spec: "      containers:\n      - name: web\n        image: " + pinned + "\n        env:\n" +
				"        - {name: GPU, valueFrom: {resourceFieldRef: {resource: limits.nvidia.com/gpu}}}\n",
			wantErr: []string{"containers[0].env[0].valueFrom.resourceFieldRef.resource", "limits.nvidia.com/gpu"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := sealOrRefuse(t, deployment(tt.spec), Options{}, tt.wantErr)
			if res == nil {
				return
			}
			tt.check(t, res.Workloads[0].Spec)
		})
	}
}

// The sealed env list is in Kubernetes' order, envFrom sources first then env, so the
// agent's "later wins" gives env precedence; values from Secrets and ConfigMaps are Literal
// (never $(VAR)-expanded), values written in the manifest are not.
func TestEnvOrderAndLiteral(t *testing.T) {
	const objects = "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: prod}\nstringData: {pw: pa$$word, ref: $(X), A: from-secret}\n---\n" +
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: prod}\ndata: {A: from-cm, B: from-cm, ref: x$(X)$$}\n---\n"
	const head = "      containers:\n      - name: web\n        image: " + pinned + "\n"
	tests := []struct {
		name string
		spec string // the pod spec under spec.template.spec
		want []spec.EnvVar
	}{
		{
			name: "env wins over envFrom on a duplicate name",
			spec: head + "        env: [{name: A, value: from-env}]\n        envFrom: [{configMapRef: {name: cm}}]\n",
			want: []spec.EnvVar{
				{Name: "A", Value: "from-cm", Literal: true}, {Name: "B", Value: "from-cm", Literal: true},
				{Name: "ref", Value: "x$(X)$$", Literal: true}, {Name: "A", Value: "from-env"},
			},
		},
		{
			name: "envFrom sources in order, the later wins",
			spec: head + "        envFrom: [{secretRef: {name: s}}, {configMapRef: {name: cm}}]\n",
			want: []spec.EnvVar{
				{Name: "A", Value: "from-secret", Literal: true}, {Name: "pw", Value: "pa$$word", Literal: true}, {Name: "ref", Value: "$(X)", Literal: true},
				{Name: "A", Value: "from-cm", Literal: true}, {Name: "B", Value: "from-cm", Literal: true}, {Name: "ref", Value: "x$(X)$$", Literal: true},
			},
		},
		{
			name: "secret and configMap key values stay literal, manifest values expand",
			spec: head + "        env:\n" +
				"        - {name: X, value: x}\n" +
				"        - {name: PW, valueFrom: {secretKeyRef: {name: s, key: pw}}}\n" +
				"        - {name: REF, valueFrom: {secretKeyRef: {name: s, key: ref}}}\n" +
				"        - {name: CREF, valueFrom: {configMapKeyRef: {name: cm, key: ref}}}\n" +
				"        - {name: LIT, value: '$(X)-$$'}\n" +
				"        envFrom: [{prefix: S_, secretRef: {name: s}}]\n",
			want: []spec.EnvVar{
				{Name: "S_A", Value: "from-secret", Literal: true}, {Name: "S_pw", Value: "pa$$word", Literal: true}, {Name: "S_ref", Value: "$(X)", Literal: true},
				{Name: "X", Value: "x"}, {Name: "PW", Value: "pa$$word", Literal: true}, {Name: "REF", Value: "$(X)", Literal: true},
				{Name: "CREF", Value: "x$(X)$$", Literal: true}, {Name: "LIT", Value: "$(X)-$$"},
			},
		},
		{
			// A literal value naming an annotation variable is text, not a reference to it.
			name: "literal value naming an annotation variable may reach args",
			spec: head + "        args: ['$(REF)']\n        env:\n" +
				"        - {name: X, valueFrom: {fieldRef: {fieldPath: \"metadata.annotations['note']\"}}}\n" +
				"        - {name: REF, valueFrom: {secretKeyRef: {name: s, key: ref}}}\n",
			want: []spec.EnvVar{
				{Name: "X", FromHost: "fieldRef:metadata.annotations['note']"}, {Name: "REF", Value: "$(X)", Literal: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := sealOrRefuse(t, objects+deployment(tt.spec), Options{SealSecrets: true}, nil)
			sameEnv(t, res.Workloads[0].Spec.Containers[0].Env, tt.want)
		})
	}
}
