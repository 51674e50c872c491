package pef

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"testing"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
)

type fixture struct {
	pub          ed25519.PublicKey
	cred, other  ed25519.PrivateKey
	nonce, tee   []byte
	nonce2, tee2 []byte
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	var f fixture
	var err error
	if f.pub, f.cred, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	if _, f.other, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	for _, b := range []*[]byte{&f.nonce, &f.tee, &f.nonce2, &f.tee2} {
		*b = make([]byte, 32)
		rand.Read(*b)
	}
	return f
}

func policy(pub ed25519.PublicKey, nonce, tee []byte) verify.Policy {
	rd := api.ReportData(nonce, tee)
	return verify.Policy{ReportData: rd[:], PEFCredential: pub}
}

func TestVerify(t *testing.T) {
	f := newFixture(t)
	good := policy(f.pub, f.nonce, f.tee)
	tests := []struct {
		name  string
		ev    *api.Evidence
		pol   verify.Policy
		field string // "" = accepted
	}{
		{"signed by the credential", api.SignPEFChallenge(f.cred, f.nonce, f.tee), good, ""},
		{"wrong credential", api.SignPEFChallenge(f.other, f.nonce, f.tee), good, verify.FieldSignature},
		{"replayed nonce", api.SignPEFChallenge(f.cred, f.nonce, f.tee), policy(f.pub, f.nonce2, f.tee), verify.FieldSignature},
		{"different TEE key", api.SignPEFChallenge(f.cred, f.nonce, f.tee2), good, verify.FieldSignature},
		{"no credential registered", api.SignPEFChallenge(f.cred, f.nonce, f.tee), policy(nil, f.nonce, f.tee), verify.FieldPolicy},
		{"snp evidence", &api.Evidence{SNP: &api.SNPEvidence{Report: make([]byte, 1184)}}, good, verify.FieldEvidence},
		{"snp and pef evidence", &api.Evidence{SNP: &api.SNPEvidence{}, PEF: api.SignPEFChallenge(f.cred, f.nonce, f.tee).PEF}, good, verify.FieldEvidence},
		{"empty signature", &api.Evidence{PEF: &api.PEFEvidence{}}, good, verify.FieldSignature},
		{"long signature", &api.Evidence{PEF: &api.PEFEvidence{Signature: make([]byte, 65)}}, good, verify.FieldSignature},
		{"signature of the bare REPORT_DATA", func() *api.Evidence {
			rd := api.ReportData(f.nonce, f.tee)
			return &api.Evidence{PEF: &api.PEFEvidence{Signature: ed25519.Sign(f.cred, rd[:])}}
		}(), good, verify.FieldSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Verifier{}.Verify(context.Background(), tc.ev, tc.pol)
			if tc.field == "" {
				if err != nil || res.TEE != api.TEEPEF || res.Measurement == "" {
					t.Fatalf("Verify = %+v, %v; want accepted for tee pef", res, err)
				}
				return
			}
			var rej *verify.Rejection
			if !errors.As(err, &rej) || rej.Field != tc.field || !errors.Is(err, verify.ErrRejected) {
				t.Fatalf("Verify = %+v, %v; want a rejection of field %s", res, err, tc.field)
			}
		})
	}
}

// FuzzVerify feeds attest request bodies through the broker's decoder and the PEF verifier:
// nothing panics, and only a body carrying the credential's signature over this session's
// challenge is accepted.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f)
	for _, ev := range []*api.Evidence{
		api.SignPEFChallenge(fx.cred, fx.nonce, fx.tee),
		api.SignPEFChallenge(fx.other, fx.nonce, fx.tee),
		{PEF: &api.PEFEvidence{}},
		{SNP: &api.SNPEvidence{Report: []byte{1}}},
	} {
		b, err := json.Marshal(api.AttestRequest{TEEPubKey: fx.tee, Evidence: *ev})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"teePubKey":"","evidence":{"pef":{"signature":null}}}`))
	f.Add([]byte(`{"evidence":{"pef":{}, "pef":{"signature":"AA=="}}}`))
	good := api.SignPEFChallenge(fx.cred, fx.nonce, fx.tee).PEF.Signature
	f.Fuzz(func(t *testing.T, body []byte) {
		var req api.AttestRequest
		if api.DecodeAttestRequest(body, &req) != nil || req.Validate() != nil {
			return
		}
		res, err := Verifier{}.Verify(context.Background(), &req.Evidence, policy(fx.pub, fx.nonce, req.TEEPubKey))
		if err == nil {
			if !bytes.Equal(req.TEEPubKey, fx.tee) || !bytes.Equal(req.Evidence.PEF.Signature, good) || res.TEE != api.TEEPEF {
				t.Fatalf("accepted evidence not signed for this session: %+v", req.Evidence.PEF)
			}
			return
		}
		var rej *verify.Rejection
		if !errors.As(err, &rej) {
			t.Fatalf("Verify error %v is not a *verify.Rejection", err)
		}
	})
}
