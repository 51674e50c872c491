package manifests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

const testSeccompProfile = `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["add_key"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}`

func TestSealSeccompProfile(t *testing.T) {
	local := map[string][]byte{"profiles/deny-keys.json": []byte(testSeccompProfile)}
	tests := []struct {
		name     string
		podSC    string // pod securityContext (flow YAML) or ""
		cSC      string // container securityContext or ""
		opts     Options
		want     *spec.SeccompProfile // nil: none sealed (the agent's RuntimeDefault)
		wantErr  []string
		wantWarn string
	}{
		{name: "unset"},
		{name: "RuntimeDefault", cSC: "{seccompProfile: {type: RuntimeDefault}}", want: &spec.SeccompProfile{Type: spec.SeccompRuntimeDefault}},
		{name: "Unconfined is sealed with a warning", cSC: "{seccompProfile: {type: Unconfined}}", want: &spec.SeccompProfile{Type: spec.SeccompUnconfined},
			wantWarn: "containers[0].securityContext.seccompProfile.type: Unconfined"},
		{name: "pod level applies", podSC: "{seccompProfile: {type: Unconfined}}", want: &spec.SeccompProfile{Type: spec.SeccompUnconfined},
			wantWarn: "spec.template.spec.securityContext.seccompProfile.type"},
		{name: "container overrides pod", podSC: "{seccompProfile: {type: Unconfined}}", cSC: "{seccompProfile: {type: RuntimeDefault}}",
			want: &spec.SeccompProfile{Type: spec.SeccompRuntimeDefault}},
		{name: "Localhost content sealed", cSC: "{seccompProfile: {type: Localhost, localhostProfile: profiles/deny-keys.json}}", opts: Options{SeccompProfiles: local},
			want: &spec.SeccompProfile{Type: spec.SeccompLocalhost, LocalhostProfile: "profiles/deny-keys.json", Profile: []byte(testSeccompProfile)}},
		{name: "Localhost not given refused", cSC: "{seccompProfile: {type: Localhost, localhostProfile: other.json}}", opts: Options{SeccompProfiles: local},
			wantErr: []string{"containers[0].securityContext.seccompProfile.localhostProfile", `"other.json"`, "--seccomp-profile other.json=FILE"}},
		{name: "Localhost without name refused", cSC: "{seccompProfile: {type: Localhost}}",
			wantErr: []string{"seccompProfile.localhostProfile: missing"}},
		{name: "unknown type refused", cSC: "{seccompProfile: {type: Whatever}}",
			wantErr: []string{"seccompProfile.type", `"Whatever"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := ""
			if tt.podSC != "" {
				ps = "      securityContext: " + tt.podSC + "\n"
			}
			c := "{name: c, image: " + pinned
			if tt.cSC != "" {
				c += ", securityContext: " + tt.cSC
			}
			res := sealOrRefuse(t, deployment(ps+"      containers: ["+c+"}]\n"), tt.opts, tt.wantErr)
			if res == nil {
				return
			}
			sc := res.Workloads[0].Spec.Containers[0].SecurityContext
			var got *spec.SeccompProfile
			if sc != nil {
				got = sc.SeccompProfile
			}
			if (got == nil) != (tt.want == nil) || (got != nil && (got.Type != tt.want.Type || got.LocalhostProfile != tt.want.LocalhostProfile || string(got.Profile) != string(tt.want.Profile))) {
				t.Fatalf("sealed seccompProfile %+v, want %+v", got, tt.want)
			}
			if tt.wantWarn != "" && !strings.Contains(strings.Join(res.Warnings, "\n"), tt.wantWarn) {
				t.Errorf("warnings %q lack %q", res.Warnings, tt.wantWarn)
			}
			out, err := res.Render(testImageRef)
			if err != nil {
				t.Fatal(err)
			}
			// The placeholder keeps the profile type for Pod Security admission
			// (podsecurity.go), never a Localhost profile's name or content.
			for _, leak := range []string{"add_key", "localhostProfile", "deny-keys", "Localhost"} {
				if strings.Contains(string(out), leak) {
					t.Errorf("seccomp profile %q left in clear in the output:\n%s", leak, out)
				}
			}
			if tt.want != nil && !strings.Contains(string(out), "seccompProfile:") {
				t.Errorf("placeholder lost the seccompProfile type:\n%s", out)
			}
		})
	}
}

func TestReadSeccompProfiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(good, []byte(testSeccompProfile), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscallz":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSeccompProfiles([]string{"deny-keys.json=" + good})
	if err != nil || string(got["deny-keys.json"]) != testSeccompProfile {
		t.Fatalf("ReadSeccompProfiles: %v %v", got, err)
	}
	for _, tc := range []struct {
		values []string
		want   string
	}{
		{[]string{"x"}, "want NAME=FILE"},
		{[]string{"=" + good}, "want NAME=FILE"},
		{[]string{"a=" + good, "a=" + good}, "given twice"},
		{[]string{"a=" + filepath.Join(dir, "missing.json")}, "no such file"},
		{[]string{"a=" + dir}, "not a regular file"},
		{[]string{"a=" + bad}, `unknown field "syscallz"`},
	} {
		if _, err := ReadSeccompProfiles(tc.values); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--seccomp-profile") {
			t.Errorf("ReadSeccompProfiles(%q) = %v, want an error with %q", tc.values, err, tc.want)
		}
	}
}
