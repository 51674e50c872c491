package verify

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"github.com/sealpod/sealpod/internal/tee"
)

func TestLaunchHostData(t *testing.T) {
	d := sha256.Sum256([]byte("envelope"))
	padded := append(bytes.Clone(d[:]), make([]byte, 16)...)
	tests := []struct {
		name   string
		digest []byte
		tee    tee.TEE
		want   []byte
	}{
		{"snp", d[:], tee.SNP, d[:]},
		{"sim", d[:], tee.Sim, d[:]},
		{"tdx pads to 48", d[:], tee.TDX, padded},
		{"pef binds none", d[:], tee.PEF, nil},
		{"unknown tee", d[:], "sev", nil},
		{"no digest", nil, tee.SNP, nil},
		{"short digest", d[:20], tee.TDX, nil},
		{"already padded digest", padded, tee.TDX, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Policy{HostData: tc.digest}.LaunchHostData(tc.tee)
			if ok != (tc.want != nil) || !bytes.Equal(got, tc.want) {
				t.Fatalf("LaunchHostData(%s) = %x, %v; want %x", tc.tee, got, ok, tc.want)
			}
		})
	}
}
