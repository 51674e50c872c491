package spec

import (
	"errors"
	"strings"
	"testing"
)

func TestParseSeccomp(t *testing.T) {
	tests := []struct {
		name, doc, wantErr string
	}{
		{name: "kubelet-style profile", doc: `{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"},{"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]}`},
		{name: "empty", doc: ``, wantErr: "no content"},
		{name: "not JSON", doc: `defaultAction: SCMP_ACT_ALLOW`, wantErr: "invalid character"},
		{name: "unknown field", doc: `{"defaultAction":"SCMP_ACT_ALLOW","syscall":[]}`, wantErr: `unknown field "syscall"`},
		{name: "trailing document", doc: `{"defaultAction":"SCMP_ACT_ALLOW"} {}`, wantErr: "trailing data"},
		{name: "no default action", doc: `{"syscalls":[]}`, wantErr: "defaultAction"},
		{name: "unknown action", doc: `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_MAYBE"}]}`, wantErr: "syscalls[0]: action"},
		{name: "no names", doc: `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":[],"action":"SCMP_ACT_ERRNO"}]}`, wantErr: "syscalls[0]: names empty"},
		{name: "bad operator", doc: `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_SOMETIMES"}]}]}`, wantErr: "args[0]"},
		{name: "argument index beyond 5", doc: `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}`, wantErr: "index 6"},
		{name: "user notification", doc: `{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/x.sock"}`, wantErr: "listenerPath"},
		{name: "too large", doc: `{"defaultAction":"SCMP_ACT_ALLOW"` + strings.Repeat(" ", MaxSeccompProfileBytes) + `}`, wantErr: "at most"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSeccomp([]byte(tc.doc))
			if tc.wantErr == "" {
				if err != nil || s == nil {
					t.Fatalf("ParseSeccomp: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrSeccompProfile) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseSeccomp: %v, want ErrSeccompProfile with %q", err, tc.wantErr)
			}
		})
	}
}

func TestSeccompProfileFilterTypes(t *testing.T) {
	for _, tc := range []struct {
		p       SeccompProfile
		filter  bool
		wantErr string
	}{
		{p: SeccompProfile{Type: SeccompRuntimeDefault}},
		{p: SeccompProfile{Type: SeccompUnconfined}},
		{p: SeccompProfile{Type: SeccompLocalhost, Profile: []byte(`{"defaultAction":"SCMP_ACT_LOG"}`)}, filter: true},
		{p: SeccompProfile{Type: SeccompLocalhost}, wantErr: "no content"},
		{p: SeccompProfile{Type: SeccompUnconfined, LocalhostProfile: "x"}, wantErr: "carries a localhost profile"},
		{p: SeccompProfile{Type: ""}, wantErr: `type ""`},
	} {
		f, err := tc.p.Filter()
		if tc.wantErr != "" {
			if !errors.Is(err, ErrSeccompProfile) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%+v: err %v, want %q", tc.p, err, tc.wantErr)
			}
			continue
		}
		if err != nil || (f != nil) != tc.filter {
			t.Errorf("%+v: filter %v err %v", tc.p, f, err)
		}
	}
}

// FuzzParseSeccomp: a sealed profile is owner input, but the agent parses it again; it
// must never panic, and what it accepts names only known actions.
func FuzzParseSeccomp(f *testing.F) {
	f.Add([]byte(`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]}]}`))
	f.Add([]byte(`{"defaultAction":"SCMP_ACT_ALLOW"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSeccomp(b)
		if err != nil {
			return
		}
		for _, sc := range s.Syscalls {
			if len(sc.Names) == 0 {
				t.Fatalf("accepted a rule without names: %s", b)
			}
		}
	})
}
