package spserver

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/guest-image/bundletest"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/simtee/amdsp"
)

func signer(t testing.TB) *amdsp.Signer {
	c, err := amdsp.NewChain(amdsp.Options{RSABits: 2048, TCB: kds.TCBParts{BlSpl: 3, SnpSpl: 8, UcodeSpl: 115}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := amdsp.NewSigner(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRoundTrip: the guest client (agent/simsp) and this server agree on the wire, and every
// report carries the launch values of the moment it was asked for.
func TestRoundTrip(t *testing.T) {
	s := signer(t)
	guest, host := net.Pipe()
	launch := Launch{Measurement: sha512.Sum384([]byte("guest")), HostData: [32]byte{1, 2, 3}}
	n := 0
	src := LaunchFunc(func() Launch { n++; l := launch; l.HostData[31] = byte(n); return l })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, host, s, src, nil) }()
	c := simsp.NewClient(guest)
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
		rp, err := abi.ReportToProto(r.Report)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rp.ReportData, rd[:]) {
			t.Fatal("report data differs")
		}
		var tab abi.CertTable
		if err := tab.Unmarshal(r.CertTable); err != nil || len(tab.Entries) != 3 {
			t.Fatalf("certificate table: %d entries, %v", len(tab.Entries), err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	s := signer(t)
	for name, req := range map[string]simsp.Request{
		"version 2":               {Version: 2, ReportData: make([]byte, 64)},
		"63 bytes of REPORT_DATA": {Version: 1, ReportData: make([]byte, 63)},
		"no REPORT_DATA":          {Version: 1},
	} {
		t.Run(name, func(t *testing.T) {
			resp := answer(&req, s, Launch{})
			if resp.Error == "" || resp.Report != nil {
				t.Fatalf("request %+v answered with a report", req)
			}
			if _, err := simsp.ParseResponse(resp, [64]byte{}); !errors.Is(err, simsp.ErrRefused) {
				t.Fatalf("guest ParseResponse(error answer): %v, want ErrRefused", err)
			}
		})
	}
}

// FuzzHostDecode feeds arbitrary guest requests to the host's decoder and signer.
func FuzzHostDecode(f *testing.F) {
	s := signer(f)
	var good bytes.Buffer
	if err := simsp.WriteFrame(&good, simsp.Request{Version: 1, ReportData: make([]byte, 64)}); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req simsp.Request
		if err := simsp.ReadFrame(bytes.NewReader(data), &req); err != nil {
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
	if l.HostData != envelope.Sum(env) {
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

// TestServeNamesSim: the simulated AMD-SP says it is sim and refuses TDX quote requests.
func TestServeNamesSim(t *testing.T) {
	guest, host := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, host, signer(t), Launch{}, nil) }()
	c := simsp.NewClient(guest)
	if got, err := c.TEE(ctx); err != nil || got != tee.Sim {
		t.Fatalf("TEE = %q, %v; want sim", got, err)
	}
	if _, err := c.GetQuote(ctx, [64]byte{}); !errors.Is(err, simsp.ErrRefused) {
		t.Fatalf("quote from the simulated AMD-SP: %v, want ErrRefused", err)
	}
	guest.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
