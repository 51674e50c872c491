package tdxquote

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-tdx-guest/testing/testdata"
)

func TestCheck(t *testing.T) {
	q, err := Parse(testdata.RawQuote)
	if err != nil {
		t.Fatalf("sample quote: %v", err)
	}
	rd := [64]byte(q.GetTdQuoteBody().GetReportData())
	if _, err := Check(testdata.RawQuote, rd); err != nil {
		t.Fatalf("Check with its own REPORT_DATA: %v", err)
	}
	other := rd
	other[0] ^= 1
	for _, tc := range []struct {
		name string
		b    []byte
		rd   [64]byte
		want error
	}{
		{"other REPORT_DATA", testdata.RawQuote, other, ErrReportData},
		{"empty", nil, rd, ErrMalformed},
		{"truncated", testdata.RawQuote[:600], rd, ErrMalformed},
		{"too large", append(bytes.Clone(testdata.RawQuote), make([]byte, MaxSize)...), rd, ErrMalformed},
	} {
		if _, err := Check(tc.b, tc.rd); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// FuzzParse: no input panics; an accepted quote has a body.
func FuzzParse(f *testing.F) {
	f.Add(bytes.Clone(testdata.RawQuote))
	f.Add(bytes.Clone(testdata.RawQuote[:700]))
	f.Add([]byte{4, 0, 2, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := Parse(b)
		if err == nil && q.GetTdQuoteBody() == nil {
			t.Fatal("parsed a quote without a body")
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error without its kind: %v", err)
		}
	})
}
