package spec

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

func TestUnmarshal(t *testing.T) {
	good := &Spec{Version: Version, Workload: "w", Containers: []Container{{Name: "a"}}, InitContainers: []Container{{Name: "i"}}, Policy: Policy{Logs: LogsDeny, Exec: []ExecRule{{Container: "a", Argv: []string{"/bin/check", "-q"}}}}}
	raw, err := good.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Unmarshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := s.Container("i"); !ok || c.Name != "i" {
		t.Error("init container not found")
	}
	if _, ok := s.Container("nope"); ok {
		t.Error("unknown container found")
	}
	for _, tc := range []struct {
		argv []string
		want bool
	}{
		{[]string{"/bin/check", "-q"}, true},
		{[]string{"/bin/check"}, false},
		{[]string{"/bin/check", "-q", "x"}, false},
		{[]string{"/bin/sh", "-q"}, false},
	} {
		if got := s.Policy.AllowsExec("a", tc.argv); got != tc.want {
			t.Errorf("AllowsExec(a, %q) = %v", tc.argv, got)
		}
	}
	if s.Policy.AllowsExec("i", []string{"/bin/check", "-q"}) {
		t.Error("exec rule leaked to another container")
	}
	bad := map[string]string{
		`{"version":2}`: "version: unsupported version 2",
		`{"version":1,"workload":"w","policy":{"logs":"allow"}}`:                         "containers: empty",
		`{"version":1,"workload":"w","containers":[{"name":"a"}],"policy":{"logs":"x"}}`: "policy.logs",
		`{"version":1`: "sealed spec",
		`{"version":1,"workload":"w","containers":[{"name":"a"}],"mirrors":[{"registry":"gcr.io","endpoint":"h/x"}],"policy":{"logs":"allow"}}`: "mirrors[0]",
		`{"version":1,"workload":"w","containers":[{"name":"a"}],"mirrors":[{"registry":"","endpoint":"h"}],"policy":{"logs":"allow"}}`:         "mirrors[0]",
	}
	for in, want := range bad {
		if _, err := Unmarshal([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", in, err, want)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte(`{"version":1,"workload":"w","containers":[{"name":"a","env":[{"name":"x","value":"y"}]}],"policy":{"logs":"allow"}}`))
	f.Add([]byte(`{"version":1,"workload":"w","containers":[{"name":"a","hooks":[{"kind":"postStart","exec":["/bin/init"]},{"kind":"preStop","httpGet":{"path":"/drain","port":8080,"headers":[{"name":"X-T","value":"v"}]}}]}],"policy":{"logs":"allow"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Unmarshal(data)
		if err != nil {
			return
		}
		if len(s.Containers) == 0 || (s.Policy.Logs != LogsAllow && s.Policy.Logs != LogsDeny) {
			t.Fatal("invalid spec accepted")
		}
		for _, c := range append(s.InitContainers, s.Containers...) {
			for _, h := range c.Hooks {
				if !validHookKind(h.Kind) || (len(h.Exec) > 0) == (h.HTTPGet != nil) || h.HTTPGet != nil && (h.HTTPGet.Port < 1 || h.HTTPGet.Port > 65535) {
					t.Fatalf("invalid hook accepted: %+v", h)
				}
			}
		}
	})
}

func TestHubAlias(t *testing.T) {
	if DockerHub != name.DefaultRegistry {
		t.Fatalf("DockerHub %q, but references carry %q", DockerHub, name.DefaultRegistry)
	}
	for in, want := range map[string]string{
		"docker.io": DockerHub, "registry-1.docker.io": DockerHub, "index.docker.io": DockerHub,
		"gcr.io": "gcr.io", "10.244.0.1:5000": "10.244.0.1:5000", "Docker.io": "Docker.io",
	} {
		if got := HubAlias(in); got != want {
			t.Errorf("HubAlias(%q) = %q, want %q", in, got, want)
		}
	}
}
