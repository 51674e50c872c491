package attest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-tdx-guest/testing/testdata"
)

// FuzzCertTableExtent: the host's certificate table never panics the guest and a table that
// passes spans at least its entries and at most its bytes.
func FuzzCertTableExtent(f *testing.F) {
	entry := func(guid byte, off, n uint32) []byte {
		e := make([]byte, abi.CertTableEntrySize)
		e[0] = guid
		binary.LittleEndian.PutUint32(e[16:], off)
		binary.LittleEndian.PutUint32(e[20:], n)
		return e
	}
	good := append(append(entry(1, 48, 4), make([]byte, 24)...), 1, 2, 3, 4)
	f.Add(good)
	f.Add(append(good, make([]byte, 100)...))
	f.Add(append(entry(1, 0xffffffff, 0xffffffff), make([]byte, 24)...))
	f.Add(make([]byte, 24))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := certTableExtent(b)
		if err != nil {
			return
		}
		if n > len(b) || (n > 0 && n < 2*abi.CertTableEntrySize) {
			t.Fatalf("extent %d of a %d-byte table", n, len(b))
		}
	})
}

// FuzzEvidence: whatever the TEE interface returns (a report, a quote, a table), building
// the evidence never panics, and it succeeds only for the asked REPORT_DATA.
func FuzzEvidence(f *testing.F) {
	f.Add(make([]byte, abi.ReportSize), []byte{}, byte(0))
	f.Add(bytes.Clone(testdata.RawQuote), []byte{}, byte(1))
	f.Add(bytes.Clone(testdata.RawQuote[:600]), []byte{}, byte(1))
	f.Fuzz(func(t *testing.T, blob, table []byte, which byte) {
		var rd [64]byte
		rd[0] = 1
		var err error
		if which%2 == 0 {
			_, err = snpEvidence(blob, table, rd)
		} else {
			_, err = tdxEvidence(blob, rd)
		}
		if err != nil && !errors.Is(err, ErrEvidence) && !errors.Is(err, ErrReportData) {
			t.Fatalf("error without a kind: %v", err)
		}
	})
}
