package tdxsim_test

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/guest-image/measure/measuretest"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
	"github.com/sealpod/sealpod/kbs/verify/tdx"
	"github.com/sealpod/sealpod/simtee/tdxqe"
	"github.com/sealpod/sealpod/simtee/tdxsim"
)

var (
	chainOnce sync.Once
	chain     *tdxqe.Chain
	chainErr  error
)

func testChain(t testing.TB) *tdxqe.Chain {
	t.Helper()
	chainOnce.Do(func() { chain, chainErr = tdxqe.NewChain(tdxqe.Options{}) })
	if chainErr != nil {
		t.Fatal(chainErr)
	}
	return chain
}

// guest is a test guest: the bundle the owner sealed for, and an envelope.
type guest struct {
	b   *bundle.Bundle
	env []byte
}

func newGuest(t testing.TB, kernelVersion, initrd, env string) guest {
	return guest{b: measuretest.Bundle(t, measuretest.EFIKernel(kernelVersion, 0x4000), []byte(initrd), "console=hvc0 quiet"), env: []byte(env)}
}

// attest runs the whole sim-tdx path in-process: the host serves the guest booted from
// booted (tdxsim.Serve over a pipe), the agent's attester gets a quote for the session's
// REPORT_DATA, and the broker's TDX verifier checks it against the policy of the guest
// sealedFor as the server builds it (reference value from guest.json, envelope digest).
func attest(t *testing.T, s *tdxsim.Signer, booted, sealedFor guest, v verify.Verifier) (*verify.Result, error) {
	t.Helper()
	l, err := tdxsim.LaunchFromBundle(booted.b, booted.env)
	if err != nil {
		t.Fatal(err)
	}
	g, h := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tdxsim.Serve(ctx, h, s, l, nil) }()
	defer func() {
		g.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	att, err := unseal.OpenSim(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if att.TEE() != api.TEESimTDX {
		t.Fatalf("attester TEE %q, want %s", att.TEE(), api.TEESimTDX)
	}
	nonce, pub := make([]byte, 32), make([]byte, 32)
	rand.Read(nonce)
	rand.Read(pub)
	rd := api.ReportData(nonce, pub)
	ev, err := att.Evidence(ctx, rd)
	if err != nil {
		t.Fatal(err)
	}
	digest := envelope.Sum(sealedFor.env)
	if want := digest.HostData(tee.SimTDX); string(ev.HostData) != string(want) && string(booted.env) == string(sealedFor.env) {
		t.Fatalf("evidence MRCONFIGID %x, want %x", ev.HostData, want)
	}
	ref, err := sealedFor.b.Config.Measurement(tee.SimTDX)
	if err != nil {
		t.Fatal(err)
	}
	p := verify.Policy{Measurements: []string{ref}, HostData: digest[:], ReportData: rd[:]}
	return v.Verify(ctx, ev.Evidence, p)
}

func TestSimTDXEndToEnd(t *testing.T) {
	c := testChain(t)
	s, err := tdxqe.NewSigner(c)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tdxqe.NewChain(tdxqe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sealed := newGuest(t, "6.1.0-sealpod", "initrd v1", "envelope of workload a")
	tests := []struct {
		name      string
		booted    guest
		verifier  verify.Verifier
		wantField string
	}{
		{name: "accepted", booted: sealed, verifier: tdx.NewSim(c.Roots())},
		{name: "different kernel", booted: newGuest(t, "6.1.0-other", "initrd v1", "envelope of workload a"), verifier: tdx.NewSim(c.Roots()), wantField: verify.FieldMeasurement},
		{name: "different initrd", booted: newGuest(t, "6.1.0-sealpod", "initrd v2", "envelope of workload a"), verifier: tdx.NewSim(c.Roots()), wantField: verify.FieldMeasurement},
		{name: "different envelope (MRCONFIGID)", booted: guest{b: sealed.b, env: []byte("envelope of workload b")}, verifier: tdx.NewSim(c.Roots()), wantField: verify.FieldMrConfigID},
		{name: "Intel's real root (tdx verifier)", booted: sealed, verifier: tdx.New(tdx.Config{}), wantField: verify.FieldChain},
		{name: "another node's fake root", booted: sealed, verifier: tdx.NewSim(other.Roots()), wantField: verify.FieldChain},
		{name: "no root", booted: sealed, verifier: tdx.NewSim(nil), wantField: verify.FieldChain},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := attest(t, s, tc.booted, sealed, tc.verifier)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if res.TEE != api.TEESimTDX {
					t.Fatalf("result TEE %q, want %s", res.TEE, api.TEESimTDX)
				}
				return
			}
			var rej *verify.Rejection
			if !errors.As(err, &rej) || rej.Field != tc.wantField {
				t.Fatalf("Verify = %v, %v; want a rejection of %s", res, err, tc.wantField)
			}
		})
	}
}

// TestDebugRefused: a quote with TD_ATTRIBUTES.DEBUG is refused by the verifier.
func TestDebugRefused(t *testing.T) {
	c := testChain(t)
	s, err := tdxqe.NewSigner(c)
	if err != nil {
		t.Fatal(err)
	}
	g := newGuest(t, "6.1.0-sealpod", "initrd", "env")
	l, err := tdxsim.LaunchFromBundle(g.b, g.env)
	if err != nil {
		t.Fatal(err)
	}
	var rd [64]byte
	rd[0] = 7
	for _, debug := range []bool{false, true} {
		q, err := s.Quote(tdxqe.QuoteOptions{MRTD: l.MRTD, RTMRs: l.RTMRs, MRConfigID: l.MRConfigID, ReportData: rd, Debug: debug})
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := g.b.Config.Measurement(tee.SimTDX)
		d := envelope.Sum(g.env)
		_, err = tdx.NewSim(c.Roots()).Verify(context.Background(), &api.Evidence{TDX: &api.TDXEvidence{Quote: q}},
			verify.Policy{Measurements: []string{ref}, HostData: d[:], ReportData: rd[:]})
		var rej *verify.Rejection
		if debug != (errors.As(err, &rej) && rej.Field == verify.FieldDebug) || (!debug && err != nil) {
			t.Fatalf("debug=%v: Verify = %v", debug, err)
		}
	}
}

// TestServeRefusals: the simulated TDX answers only quote and TEE requests of the protocol
// version, with a 64-byte REPORT_DATA; the guest client reports a refusal as ErrRefused.
func TestServeRefusals(t *testing.T) {
	s, err := tdxqe.NewSigner(testChain(t))
	if err != nil {
		t.Fatal(err)
	}
	g, h := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tdxsim.Serve(ctx, h, s, tdxsim.Launch{}, nil) }()
	c := simsp.NewClient(g)
	var rd [64]byte
	if _, err := c.GetReport(ctx, rd); !errors.Is(err, simsp.ErrRefused) {
		t.Errorf("report request to sim-tdx: %v, want ErrRefused", err)
	}
	for _, req := range []simsp.Request{
		{Version: 2, Kind: simsp.KindQuote, ReportData: rd[:]},
		{Version: 1, Kind: simsp.KindQuote, ReportData: rd[:10]},
		{Version: 1, Kind: "bogus"},
	} {
		if err := simsp.WriteFrame(g, req); err != nil {
			t.Fatal(err)
		}
		var resp simsp.Response
		if err := simsp.ReadFrame(g, &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Error == "" || len(resp.Quote) != 0 {
			t.Errorf("request %+v answered %+v, want an error", req, resp)
		}
	}
	if got, err := c.TEE(ctx); err != nil || got != tee.SimTDX {
		t.Errorf("TEE = %q, %v", got, err)
	}
	g.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
