package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
	"github.com/sealpod/sealpod/kbs/verify/sim"
	"github.com/sealpod/sealpod/simtee/tdxqe"
)

// TestSimRootsTDX: `sim-roots --tdx-key-out` adds a fake Intel root to the roots file and
// writes the node's PCK key file; the broker's verifiers from that roots file accept a quote
// the node signs with it and name it sim-tdx. Without --tdx-key-out the roots enable no
// sim-tdx verifier.
func TestSimRootsTDX(t *testing.T) {
	dir := t.TempDir()
	roots, key, pck := filepath.Join(dir, "roots.pem"), filepath.Join(dir, "vcek.pem"), filepath.Join(dir, "pck.pem")
	out, err := run(t, "sim-roots", "--out", roots, "--key-out", key, "--tdx-key-out", pck, "--rsa-bits", "2048")
	if err != nil || !strings.Contains(out, pck) {
		t.Fatalf("sim-roots: %q, %v", out, err)
	}
	vs, err := sim.LoadVerifiers(roots)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := vs[api.TEESimTDX]
	if !ok || vs[api.TEESim] == nil {
		t.Fatalf("verifiers %v: want sim and sim-tdx", vs)
	}
	s, err := tdxqe.LoadSigner(pck)
	if err != nil {
		t.Fatal(err)
	}
	o := tdxqe.QuoteOptions{ReportData: [64]byte{1}, MRTD: [48]byte{2}}
	o.RTMRs[1], o.RTMRs[2] = [48]byte{3}, [48]byte{4}
	digest := sha256.Sum256([]byte("envelope"))
	copy(o.MRConfigID[:], digest[:])
	q, err := s.Quote(o)
	if err != nil {
		t.Fatal(err)
	}
	ref := strings.Join([]string{hex.EncodeToString(o.MRTD[:]), "", hex.EncodeToString(o.RTMRs[1][:]), hex.EncodeToString(o.RTMRs[2][:]), ""}, ":")
	p := verify.Policy{Measurements: []string{ref}, HostData: digest[:], ReportData: o.ReportData[:]}
	res, err := v.Verify(context.Background(), &api.Evidence{TDX: &api.TDXEvidence{Quote: q}}, p)
	if err != nil || res.TEE != api.TEESimTDX {
		t.Fatalf("sim-tdx quote: %+v, %v", res, err)
	}

	// Roots without the Intel root: no sim-tdx.
	roots2 := filepath.Join(dir, "roots2.pem")
	if _, err := run(t, "sim-roots", "--out", roots2, "--key-out", filepath.Join(dir, "vcek2.pem"), "--rsa-bits", "2048"); err != nil {
		t.Fatal(err)
	}
	vs2, err := sim.LoadVerifiers(roots2)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := vs2[api.TEESimTDX]; ok {
		t.Fatal("roots without an Intel root enable sim-tdx")
	}
	// The sim (SNP) verifier refuses TDX evidence.
	_, err = vs2[api.TEESim].Verify(context.Background(), &api.Evidence{TDX: &api.TDXEvidence{Quote: q}}, p)
	var rej *verify.Rejection
	if !errors.As(err, &rej) {
		t.Fatalf("sim verifier on TDX evidence: %v", err)
	}
}
