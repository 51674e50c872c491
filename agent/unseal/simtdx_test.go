package unseal_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/simtee/tdxqe"
	"github.com/sealpod/sealpod/simtee/tdxsim"
)

// fakeHost answers one KindTEE request with name.
func fakeHost(t *testing.T, conn net.Conn, name string) {
	t.Helper()
	go func() {
		var req simsp.Request
		if err := simsp.ReadFrame(conn, &req); err != nil {
			return
		}
		_ = simsp.WriteFrame(conn, simsp.Response{TEE: name})
	}()
}

// TestOpenSim: the guest attests as the simulated TEE the host names (sim or sim-tdx) and
// refuses any other name; a sim-tdx attester returns TDX evidence whose launch data is the
// 48-byte MRCONFIGID.
func TestOpenSim(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		want tee.TEE
	}{{"sim", tee.Sim}, {"sim-tdx", tee.SimTDX}, {"tdx", ""}, {"snp", ""}, {"", ""}} {
		g, h := net.Pipe()
		fakeHost(t, h, tc.name)
		a, err := unseal.OpenSim(ctx, g)
		switch {
		case tc.want == "" && !errors.Is(err, simsp.ErrTEE):
			t.Errorf("host says %q: %v, want ErrTEE", tc.name, err)
		case tc.want != "" && (err != nil || a.TEE() != string(tc.want)):
			t.Errorf("host says %q: %v, %v", tc.name, a, err)
		}
		g.Close()
		h.Close()
	}

	c, err := tdxqe.NewChain(tdxqe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := tdxqe.NewSigner(c)
	if err != nil {
		t.Fatal(err)
	}
	l := tdxsim.Launch{MRConfigID: [48]byte{1, 2, 3}}
	g, h := net.Pipe()
	defer g.Close()
	go func() { _ = tdxsim.Serve(ctx, h, s, l, nil) }()
	a, err := unseal.OpenSim(ctx, g)
	if err != nil || a.TEE() != string(tee.SimTDX) {
		t.Fatalf("OpenSim: %v, %v", a, err)
	}
	ev, err := a.Evidence(ctx, [64]byte{4})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Evidence.TDX == nil || ev.Evidence.SNP != nil || !bytes.Equal(ev.HostData, l.MRConfigID[:]) {
		t.Fatalf("evidence %+v, host data %x", ev.Evidence, ev.HostData)
	}
	// A sim attester (SNP reports) on a sim-tdx host is refused by the host.
	if _, err := unseal.NewSimAttester(g).Evidence(ctx, [64]byte{4}); !errors.Is(err, simsp.ErrRefused) {
		t.Fatalf("report from a sim-tdx host: %v, want ErrRefused", err)
	}
}
