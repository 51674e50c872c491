package tdx

import (
	"context"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/testing/testdata"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
)

// TestRealQuote verifies go-tdx-guest's real sample quote (Sapphire Rapids) against Intel's
// root built into the library, offline: the production path, no fake chain.
func TestRealQuote(t *testing.T) {
	q := sampleQuote(t)
	pck := samplePCK(t, q)
	body := q.GetTdQuoteBody()
	now := pck.NotBefore.Add(24 * time.Hour)
	v := New(Config{Now: func() time.Time { return now }})
	mrcfg := body.GetMrConfigId()
	p := verify.Policy{
		Measurements: []string{hex.EncodeToString(body.GetMrTd()) + "::" + hex.EncodeToString(body.GetRtmrs()[1]) + ":" + hex.EncodeToString(body.GetRtmrs()[2]) + ":"},
		HostData:     mrcfg[:32],
		ReportData:   body.GetReportData(),
	}
	ev := &api.Evidence{TDX: &api.TDXEvidence{Quote: testdata.RawQuote}}
	res, err := v.Verify(context.Background(), ev, p)
	if err != nil {
		t.Fatalf("real quote: %v", err)
	}
	if res.Measurement != p.Measurements[0] {
		t.Fatalf("result %+v", res)
	}
	var rej *verify.Rejection
	bad := append([]byte(nil), testdata.RawQuote...)
	bad[48+136] ^= 1 // MRTD
	if _, err := v.Verify(context.Background(), &api.Evidence{TDX: &api.TDXEvidence{Quote: bad}}, p); !errors.As(err, &rej) || rej.Field != verify.FieldSignature {
		t.Fatalf("modified real quote: %v", err)
	}
}
