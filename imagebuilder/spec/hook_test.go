package spec

import (
	"strings"
	"testing"
)

func TestHookStubAndValidation(t *testing.T) {
	for _, kind := range []string{HookPostStart, HookPreStop} {
		if c, k, ok := ParseHookStub(HookStub("web", kind)); !ok || c != "web" || k != kind {
			t.Fatalf("round trip %s: %q %q %v", kind, c, k, ok)
		}
	}
	for _, argv := range [][]string{
		{"/sealpod", "hook", "web"},
		{"/sealpod", "hook", "web", "liveness"},
		{"/bin/sealpod", "hook", "web", "preStop"},
		{"/sealpod", "hook", "", "preStop"},
		{"/sealpod", "hook", "web", "preStop", "x"},
		ProbeStub("web", ProbeLiveness),
	} {
		if _, _, ok := ParseHookStub(argv); ok {
			t.Errorf("%q parsed as a hook stub", argv)
		}
	}
	if _, _, ok := ParseProbeStub(HookStub("web", HookPreStop)); ok {
		t.Error("a hook stub parsed as a probe stub")
	}
	for _, tc := range []struct {
		name    string
		h       Hook
		wantErr string
	}{
		{name: "exec", h: Hook{Kind: HookPostStart, Exec: []string{"x"}}},
		{name: "http", h: Hook{Kind: HookPreStop, HTTPGet: &HTTPGetAction{Path: "/drain", Port: 80, Scheme: "HTTPS", Headers: []HTTPHeader{{Name: "Authorization", Value: "b"}}}}},
		{name: "bad kind", h: Hook{Kind: "liveness", Exec: []string{"x"}}, wantErr: "kind"},
		{name: "no action", h: Hook{Kind: HookPreStop}, wantErr: "exactly one"},
		{name: "two actions", h: Hook{Kind: HookPreStop, Exec: []string{"x"}, HTTPGet: &HTTPGetAction{Port: 1}}, wantErr: "exactly one"},
		{name: "empty argv[0]", h: Hook{Kind: HookPreStop, Exec: []string{""}}, wantErr: "exec[0]"},
		{name: "port", h: Hook{Kind: HookPreStop, HTTPGet: &HTTPGetAction{Port: 70000}}, wantErr: "httpGet.port"},
		{name: "scheme", h: Hook{Kind: HookPreStop, HTTPGet: &HTTPGetAction{Port: 80, Scheme: "gopher"}}, wantErr: "httpGet.scheme"},
		{name: "header name", h: Hook{Kind: HookPreStop, HTTPGet: &HTTPGetAction{Port: 80, Headers: []HTTPHeader{{Name: "a:b"}}}}, wantErr: "headers[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Spec{Workload: "w", Containers: []Container{{Name: "c", Hooks: []Hook{tc.h}}}}
			err := s.validateHooks()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err %v, want %q", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "container c: hooks[0]") {
				t.Errorf("error does not name the container and field: %v", err)
			}
		})
	}
	dup := &Spec{Containers: []Container{{Name: "c", Hooks: []Hook{{Kind: HookPreStop, Exec: []string{"a"}}, {Kind: HookPreStop, Exec: []string{"b"}}}}}}
	if err := dup.validateHooks(); err == nil || !strings.Contains(err.Error(), "second preStop") {
		t.Errorf("duplicate kind: %v", err)
	}
	// Unmarshal runs the hook checks.
	raw := `{"version":1,"workload":"w","containers":[{"name":"a","hooks":[{"kind":"preStop"}]}],"policy":{"logs":"allow"}}`
	if _, err := Unmarshal([]byte(raw)); err == nil || !strings.Contains(err.Error(), "hooks[0]") {
		t.Errorf("Unmarshal accepted a hook without an action: %v", err)
	}
	c := Container{Hooks: []Hook{{Kind: HookPreStop, Exec: []string{"drain"}}}}
	if h, ok := c.Hook(HookPreStop); !ok || h.Exec[0] != "drain" {
		t.Errorf("Hook(preStop) = %+v %v", h, ok)
	}
	if _, ok := c.Hook(HookPostStart); ok {
		t.Error("Hook(postStart) found a hook the container lacks")
	}
}
