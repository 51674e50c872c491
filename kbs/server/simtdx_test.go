package server

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/client"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/verify/tdx"
	"github.com/sealpod/sealpod/simtee/tdxqe"
)

// TestSimTDX: with the sim-tdx verifier (--insecure-sim-roots with a fake Intel root) a
// workload registered for sim-tdx gets a token saying tee=sim-tdx for a quote signed under the
// node's fake chain; a workload registered for tdx refuses a sim-tdx session, and a sim-tdx
// quote presented in a tdx session fails the real TDX verifier (Intel's root).
func TestSimTDX(t *testing.T) {
	e := newEnv(t, envOptions{})
	intel, err := tdxqe.NewChain(tdxqe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := tdxqe.NewSigner(intel)
	if err != nil {
		t.Fatal(err)
	}
	// The verifiers a broker started with --insecure-sim-roots (fake Intel root) has.
	e.srv.cfg.Verifiers[api.TEESimTDX] = tdx.NewSim(intel.Roots())
	e.srv.cfg.Verifiers[api.TEETDX] = tdx.New(tdx.Config{})

	o := tdxqe.QuoteOptions{MRTD: sha512.Sum384([]byte("sim-tdx firmware"))}
	o.RTMRs[1] = sha512.Sum384([]byte("kernel"))
	o.RTMRs[2] = sha512.Sum384([]byte("initrd, cmdline"))
	copy(o.MRConfigID[:], e.digest[:])
	ref := strings.Join([]string{hex.EncodeToString(o.MRTD[:]), "", hex.EncodeToString(o.RTMRs[1][:]), hex.EncodeToString(o.RTMRs[2][:]), ""}, ":")
	ctx := context.Background()
	for _, w := range []struct{ id, tee string }{{"sim-tdx-app", api.TEESimTDX}, {"tdx-app", api.TEETDX}} {
		wl := e.workload
		wl.ID, wl.TEEs, wl.Measurements, wl.MinTCB = w.id, []string{w.tee}, map[string][]string{w.tee: {ref}}, registry.TCB{}
		if _, err := e.reg.Put(ctx, wl, "test"); err != nil {
			t.Fatalf("register %s: %v", w.id, err)
		}
	}
	quote := func(t *testing.T, s *client.Session) *api.Evidence {
		q := o
		q.ReportData = s.ReportData()
		raw, err := signer.Quote(q)
		if err != nil {
			t.Fatal(err)
		}
		return &api.Evidence{TDX: &api.TDXEvidence{Quote: raw}}
	}

	t.Run("sim-tdx workload accepts", func(t *testing.T) {
		s, err := e.client.Auth(ctx, api.TEESimTDX, "sim-tdx-app")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Attest(ctx, quote(t, s)); err != nil {
			t.Fatalf("attest: %v", err)
		}
		c, err := e.srv.tokens.verify(s.Token, e.clock.now())
		if err != nil || c.TEE != api.TEESimTDX {
			t.Fatalf("token claims %+v, %v; want tee=sim-tdx", c, err)
		}
	})
	t.Run("tdx workload refuses a sim-tdx session", func(t *testing.T) {
		_, err := e.client.Auth(ctx, api.TEESimTDX, "tdx-app")
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
			t.Fatalf("auth: %v, want 403", err)
		}
	})
	t.Run("sim-tdx workload refuses a tdx session", func(t *testing.T) {
		_, err := e.client.Auth(ctx, api.TEETDX, "sim-tdx-app")
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
			t.Fatalf("auth: %v, want 403", err)
		}
	})
	t.Run("sim-tdx quote in a tdx session", func(t *testing.T) {
		s, err := e.client.Auth(ctx, api.TEETDX, "tdx-app")
		if err != nil {
			t.Fatal(err)
		}
		err = s.Attest(ctx, quote(t, s))
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || !strings.Contains(ae.Error(), "certificate_chain") {
			t.Fatalf("attest: %v, want 403 for the certificate chain", err)
		}
	})
	t.Run("not enabled without the fake Intel root", func(t *testing.T) {
		delete(e.srv.cfg.Verifiers, api.TEESimTDX)
		_, err := e.client.Auth(ctx, api.TEESimTDX, "sim-tdx-app")
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || !strings.Contains(ae.Error(), "--insecure-sim-roots") {
			t.Fatalf("auth: %v, want 403 naming --insecure-sim-roots", err)
		}
	})
}
