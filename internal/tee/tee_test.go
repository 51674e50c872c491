package tee

import (
	"bytes"
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want TEE
		ok   bool
	}{
		{"snp", SNP, true}, {"tdx", TDX, true}, {"pef", PEF, true}, {"sim", Sim, true}, {"sim-tdx", SimTDX, true}, {"sim-pef", SimPEF, true},
		{"", "", false}, {"SIM-TDX", "", false}, {"sim_tdx", "", false}, {"simtdx", "", false}, {"SNP", "", false}, {" snp", "", false}, {"sev", "", false}, {"SIM-PEF", "", false}, {"simpef", "", false},
	}
	for _, tc := range tests {
		got, err := Parse(tc.in)
		if tc.ok != (err == nil) || got != tc.want {
			t.Errorf("Parse(%q) = %q, %v; want %q ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if !tc.ok && !errors.Is(err, ErrUnknown) {
			t.Errorf("Parse(%q) error %v does not wrap ErrUnknown", tc.in, err)
		}
	}
	for _, k := range Known {
		if err := k.Validate(); err != nil {
			t.Errorf("Known %q does not validate: %v", k, err)
		}
	}
}

func TestFacts(t *testing.T) {
	var digest [DigestSize]byte
	for i := range digest {
		digest[i] = byte(i + 1)
	}
	tests := []struct {
		tee      TEE
		size     int
		hostData []byte
		evidence Evidence
	}{
		{SNP, 32, digest[:], EvidenceSNPReport},
		{Sim, 32, digest[:], EvidenceSNPReport},
		{TDX, 48, append(append([]byte(nil), digest[:]...), make([]byte, 16)...), EvidenceTDXQuote},
		{SimTDX, 48, append(append([]byte(nil), digest[:]...), make([]byte, 16)...), EvidenceTDXQuote},
		{PEF, 0, nil, EvidencePEFCredential},
		{SimPEF, 0, nil, EvidencePEFCredential},
		{"bogus", 0, nil, ""},
	}
	for _, tc := range tests {
		if got := tc.tee.HostDataSize(); got != tc.size {
			t.Errorf("%s.HostDataSize() = %d, want %d", tc.tee, got, tc.size)
		}
		if got := tc.tee.HostData(digest); !bytes.Equal(got, tc.hostData) || (got == nil) != (tc.hostData == nil) {
			t.Errorf("%s.HostData = %x, want %x", tc.tee, got, tc.hostData)
		}
		if got := tc.tee.Evidence(); got != tc.evidence {
			t.Errorf("%s.Evidence() = %q, want %q", tc.tee, got, tc.evidence)
		}
	}
}

func TestSimulated(t *testing.T) {
	for _, k := range Known {
		want := k == Sim || k == SimTDX || k == SimPEF
		if got := k.Simulated(); got != want {
			t.Errorf("%s.Simulated() = %v, want %v", k, got, want)
		}
	}
	if TEE("bogus").Simulated() {
		t.Error("unknown TEE reported as simulated")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"snp", "tdx", "pef", "sim", "sim-tdx", "sim-pef", "", "SNP"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrUnknown) || got != "" {
				t.Fatalf("Parse(%q) = %q, %v", s, got, err)
			}
			return
		}
		if string(got) != s || got.HostDataSize() == 0 && got.Evidence() != EvidencePEFCredential {
			t.Fatalf("Parse(%q) = %q", s, got)
		}
	})
}
