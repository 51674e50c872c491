package sim

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-sev-guest/kds"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
	"github.com/sealpod/sealpod/kbs/verify/snp"
	"github.com/sealpod/sealpod/simtee/amdsp"
)

func TestSimEvidence(t *testing.T) {
	dir := t.TempDir()
	chain, err := amdsp.NewChain(amdsp.Options{RSABits: 2048, TCB: kds.TCBParts{BlSpl: 3, TeeSpl: 0, SnpSpl: 8, UcodeSpl: 115}})
	if err != nil {
		t.Fatal(err)
	}
	rootsPath, keyPath := filepath.Join(dir, "roots.pem"), filepath.Join(dir, "sim-key.pem")
	if err := chain.WriteFiles(rootsPath, keyPath); err != nil {
		t.Fatal(err)
	}
	signer, err := amdsp.LoadSigner(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Load(rootsPath)
	if err != nil {
		t.Fatal(err)
	}
	other, err := amdsp.NewChain(amdsp.Options{RSABits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	otherSigner, _ := amdsp.NewSigner(other)

	nonce, pub := make([]byte, 32), make([]byte, 32)
	rand.Read(nonce)
	rand.Read(pub)
	meas := sha512.Sum384([]byte("kernel+initrd"))
	hd := sha256.Sum256([]byte("envelope"))
	rd := api.ReportData(nonce, pub)
	policy := verify.Policy{Measurements: []string{hex.EncodeToString(meas[:])}, HostData: hd[:], ReportData: rd[:],
		MinSNPTCB: &verify.SNPTCB{Bootloader: 3, SNP: 8, Microcode: 115}}

	tests := []struct {
		name      string
		v         verify.Verifier
		signer    *amdsp.Signer
		opts      func(o *amdsp.ReportOptions)
		policy    func(p *verify.Policy)
		wantField string
	}{
		{name: "good", v: v, signer: signer},
		{name: "wrong measurement", v: v, signer: signer, opts: func(o *amdsp.ReportOptions) { o.Measurement[1] ^= 1 }, wantField: verify.FieldMeasurement},
		{name: "wrong host data", v: v, signer: signer, opts: func(o *amdsp.ReportOptions) { o.HostData[1] ^= 1 }, wantField: verify.FieldHostData},
		{name: "wrong report data", v: v, signer: signer, opts: func(o *amdsp.ReportOptions) { o.ReportData[1] ^= 1 }, wantField: verify.FieldReportData},
		{name: "debug on", v: v, signer: signer, opts: func(o *amdsp.ReportOptions) { o.Debug = true }, wantField: verify.FieldDebug},
		{name: "tcb too low", v: v, signer: signer, policy: func(p *verify.Policy) { p.MinSNPTCB = &verify.SNPTCB{Microcode: 200} }, wantField: verify.FieldTCB},
		{name: "foreign sim root", v: v, signer: otherSigner, wantField: verify.FieldChain},
		{name: "sim evidence against AMD roots", v: snp.New(snp.Config{}), signer: signer, wantField: verify.FieldChain},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := amdsp.ReportOptions{ReportData: rd, Measurement: meas, HostData: hd}
			if tc.opts != nil {
				tc.opts(&o)
			}
			rep, table, err := tc.signer.Report(o)
			if err != nil {
				t.Fatal(err)
			}
			p := policy
			if tc.policy != nil {
				tc.policy(&p)
			}
			res, err := tc.v.Verify(context.Background(), &api.Evidence{SNP: &api.SNPEvidence{Report: rep, CertTable: table}}, p)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if res.TEE != api.TEESim {
					t.Fatalf("result TEE %q, want sim", res.TEE)
				}
				return
			}
			var rej *verify.Rejection
			if !errors.As(err, &rej) || rej.Field != tc.wantField {
				t.Fatalf("Verify error %v, want rejection of %s", err, tc.wantField)
			}
		})
	}
}
