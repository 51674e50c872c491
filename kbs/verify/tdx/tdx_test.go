package tdx

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	tdxabi "github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/testing/testdata"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
	"github.com/sealpod/sealpod/simtee/tdxqe"
)

func sampleQuote(t testing.TB) *pb.QuoteV4 {
	q, err := tdxabi.QuoteToProto(testdata.RawQuote)
	if err != nil {
		t.Fatal(err)
	}
	return q.(*pb.QuoteV4)
}

func samplePCK(t testing.TB, q *pb.QuoteV4) *x509.Certificate {
	chain := q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	b, _ := pem.Decode(chain)
	if b == nil {
		t.Fatal("sample quote has no PCK chain")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fakeIntel signs quotes under a fresh fake Intel chain: package simtee/tdxqe, the signer of
// the sim-tdx nodes (root -> PCK platform CA -> PCK certificate, QE report, attestation key).
type fakeIntel struct {
	signer *tdxqe.Signer
	pool   *x509.CertPool
}

func newFakeIntel(t testing.TB) *fakeIntel {
	t.Helper()
	c, err := tdxqe.NewChain(tdxqe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := tdxqe.NewSigner(c)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeIntel{signer: s, pool: c.Roots()}
}

// sampleOptions are quote options with the sample quote's MRTD and RTMRs (values of a real TD).
func sampleOptions(t testing.TB) tdxqe.QuoteOptions {
	b := sampleQuote(t).GetTdQuoteBody()
	var o tdxqe.QuoteOptions
	copy(o.MRTD[:], b.GetMrTd())
	for i, r := range b.GetRtmrs() {
		copy(o.RTMRs[i][:], r)
	}
	return o
}

func (f *fakeIntel) quote(t testing.TB, o tdxqe.QuoteOptions) []byte {
	t.Helper()
	raw, err := f.signer.Quote(o)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestVerifyTDX(t *testing.T) {
	intel := newFakeIntel(t)
	other := newFakeIntel(t)

	nonce, pub := make([]byte, 32), make([]byte, 32)
	rand.Read(nonce)
	rand.Read(pub)
	rd := api.ReportData(nonce, pub)
	digest := sha256.Sum256([]byte("envelope"))
	cfg := make([]byte, 48)
	copy(cfg, digest[:])

	base := sampleOptions(t)
	base.ReportData = rd
	copy(base.MRConfigID[:], cfg)
	mrtd := hex.EncodeToString(base.MRTD[:])
	rtmr := func(i int) string { return hex.EncodeToString(base.RTMRs[i][:]) }
	pinned := mrtd + ":" + rtmr(0) + ":" + rtmr(1) + ":" + rtmr(2) + ":"
	policy := verify.Policy{
		Measurements: []string{"00" + pinned[2:], pinned},
		HostData:     digest[:],
		ReportData:   rd[:],
	}
	parsed, err := Parse(&api.TDXEvidence{Quote: intel.quote(t, base)})
	if err != nil {
		t.Fatal(err)
	}
	high := append([]byte(nil), parsed.GetTdQuoteBody().GetTeeTcbSvn()...)
	high[0]++

	tests := []struct {
		name      string
		mutate    func(o *tdxqe.QuoteOptions)
		raw       func(raw []byte) []byte
		policy    func(p *verify.Policy)
		signer    *fakeIntel
		roots     *x509.CertPool
		wantField string
	}{
		{name: "good"},
		{name: "good, rtmr0 and rtmr3 open", policy: func(p *verify.Policy) { p.Measurements = []string{mrtd + "::" + rtmr(1) + ":" + rtmr(2) + ":"} }},
		// A policy that leaves the kernel (RTMR[1]) or initrd (RTMR[2]) open is never appraised.
		{name: "policy mrtd only", policy: func(p *verify.Policy) { p.Measurements = []string{mrtd} }, wantField: verify.FieldPolicy},
		{name: "policy empty rtmrs", policy: func(p *verify.Policy) { p.Measurements = []string{mrtd + "::::"} }, wantField: verify.FieldPolicy},
		{name: "policy rtmr1 open", policy: func(p *verify.Policy) { p.Measurements = []string{mrtd + ":" + rtmr(0) + "::" + rtmr(2) + ":"} }, wantField: verify.FieldPolicy},
		{name: "policy rtmr2 open", policy: func(p *verify.Policy) { p.Measurements = []string{mrtd + ":" + rtmr(0) + ":" + rtmr(1) + "::"} }, wantField: verify.FieldPolicy},
		{name: "policy with one open value", policy: func(p *verify.Policy) { p.Measurements = append(p.Measurements, mrtd) }, wantField: verify.FieldPolicy},
		{name: "wrong rtmr1", mutate: func(o *tdxqe.QuoteOptions) { o.RTMRs[1][0] ^= 1 }, wantField: verify.FieldMeasurement},
		{name: "wrong rtmr2", mutate: func(o *tdxqe.QuoteOptions) { o.RTMRs[2][0] ^= 1 }, wantField: verify.FieldMeasurement},
		{name: "wrong mrtd", mutate: func(o *tdxqe.QuoteOptions) { o.MRTD[0] ^= 1 }, wantField: verify.FieldMeasurement},
		{name: "wrong rtmr0", mutate: func(o *tdxqe.QuoteOptions) { o.RTMRs[0][0] ^= 1 }, wantField: verify.FieldMeasurement},
		{name: "wrong mrconfigid", mutate: func(o *tdxqe.QuoteOptions) { o.MRConfigID[0] ^= 1 }, wantField: verify.FieldMrConfigID},
		{name: "wrong report data", mutate: func(o *tdxqe.QuoteOptions) { o.ReportData[0] ^= 1 }, wantField: verify.FieldReportData},
		{name: "debug on", mutate: func(o *tdxqe.QuoteOptions) { o.Debug = true }, wantField: verify.FieldDebug},
		{name: "tcb too low", policy: func(p *verify.Policy) { p.MinTDXTeeTCBSVN = high }, wantField: verify.FieldTCB},
		{name: "tampered body", raw: func(raw []byte) []byte { raw[48+200] ^= 1; return raw }, wantField: verify.FieldSignature},
		{name: "foreign root", signer: other, wantField: verify.FieldChain},
		{name: "fake chain against Intel's real root", roots: x509.NewCertPool(), wantField: verify.FieldChain},
		{name: "truncated", raw: func(raw []byte) []byte { return raw[:600] }, wantField: verify.FieldEvidence},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			if tc.mutate != nil {
				tc.mutate(&o)
			}
			signer := intel
			if tc.signer != nil {
				signer = tc.signer
			}
			raw := signer.quote(t, o)
			if tc.raw != nil {
				raw = tc.raw(raw)
			}
			p := policy
			if tc.policy != nil {
				tc.policy(&p)
			}
			roots := intel.pool
			if tc.roots != nil {
				roots = tc.roots
			}
			v := New(Config{TrustedRoots: roots})
			res, err := v.Verify(context.Background(), &api.Evidence{TDX: &api.TDXEvidence{Quote: raw}}, p)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if res.TEE != api.TEETDX {
					t.Fatalf("result %+v", res)
				}
				return
			}
			var rej *verify.Rejection
			if !errors.As(err, &rej) || rej.Field != tc.wantField {
				t.Fatalf("Verify error %v, want rejection of %s", err, tc.wantField)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(testdata.RawQuote)
	f.Add([]byte{4, 0, 2, 0})
	f.Fuzz(func(t *testing.T, raw []byte) {
		q, err := Parse(&api.TDXEvidence{Quote: raw})
		if err == nil && q.GetTdQuoteBody() == nil {
			t.Fatal("parsed quote without body")
		}
	})
}

// FuzzVerify mutates a validly re-signed quote and runs the whole verifier: nothing may panic
// and nothing but the original may be accepted.
func FuzzVerify(f *testing.F) {
	intel := newFakeIntel(f)
	var rd [64]byte
	digest := make([]byte, 32)
	o := sampleOptions(f)
	good := intel.quote(f, o)
	pinned := strings.Join([]string{hex.EncodeToString(o.MRTD[:]), "", hex.EncodeToString(o.RTMRs[1][:]), hex.EncodeToString(o.RTMRs[2][:]), ""}, ":")
	p := verify.Policy{Measurements: []string{pinned}, HostData: digest, ReportData: rd[:]}
	v := New(Config{TrustedRoots: intel.pool})
	if _, err := v.Verify(context.Background(), &api.Evidence{TDX: &api.TDXEvidence{Quote: good}}, p); err != nil {
		f.Fatalf("seed quote: %v", err)
	}
	f.Add(good)
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, err := v.Verify(context.Background(), &api.Evidence{TDX: &api.TDXEvidence{Quote: raw}}, p)
		if err == nil && !bytes.Equal(raw, good) {
			// Bytes after the signed region (extra bytes) may differ; anything signed may not.
			if len(raw) < 632 || !bytes.Equal(raw[:632], good[:632]) {
				t.Fatalf("accepted a modified quote")
			}
		}
	})
}
