package simsp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-sev-guest/kds"
	"github.com/sealpod/sealpod/simtee/amdsp"
)

// signedReport returns a genuine sim report (and its certificate table) for reportData; only
// the tests link the simulated signer, the guest side never does.
func signedReport(t testing.TB, reportData [64]byte) (report, certTable []byte) {
	t.Helper()
	c, err := amdsp.NewChain(amdsp.Options{RSABits: 2048, TCB: kds.TCBParts{BlSpl: 3, SnpSpl: 8, UcodeSpl: 115}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := amdsp.NewSigner(c)
	if err != nil {
		t.Fatal(err)
	}
	rep, tab, err := s.Report(amdsp.ReportOptions{ReportData: reportData, Measurement: [48]byte{7}, HostData: [32]byte{5}})
	if err != nil {
		t.Fatal(err)
	}
	return rep, tab
}

// TestParseResponse: the guest accepts only a well-formed report for its own REPORT_DATA and
// reads the launch values from it.
func TestParseResponse(t *testing.T) {
	rd := [64]byte{9}
	rep, tab := signedReport(t, rd)
	r, err := ParseResponse(&Response{Report: rep, CertTable: tab}, rd)
	if err != nil {
		t.Fatalf("good answer: %v", err)
	}
	if r.Measure != [48]byte{7} || r.HostData != [32]byte{5} || !bytes.Equal(r.Report, rep) || !bytes.Equal(r.CertTable, tab) {
		t.Fatalf("parsed %+v", r)
	}
	tests := []struct {
		name string
		resp Response
		rd   [64]byte
		want error
	}{
		{"refused", Response{Error: "no"}, rd, ErrRefused},
		{"foreign REPORT_DATA", Response{Report: rep, CertTable: tab}, [64]byte{8}, ErrReport},
		{"short report", Response{Report: rep[:100]}, rd, ErrReport},
		{"no report", Response{}, rd, ErrReport},
		{"bad certificate table", Response{Report: rep, CertTable: []byte{1, 2, 3}}, rd, ErrReport},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseResponse(&tc.resp, tc.rd); !errors.Is(err, tc.want) {
				t.Fatalf("ParseResponse: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestFrameLimits(t *testing.T) {
	frame := func(body string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
		return append(b, body...)
	}
	tests := map[string][]byte{
		"oversized":        binary.BigEndian.AppendUint32(nil, MaxFrame+1),
		"empty":            binary.BigEndian.AppendUint32(nil, 0),
		"short body":       binary.BigEndian.AppendUint32(nil, 10),
		"unknown field":    frame(`{"report":"","extra":1}`),
		"trailing object":  frame(`{"error":"x"}{}`),
		"trailing garbage": frame(`{"error":"x"} x`),
		"not JSON":         frame(`report`),
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			var r Response
			if err := ReadFrame(bytes.NewReader(data), &r); !errors.Is(err, ErrFrame) {
				t.Fatalf("ReadFrame: %v, want ErrFrame", err)
			}
		})
	}
	var r Response
	if err := ReadFrame(bytes.NewReader(frame(`{"error":"x"} `)), &r); err != nil || r.Error != "x" {
		t.Fatalf("frame with trailing space: %v %+v", err, r)
	}
}

// FuzzGuestDecode feeds arbitrary host answers to the guest's decoder.
func FuzzGuestDecode(f *testing.F) {
	rep, tab := signedReport(f, [64]byte{})
	var good bytes.Buffer
	if err := WriteFrame(&good, Response{Report: rep, CertTable: tab}); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add([]byte{0, 0, 0, 13, '{', '"', 'e', 'r', 'r', 'o', 'r', '"', ':', '"', 'x', '"', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Response
		if err := ReadFrame(bytes.NewReader(data), &r); err != nil {
			return
		}
		_, _ = ParseResponse(&r, [64]byte{})
	})
}
