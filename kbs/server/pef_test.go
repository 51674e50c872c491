package server

import (
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"testing"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/client"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/verify"
	"github.com/sealpod/sealpod/kbs/verify/pef"
)

// registerPEFWorkload registers a copy of e's workload under id for the one TEE tee (a PEF
// family name), with no measurements or TCB floor and a fresh ed25519 credential; it returns
// the workload, the credential's private key and another key that is not registered.
func registerPEFWorkload(t *testing.T, e *env, id, tee string) (wl registry.Workload, cred, other ed25519.PrivateKey) {
	t.Helper()
	pub, cred, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, other, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	wl = e.workload
	wl.ID, wl.TEEs, wl.Measurements, wl.MinTCB = id, []string{tee}, nil, registry.TCB{}
	wl.PEFCredential = hex.EncodeToString(pub)
	if _, err := e.reg.Put(context.Background(), wl, "test"); err != nil {
		t.Fatalf("register %s workload: %v", tee, err)
	}
	return wl, cred, other
}

// TestPEF: a workload registered for pef gets its token and key for a challenge signed with
// the credential registered for it (the one sealed in its ESM blob), bound to the session's
// nonce and TEE key; a wrong credential, a replayed nonce, a different TEE key and a
// workload registered for snp/sim are refused.
func TestPEF(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.srv.cfg.Verifiers[api.TEEPEF] = pef.Verifier{}
	ctx := context.Background()
	wl, cred, other := registerPEFWorkload(t, e, "pef-app", api.TEEPEF)
	auth := func(t *testing.T, tee, id string) *client.Session {
		t.Helper()
		s, err := e.client.Auth(ctx, tee, id)
		if err != nil {
			t.Fatalf("auth %s %s: %v", tee, id, err)
		}
		return s
	}
	otherTEEKey := func(t *testing.T) []byte {
		k, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k.PublicKey().Bytes()
	}

	t.Run("signed by the registered credential", func(t *testing.T) {
		s := auth(t, api.TEEPEF, wl.ID)
		if err := s.Attest(ctx, api.SignPEFChallenge(cred, s.Nonce, s.PublicKey())); err != nil {
			t.Fatalf("attest: %v", err)
		}
		c, err := e.srv.tokens.verify(s.Token, e.clock.now())
		if err != nil || c.TEE != api.TEEPEF || c.Workload != wl.ID {
			t.Fatalf("token claims %+v, %v; want tee=pef workload=%s", c, err, wl.ID)
		}
		key, err := s.Key(ctx)
		if err != nil || hex.EncodeToString(key) != hex.EncodeToString(wl.DataKey) {
			t.Fatalf("key: %x, %v; want the workload's data key", key, err)
		}
	})
	t.Run("replayed nonce", func(t *testing.T) {
		s := auth(t, api.TEEPEF, wl.ID)
		ev := api.SignPEFChallenge(cred, s.Nonce, s.PublicKey())
		if err := s.Attest(ctx, ev); err != nil {
			t.Fatalf("first attest: %v", err)
		}
		// The same session again: its nonce is spent.
		wantAPIError(t, s.Attest(ctx, ev), http.StatusUnauthorized, api.ReasonNonce, "")
		// The old signature in a new session (new nonce).
		s2 := auth(t, api.TEEPEF, wl.ID)
		wantAPIError(t, s2.Attest(ctx, ev), http.StatusForbidden, api.ReasonEvidence, verify.FieldSignature)
	})
	tests := []struct {
		name     string
		tee, id  string
		evidence func(t *testing.T, s *client.Session) *api.Evidence
		status   int
		reason   string
		field    string
	}{
		{"wrong credential", api.TEEPEF, wl.ID, func(t *testing.T, s *client.Session) *api.Evidence {
			return api.SignPEFChallenge(other, s.Nonce, s.PublicKey())
		}, http.StatusForbidden, api.ReasonEvidence, verify.FieldSignature},
		{"different TEE key", api.TEEPEF, wl.ID, func(t *testing.T, s *client.Session) *api.Evidence {
			return api.SignPEFChallenge(cred, s.Nonce, otherTEEKey(t))
		}, http.StatusForbidden, api.ReasonEvidence, verify.FieldSignature},
		{"short signature", api.TEEPEF, wl.ID, func(t *testing.T, s *client.Session) *api.Evidence {
			ev := api.SignPEFChallenge(cred, s.Nonce, s.PublicKey())
			ev.PEF.Signature = ev.PEF.Signature[:63]
			return ev
		}, http.StatusForbidden, api.ReasonEvidence, verify.FieldSignature},
		{"snp evidence in a pef session", api.TEEPEF, wl.ID, func(t *testing.T, s *client.Session) *api.Evidence {
			return e.evidence(t, s, nil)
		}, http.StatusForbidden, api.ReasonEvidence, verify.FieldEvidence},
		{"pef evidence for a sim workload", api.TEESim, e.workload.ID, func(t *testing.T, s *client.Session) *api.Evidence {
			return api.SignPEFChallenge(cred, s.Nonce, s.PublicKey())
		}, http.StatusForbidden, api.ReasonEvidence, verify.FieldEvidence},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := auth(t, tc.tee, tc.id)
			wantAPIError(t, s.Attest(ctx, tc.evidence(t, s)), tc.status, tc.reason, tc.field)
		})
	}
	t.Run("pef session for a workload registered for snp/sim", func(t *testing.T) {
		_, err := e.client.Auth(ctx, api.TEEPEF, e.workload.ID)
		wantAPIError(t, err, http.StatusForbidden, api.ReasonPolicy, "")
	})
	t.Run("sim-pef not enabled", func(t *testing.T) {
		_, err := e.client.Auth(ctx, api.TEESimPEF, wl.ID)
		wantAPIError(t, err, http.StatusForbidden, api.ReasonUnsupported, "")
	})
	t.Run("sim session for the pef workload", func(t *testing.T) {
		_, err := e.client.Auth(ctx, api.TEESim, wl.ID)
		wantAPIError(t, err, http.StatusForbidden, api.ReasonPolicy, "")
	})
}

// TestSimPEF: the simulated PEF (the node plays the ultravisor) is accepted only when the
// broker enables it (--insecure-sim-pef), only for workloads registered for sim-pef, with the
// same credential check as pef; its tokens say tee=sim-pef.
func TestSimPEF(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.srv.cfg.Verifiers[api.TEEPEF] = pef.Verifier{}
	e.srv.cfg.Verifiers[api.TEESimPEF] = pef.NewSim()
	ctx := context.Background()
	wl, cred, other := registerPEFWorkload(t, e, "sim-pef-app", api.TEESimPEF)
	t.Run("accepted with the credential", func(t *testing.T) {
		s, err := e.client.Auth(ctx, api.TEESimPEF, wl.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Attest(ctx, api.SignPEFChallenge(cred, s.Nonce, s.PublicKey())); err != nil {
			t.Fatalf("attest: %v", err)
		}
		c, err := e.srv.tokens.verify(s.Token, e.clock.now())
		if err != nil || c.TEE != api.TEESimPEF || c.Workload != wl.ID {
			t.Fatalf("token claims %+v, %v; want tee=sim-pef workload=%s", c, err, wl.ID)
		}
	})
	t.Run("another credential", func(t *testing.T) {
		s, err := e.client.Auth(ctx, api.TEESimPEF, wl.ID)
		if err != nil {
			t.Fatal(err)
		}
		wantAPIError(t, s.Attest(ctx, api.SignPEFChallenge(other, s.Nonce, s.PublicKey())), http.StatusForbidden, api.ReasonEvidence, verify.FieldSignature)
	})
	t.Run("pef session for the sim-pef workload", func(t *testing.T) {
		_, err := e.client.Auth(ctx, api.TEEPEF, wl.ID)
		wantAPIError(t, err, http.StatusForbidden, api.ReasonPolicy, "")
	})
}
