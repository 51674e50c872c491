package spec

import (
	"strings"
	"testing"
)

func TestProbeStubAndValidation(t *testing.T) {
	if c, k, ok := ParseProbeStub(ProbeStub("web", ProbeReadiness)); !ok || c != "web" || k != ProbeReadiness {
		t.Fatalf("round trip: %q %q %v", c, k, ok)
	}
	for _, argv := range [][]string{{"/sealpod", "probe", "web"}, {"/sealpod", "probe", "web", "other"}, {"/bin/sealpod", "probe", "web", "liveness"}, {"/sealpod", "probe", "", "liveness"}} {
		if _, _, ok := ParseProbeStub(argv); ok {
			t.Errorf("%q parsed as a stub", argv)
		}
	}
	for _, tc := range []struct {
		p       Probe
		wantErr string
	}{
		{p: Probe{Kind: ProbeLiveness, Exec: []string{"x"}}},
		{p: Probe{Kind: ProbeStartup, HTTPGet: &HTTPGetAction{Port: 80, Scheme: "HTTPS", Headers: []HTTPHeader{{Name: "Authorization", Value: "b"}}}}},
		{p: Probe{Kind: "sometimes", Exec: []string{"x"}}, wantErr: "kind"},
		{p: Probe{Kind: ProbeLiveness}, wantErr: "exactly one"},
		{p: Probe{Kind: ProbeLiveness, Exec: []string{"x"}, HTTPGet: &HTTPGetAction{Port: 1}}, wantErr: "exactly one"},
		{p: Probe{Kind: ProbeLiveness, HTTPGet: &HTTPGetAction{Port: 0}}, wantErr: "port"},
		{p: Probe{Kind: ProbeLiveness, HTTPGet: &HTTPGetAction{Port: 80, Scheme: "ftp"}}, wantErr: "scheme"},
		{p: Probe{Kind: ProbeLiveness, HTTPGet: &HTTPGetAction{Port: 80, Headers: []HTTPHeader{{Name: "Bad Name"}}}}, wantErr: "headers[0]"},
		{p: Probe{Kind: ProbeLiveness, Exec: []string{"x"}, TimeoutSeconds: MaxProbeTimeoutSeconds + 1}, wantErr: "timeoutSeconds"},
	} {
		s := &Spec{Workload: "w", Containers: []Container{{Name: "c", Probes: []Probe{tc.p}}}}
		err := s.validateProbes()
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%+v: err %v, want %q", tc.p, err, tc.wantErr)
		}
	}
	dup := &Spec{Containers: []Container{{Name: "c", Probes: []Probe{{Kind: ProbeLiveness, Exec: []string{"a"}}, {Kind: ProbeLiveness, Exec: []string{"b"}}}}}}
	if err := dup.validateProbes(); err == nil || !strings.Contains(err.Error(), "second liveness") {
		t.Errorf("duplicate kind: %v", err)
	}
}
