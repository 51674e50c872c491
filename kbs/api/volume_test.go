package api

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// specValid is the check the sealed spec makes when it builds an identity
// (spec.Claim.Identity): the broker must accept exactly those.
func specValid(v string) bool {
	ns, claim, ok := strings.Cut(v, "/")
	return ok && spec.ValidVolumeName(ns) && spec.ValidObjectName(claim)
}

func TestValidateVolumeIdentity(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want string // "" = valid
	}{
		{"default/data-db-0", ""},
		{"kube-system/www.example-1", ""},
		{strings.Repeat("a", 63) + "/" + strings.Repeat("b", 253), ""},
		{"0/0", ""},
		{"", "not <namespace>/<claim>"},
		{"data", "not <namespace>/<claim>"},
		{"/data", "namespace \"\""},
		{"default/", "claim \"\""},
		{"Default/data", "not a DNS-1123 label"},
		{"a.b/data", "not a DNS-1123 label"},
		{"-a/data", "not a DNS-1123 label"},
		{strings.Repeat("a", 64) + "/c", "not a DNS-1123 label"},
		{"ns/a/b", "not a DNS-1123 subdomain"},
		{"ns/..", "not a DNS-1123 subdomain"},
		{"ns/a..b", "not a DNS-1123 subdomain"},
		{"ns/Data", "not a DNS-1123 subdomain"},
		{"ns/a_b", "not a DNS-1123 subdomain"},
		{"ns/data\n", "not a DNS-1123 subdomain"},
		{"ns/" + strings.Repeat("b", 254), "not a DNS-1123 subdomain"},
		{strings.Repeat("a", 63) + "/" + strings.Repeat("b", 254), "longer than 317"},
	} {
		err := ValidateVolumeIdentity(tc.v)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.v, err)
		case tc.want != "" && (err == nil || !errors.Is(err, ErrVolumeIdentity) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want ErrVolumeIdentity saying %q", tc.v, err, tc.want)
		}
		if (err == nil) != specValid(tc.v) {
			t.Errorf("%q: broker says valid=%v, imagebuilder/spec says %v", tc.v, err == nil, specValid(tc.v))
		}
	}
}

func TestDecodeVolumeRequests(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		commit     bool
		want       string // "" = accepted
	}{
		{"begin", `{"volume":"ns/c"}`, false, ""},
		{"begin unknown field", `{"volume":"ns/c","generation":1}`, false, "unknown field"},
		{"begin trailing", `{"volume":"ns/c"}x`, false, "trailing"},
		{"begin bad identity", `{"volume":"ns"}`, false, "field volume"},
		{"begin empty", ``, false, "EOF"},
		{"commit", `{"volume":"ns/c","generation":18446744073709551615}`, true, ""},
		{"commit zero", `{"volume":"ns/c","generation":0}`, true, "0 is never pending"},
		{"commit missing generation", `{"volume":"ns/c"}`, true, "0 is never pending"},
		{"commit overflow", `{"volume":"ns/c","generation":18446744073709551616}`, true, "cannot unmarshal"},
		{"commit float", `{"volume":"ns/c","generation":1.5}`, true, "cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.commit {
				_, err = DecodeVolumeCommitRequest([]byte(tc.body))
			} else {
				_, err = DecodeVolumeBeginRequest([]byte(tc.body))
			}
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// FuzzVolumeRequests: the decoders never panic, accept only identities imagebuilder/spec
// would make, and what they accept encodes back to an equal request.
func FuzzVolumeRequests(f *testing.F) {
	for _, s := range []string{`{"volume":"ns/c"}`, `{"volume":"ns/c","generation":3}`, `{"volume":"a.b/c"}`, `{"volume":"ns/c.d-e"}`, `{}`, `[`, `{"volume":"ns/c"} `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := DecodeVolumeBeginRequest(b); err == nil {
			if !specValid(r.Volume) {
				t.Fatalf("begin accepted %q, which imagebuilder/spec refuses", r.Volume)
			}
			out, _ := json.Marshal(r)
			if again, err := DecodeVolumeBeginRequest(out); err != nil || again != r {
				t.Fatalf("re-decoding %s: %+v %v", out, again, err)
			}
		}
		if r, err := DecodeVolumeCommitRequest(b); err == nil {
			if !specValid(r.Volume) || r.Generation == 0 {
				t.Fatalf("commit accepted %+v", r)
			}
			out, _ := json.Marshal(r)
			if again, err := DecodeVolumeCommitRequest(out); err != nil || again != r {
				t.Fatalf("re-decoding %s: %+v %v", out, again, err)
			}
		}
		s := string(b)
		if (ValidateVolumeIdentity(s) == nil) != specValid(s) {
			t.Fatalf("%q: broker and imagebuilder/spec disagree", s)
		}
	})
}
