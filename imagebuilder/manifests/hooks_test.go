package manifests

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Lifecycle hooks (issue #16 item 3): an exec or httpGet hook's action stays sealed and the
// placeholder carries the agent-answered exec hook spec.HookStub(container, kind); a sleep
// hook (a duration, nothing secret) stays the kubelet's own sleep.
func TestSealedHooks(t *testing.T) {
	app := "registry.test/app/server@sha256:" + strings.Repeat("1", 64)
	pod := func(extra string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: prod}\nspec:\n  containers:\n  - name: web\n    image: " + app +
			"\n    ports: [{name: admin, containerPort: 9090}]\n" + extra
	}
	// handler returns the output Pod's lifecycle handler of that kind for container i of
	// list ("containers" or "initContainers"), nil when absent.
	handler := func(t *testing.T, out, list string, i int, kind string) map[string]any {
		t.Helper()
		c := outputObject(t, out, "Pod", "p")["spec"].(map[string]any)[list].([]any)[i].(map[string]any)
		lc, _ := c["lifecycle"].(map[string]any)
		h, _ := lc[kind].(map[string]any)
		return h
	}
	stubbed := func(t *testing.T, out, list string, i int, ctr, kind string) {
		t.Helper()
		h := handler(t, out, list, i, kind)
		ex, _ := h["exec"].(map[string]any)
		cmd, _ := ex["command"].([]any)
		var got []string
		for _, a := range cmd {
			got = append(got, a.(string))
		}
		if len(h) != 1 || !slices.Equal(got, spec.HookStub(ctr, kind)) {
			t.Errorf("placeholder %s of %s is %v, want only the exec stub %q", kind, ctr, h, spec.HookStub(ctr, kind))
		}
	}
	sealedHooks := func(t *testing.T, res *Result, want ...spec.Hook) {
		t.Helper()
		got, _ := json.Marshal(res.Workloads[0].Spec.Containers[0].Hooks)
		if w := mustJSON(t, want); string(got) != string(w) && !(len(want) == 0 && string(got) == "null") {
			t.Errorf("sealed hooks %s, want %s", got, w)
		}
	}
	tests := []leakCase{
		{
			name: "exec hooks stay sealed",
			input: pod("    lifecycle:\n      postStart: {exec: {command: [/bin/register, --token, CANARY-HOOK-TOKEN-4c1d]}}\n" +
				"      preStop: {exec: {command: [/bin/sh, -c, CANARY-DRAIN-SCRIPT-a07e]}}\n"),
			check: func(t *testing.T, res *Result, out string) {
				notIn(t, out, "CANARY-HOOK-TOKEN-4c1d", "CANARY-DRAIN-SCRIPT-a07e", "/bin/register")
				stubbed(t, out, "containers", 0, "web", spec.HookPostStart)
				stubbed(t, out, "containers", 0, "web", spec.HookPreStop)
				sealedHooks(t, res,
					spec.Hook{Kind: spec.HookPostStart, Exec: []string{"/bin/register", "--token", "CANARY-HOOK-TOKEN-4c1d"}},
					spec.Hook{Kind: spec.HookPreStop, Exec: []string{"/bin/sh", "-c", "CANARY-DRAIN-SCRIPT-a07e"}})
				if p := res.Workloads[0].Spec.Policy.Exec; len(p) != 0 {
					t.Errorf("hook argv is an exec allow-list entry: %+v", p)
				}
				warned(t, res, "containers[0].lifecycle.postStart", "inside the guest")
			},
		},
		{
			name:  "httpGet hook with headers and a named port stays sealed",
			input: pod("    lifecycle:\n      preStop:\n        httpGet: {path: /CANARY-PATH-51e0, port: admin, scheme: HTTPS, httpHeaders: [{name: X-Drain-Token, value: CANARY-HEADER-9d2b}]}\n"),
			check: func(t *testing.T, res *Result, out string) {
				notIn(t, out, "CANARY-PATH-51e0", "CANARY-HEADER-9d2b", "X-Drain-Token", "httpGet")
				stubbed(t, out, "containers", 0, "web", spec.HookPreStop)
				if h := handler(t, out, "containers", 0, spec.HookPostStart); h != nil {
					t.Errorf("placeholder has a postStart hook the input lacks: %v", h)
				}
				sealedHooks(t, res, spec.Hook{Kind: spec.HookPreStop, HTTPGet: &spec.HTTPGetAction{Path: "/CANARY-PATH-51e0", Port: 9090, Scheme: "HTTPS",
					Headers: []spec.HTTPHeader{{Name: "X-Drain-Token", Value: "CANARY-HEADER-9d2b"}}}})
			},
		},
		{
			name:  "sleep hook stays the kubelet's sleep",
			input: pod("    lifecycle:\n      preStop: {sleep: {seconds: 7}}\n"),
			check: func(t *testing.T, res *Result, out string) {
				h := handler(t, out, "containers", 0, spec.HookPreStop)
				if s, _ := h["sleep"].(map[string]any); len(h) != 1 || s["seconds"] != float64(7) {
					t.Errorf("placeholder preStop %v, want sleep 7", h)
				}
				sealedHooks(t, res)
			},
		},
		{
			name:  "empty lifecycle accepted",
			input: pod("    lifecycle: {}\n"),
			check: func(t *testing.T, res *Result, out string) {
				notIn(t, out, "lifecycle", "- "+spec.ProbeStubPath+"\n")
				sealedHooks(t, res)
			},
		},
		{
			name: "sidecar init container hooks",
			input: "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: prod}\nspec:\n  initContainers:\n  - name: side\n    image: " + app +
				"\n    restartPolicy: Always\n    lifecycle: {preStop: {exec: {command: [/bin/flush, CANARY-SIDE-3e3e]}}}\n  containers:\n  - {name: web, image: " + app + "}\n",
			check: func(t *testing.T, res *Result, out string) {
				notIn(t, out, "CANARY-SIDE-3e3e")
				stubbed(t, out, "initContainers", 0, "side", spec.HookPreStop)
				if h, ok := res.Workloads[0].Spec.InitContainers[0].Hook(spec.HookPreStop); !ok || !slices.Equal(h.Exec, []string{"/bin/flush", "CANARY-SIDE-3e3e"}) {
					t.Errorf("sealed sidecar hook %+v", res.Workloads[0].Spec.InitContainers[0].Hooks)
				}
			},
		},
		{
			name:    "hook on a plain init container refused",
			input:   "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: prod}\nspec:\n  initContainers:\n  - {name: i, image: " + app + ", lifecycle: {postStart: {exec: {command: [x]}}}}\n  containers:\n  - {name: web, image: " + app + "}\n",
			wantErr: []string{"(Pod prod/p)", "spec.initContainers[0].lifecycle", "restartPolicy: Always"},
		},
		{
			name:    "httpGet hook to another host refused",
			input:   pod("    lifecycle: {preStop: {httpGet: {host: 10.0.0.9, port: 80, path: /x}}}\n"),
			wantErr: []string{"(Pod prod/p)", "spec.containers[0].lifecycle.preStop.httpGet.host", `"10.0.0.9"`},
		},
		{
			name:    "unknown named port refused",
			input:   pod("    lifecycle: {postStart: {httpGet: {port: metrics}}}\n"),
			wantErr: []string{"spec.containers[0].lifecycle.postStart.httpGet.port", `"metrics"`},
		},
		{
			name: "annotation holding a sealed hook value refused",
			input: strings.Replace(pod("    lifecycle: {preStop: {httpGet: {path: /drain, port: 80, httpHeaders: [{name: X-T, value: CANARY-ANN-HDR-77c2}]}}, postStart: {exec: {command: [/bin/reg, CANARY-ANN-ARG-1b9f]}}}\n"),
				"namespace: prod}", "namespace: prod, annotations: {a: 'x CANARY-ANN-HDR-77c2', b: 'y CANARY-ANN-ARG-1b9f'}}", 1),
			wantErr: []string{"metadata.annotations[a]", "preStop hook header of container web", "metadata.annotations[b]", "the postStart hook of container web"},
		},
		{
			name:    "tcpSocket hook refused",
			input:   pod("    lifecycle: {preStop: {tcpSocket: {port: 80}}}\n"),
			wantErr: []string{"spec.containers[0].lifecycle.preStop.tcpSocket"},
		},
		{
			name:    "hook without an action refused",
			input:   pod("    lifecycle: {postStart: {}}\n"),
			wantErr: []string{"spec.containers[0].lifecycle.postStart", "exec, httpGet or sleep"},
		},
		{
			name:    "empty exec command refused",
			input:   pod("    lifecycle: {postStart: {exec: {command: []}}}\n"),
			wantErr: []string{"spec.containers[0].lifecycle.postStart.exec.command", "empty"},
		},
	}
	runLeakCases(t, tests)
}
