package simsp

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/agent/attest/tdxquote"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/simtee/tdxqe"
)

// signedQuote returns a genuine sim-tdx quote for reportData (only the tests link the
// simulated signer).
func signedQuote(t testing.TB, reportData [64]byte) []byte {
	t.Helper()
	c, err := tdxqe.NewChain(tdxqe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := tdxqe.NewSigner(c)
	if err != nil {
		t.Fatal(err)
	}
	o := tdxqe.QuoteOptions{ReportData: reportData, MRTD: [48]byte{1}, MRConfigID: [48]byte{2}}
	o.RTMRs[1], o.RTMRs[2] = [48]byte{3}, [48]byte{4}
	q, err := s.Quote(o)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestParseQuoteResponse: the guest accepts only a well-formed v4 quote for its own
// REPORT_DATA, nothing beside it, and reads the launch values from it.
func TestParseQuoteResponse(t *testing.T) {
	rd := [64]byte{9}
	q := signedQuote(t, rd)
	got, err := ParseQuoteResponse(&Response{Quote: q}, rd)
	if err != nil {
		t.Fatalf("good answer: %v", err)
	}
	if got.MRConfigID != [48]byte{2} || got.MRTD != [48]byte{1} || got.RTMRs[1] != [48]byte{3} || got.RTMRs[2] != [48]byte{4} || !bytes.Equal(got.Quote, q) {
		t.Fatalf("launch values %+v", got)
	}
	flipped := bytes.Clone(q)
	flipped[0] = 3 // version 3
	tests := []struct {
		name string
		resp Response
		want error
	}{
		{"refused", Response{Error: "no"}, ErrRefused},
		{"empty", Response{}, ErrQuote},
		{"other REPORT_DATA", Response{Quote: signedQuote(t, [64]byte{8})}, tdxquote.ErrReportData},
		{"truncated", Response{Quote: q[:600]}, tdxquote.ErrMalformed},
		{"not version 4", Response{Quote: flipped}, tdxquote.ErrMalformed},
		{"too large", Response{Quote: append(bytes.Clone(q), make([]byte, tdxquote.MaxSize)...)}, tdxquote.ErrMalformed},
		{"quote and report", Response{Quote: q, Report: []byte{1}}, ErrQuote},
		{"quote and TEE", Response{Quote: q, TEE: "sim-tdx"}, ErrQuote},
	}
	for _, tc := range tests {
		if _, err := ParseQuoteResponse(&tc.resp, rd); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestParseTEEResponse: the host may name only a simulated TEE, and nothing else.
func TestParseTEEResponse(t *testing.T) {
	for _, tc := range []struct {
		resp Response
		want tee.TEE
		err  error
	}{
		{Response{TEE: "sim"}, tee.Sim, nil},
		{Response{TEE: "sim-tdx"}, tee.SimTDX, nil},
		{Response{TEE: "sim-pef"}, tee.SimPEF, nil},
		{Response{TEE: "sim-pef", File: []byte{1}}, "", ErrTEE},
		{Response{TEE: "tdx"}, "", ErrTEE},
		{Response{TEE: "snp"}, "", ErrTEE},
		{Response{TEE: ""}, "", ErrTEE},
		{Response{TEE: "sim-tdx", Quote: []byte{1}}, "", ErrTEE},
		{Response{Error: strings.Repeat("\x1b[2J", 100)}, "", ErrRefused},
	} {
		got, err := ParseTEEResponse(&tc.resp)
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("%+v: %q, %v; want %q, %v", tc.resp, got, err, tc.want, tc.err)
		}
		if err != nil && strings.ContainsAny(err.Error(), "\x1b") {
			t.Errorf("%+v: error carries control characters: %q", tc.resp, err)
		}
	}
}

// FuzzGuestDecodeQuote feeds arbitrary host answers to the guest's decoder of quote and TEE
// answers: nothing panics, an accepted quote carries the asked REPORT_DATA, an accepted TEE
// is a simulated one.
func FuzzGuestDecodeQuote(f *testing.F) {
	rd := [64]byte{5}
	var good, name bytes.Buffer
	if err := WriteFrame(&good, Response{Quote: signedQuote(f, rd)}); err != nil {
		f.Fatal(err)
	}
	if err := WriteFrame(&name, Response{TEE: "sim-tdx"}); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add(name.Bytes())
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Response
		if err := ReadFrame(bytes.NewReader(data), &r); err != nil {
			return
		}
		if q, err := ParseQuoteResponse(&r, rd); err == nil {
			parsed, perr := tdxquote.Check(q.Quote, rd)
			if perr != nil || !bytes.Equal(parsed.GetTdQuoteBody().GetMrConfigId(), q.MRConfigID[:]) {
				t.Fatalf("accepted quote does not re-parse for the REPORT_DATA: %v", perr)
			}
		}
		if got, err := ParseTEEResponse(&r); err == nil && !got.Simulated() {
			t.Fatalf("accepted TEE %q", got)
		}
	})
}
