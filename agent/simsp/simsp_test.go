package simsp

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/bundle/bundletest"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/kbs/simtee"
)

func signer(t testing.TB) *simtee.Signer {
	c, err := simtee.NewChain(simtee.Options{RSABits: 2048, TCB: kds.TCBParts{BlSpl: 3, SnpSpl: 8, UcodeSpl: 115}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := simtee.NewSigner(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	s := signer(t)
	guest, host := net.Pipe()
	launch := Launch{Measurement: sha512.Sum384([]byte("guest")), HostData: [32]byte{1, 2, 3}}
	n := 0
	src := LaunchFunc(func() Launch { n++; l := launch; l.HostData[31] = byte(n); return l })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, host, s, src, nil) }()
	c := NewClient(guest)
	for i := 1; i <= 2; i++ {
		var rd [64]byte
		rd[0] = byte(i)
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		r, err := c.GetReport(rctx, rd)
		rcancel()
		if err != nil {
			t.Fatal(err)
		}
		if r.Measure != launch.Measurement || r.HostData[31] != byte(i) || r.HostData[0] != 1 {
			t.Fatalf("report %d carries measurement %x host data %x", i, r.Measure, r.HostData)
		}
		rp, err := abi.ReportToProto(r.Evidence.SNP.Report)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rp.ReportData, rd[:]) {
			t.Fatal("report data differs")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func TestHostRefusals(t *testing.T) {
	s := signer(t)
	l := Launch{}
	for _, req := range []Request{{Version: 2, ReportData: make([]byte, 64)}, {Version: 1, ReportData: make([]byte, 63)}} {
		resp := answer(&req, s, l)
		if resp.Error == "" {
			t.Fatalf("request %+v answered", req)
		}
		if _, err := ParseResponse(resp, [64]byte{}); !errors.Is(err, ErrRefused) {
			t.Fatalf("ParseResponse(error answer): %v", err)
		}
	}
	// A report for other REPORT_DATA, or a short report, is refused by the guest.
	rep, tab, err := s.Report(simtee.ReportOptions{ReportData: [64]byte{9}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseResponse(&Response{Report: rep, CertTable: tab}, [64]byte{8}); !errors.Is(err, ErrReport) {
		t.Fatalf("foreign REPORT_DATA: %v", err)
	}
	if _, err := ParseResponse(&Response{Report: rep[:100]}, [64]byte{9}); !errors.Is(err, ErrReport) {
		t.Fatalf("short report: %v", err)
	}
	if _, err := ParseResponse(&Response{Report: rep, CertTable: []byte{1, 2, 3}}, [64]byte{9}); !errors.Is(err, ErrReport) {
		t.Fatalf("bad cert table: %v", err)
	}
}

func TestFrameLimits(t *testing.T) {
	var buf bytes.Buffer
	binary.Write(&buf, binary.BigEndian, uint32(MaxFrame+1))
	var r Response
	if err := ReadFrame(&buf, &r); !errors.Is(err, ErrFrame) {
		t.Fatalf("oversized frame: %v", err)
	}
	buf.Reset()
	binary.Write(&buf, binary.BigEndian, uint32(0))
	if err := ReadFrame(&buf, &r); !errors.Is(err, ErrFrame) {
		t.Fatalf("empty frame: %v", err)
	}
	buf.Reset()
	WriteFrame(&buf, map[string]any{"report": "", "extra": 1})
	if err := ReadFrame(&buf, &r); !errors.Is(err, ErrFrame) {
		t.Fatalf("unknown field: %v", err)
	}
}

// FuzzGuestDecode feeds arbitrary host answers to the guest's decoder.
func FuzzGuestDecode(f *testing.F) {
	s := signer(f)
	rep, tab, _ := s.Report(simtee.ReportOptions{})
	var good bytes.Buffer
	WriteFrame(&good, Response{Report: rep, CertTable: tab})
	f.Add(good.Bytes())
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add([]byte{0, 0, 0, 20, '{', '"', 'e', 'r', 'r', 'o', 'r', '"', ':', '"', 'x', '"', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Response
		if err := ReadFrame(bytes.NewReader(data), &r); err != nil {
			return
		}
		_, _ = ParseResponse(&r, [64]byte{})
	})
}

// FuzzHostDecode feeds arbitrary guest requests to the host's decoder and signer.
func FuzzHostDecode(f *testing.F) {
	s := signer(f)
	var good bytes.Buffer
	WriteFrame(&good, Request{Version: 1, ReportData: make([]byte, 64)})
	f.Add(good.Bytes())
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req Request
		if err := ReadFrame(bytes.NewReader(data), &req); err != nil {
			return
		}
		resp := answer(&req, s, Launch{})
		if resp.Error == "" && len(resp.Report) != abi.ReportSize {
			t.Fatalf("answer without error has a %d-byte report", len(resp.Report))
		}
	})
}

// TestLaunchFromBundle: the sim AMD-SP reports the measurement guest.json carries (the one
// owners register) for the bundle it boots, and a changed initrd changes it.
func TestLaunchFromBundle(t *testing.T) {
	b, err := bundle.Load(bundletest.Write(t))
	if err != nil {
		t.Fatal(err)
	}
	env := []byte("envelope bytes")
	l, err := LaunchFromBundle(b, env)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(l.Measurement[:]) != b.Config.Measurements.Sim {
		t.Fatalf("launch measurement %x, guest.json says %s", l.Measurement, b.Config.Measurements.Sim)
	}
	if hex.EncodeToString(l.HostData[:]) != envelope.Digest(env) {
		t.Fatal("HOST_DATA is not the envelope digest")
	}
	b.Initrd = append(b.Initrd, 0)
	l2, err := LaunchFromBundle(b, env)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Measurement == l.Measurement {
		t.Fatal("a changed initrd gives the same measurement")
	}
}
