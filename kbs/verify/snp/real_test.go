package snp

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/verify/testdata"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
)

// TestRealMilanReport verifies a real AMD Milan attestation report (go-sev-guest's sample,
// version 2) with the AMD roots built into the library and its real VCEK served from the
// offline cert cache: the production path, no fake roots.
func TestRealMilanReport(t *testing.T) {
	raw := testdata.AttestationBytes[:abi.ReportSize]
	rep, err := abi.ReportToProto(raw)
	if err != nil {
		t.Fatal(err)
	}
	vcek, err := x509.ParseCertificate(testdata.VcekBytes)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(CachePath(dir, rep.GetChipId(), rep.GetReportedTcb()), testdata.VcekBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	now := vcek.NotBefore.Add(24 * time.Hour)
	v := New(Config{CertCacheDir: dir, Now: func() time.Time { return now }})
	p := verify.Policy{
		Measurements: []string{hex.EncodeToString(rep.GetMeasurement())},
		HostData:     rep.GetHostData(),
		ReportData:   rep.GetReportData(),
	}
	ev := &api.Evidence{SNP: &api.SNPEvidence{Report: raw}}
	pol, _ := abi.ParseSnpPolicy(rep.GetPolicy())
	res, err := v.Verify(context.Background(), ev, p)
	var rej *verify.Rejection
	switch {
	case pol.Debug:
		// The sample VM allowed debugging: everything up to the debug check passed.
		t.Logf("real Milan report refused as expected: %v", err)
		if !errors.As(err, &rej) || rej.Field != verify.FieldDebug {
			t.Fatalf("real report: %v, want the debug rejection", err)
		}
	case err != nil:
		t.Fatalf("real report: %v", err)
	default:
		t.Logf("real Milan report accepted: %+v", res)
	}
	// The same report with one measurement bit flipped no longer verifies.
	bad := append([]byte(nil), raw...)
	bad[0x90] ^= 1
	if _, err := v.Verify(context.Background(), &api.Evidence{SNP: &api.SNPEvidence{Report: bad}}, p); !errors.As(err, &rej) || rej.Field != verify.FieldSignature {
		t.Fatalf("modified real report: %v", err)
	}
}
