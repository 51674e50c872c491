package api

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestPEFCredential(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b := MarshalPEFCredential(priv)
	got, err := ParsePEFCredential(b)
	if err != nil || !got.Equal(priv) {
		t.Fatalf("ParsePEFCredential(Marshal) = %v; want the same key", err)
	}
	for name, bad := range map[string][]byte{
		"data key":   make([]byte, DataKeySize),
		"truncated":  b[:len(b)-1],
		"long":       append(append([]byte(nil), b...), 0),
		"bad prefix": append([]byte("sealpod-pef-cred-v2\x00"), priv.Seed()...),
	} {
		if _, err := ParsePEFCredential(bad); !errors.Is(err, ErrPEFCredential) {
			t.Errorf("%s: ParsePEFCredential = %v, want ErrPEFCredential", name, err)
		}
	}
}

func TestWorkloadPEFCredential(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cred := hex.EncodeToString(pub)
	base := func(tees []string, cred string) Workload {
		return Workload{ID: "app", TEEs: tees, Measurements: map[string][]string{}, EnvelopeDigest: strings.Repeat("ab", 32),
			DataKey: make([]byte, DataKeySize), PEFCredential: cred}
	}
	tests := []struct {
		name string
		w    Workload
		ok   bool
	}{
		{"pef with credential", base([]string{TEEPEF}, cred), true},
		{"pef without credential", base([]string{TEEPEF}, ""), false},
		{"pef with uppercase hex", base([]string{TEEPEF}, strings.ToUpper(cred)), false},
		{"pef with short credential", base([]string{TEEPEF}, cred[:62]), false},
		{"credential without pef", base([]string{TEESim}, cred), false},
		{"sim-pef with credential", base([]string{TEESimPEF}, cred), true},
		{"sim-pef without credential", base([]string{TEESimPEF}, ""), false},
		{"pef and sim-pef with credential", base([]string{TEEPEF, TEESimPEF}, cred), true},
	}
	tests[4].w.Measurements[TEESim] = []string{strings.Repeat("cd", 48)}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.w.Validate()
			var fe *FieldError
			if tc.ok != (err == nil) || (!tc.ok && (!errors.As(err, &fe) || fe.Field != "pefCredential")) {
				t.Fatalf("Validate = %v, want ok=%v (or a pefCredential field error)", err, tc.ok)
			}
		})
	}
}
