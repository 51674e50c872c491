// Package pef is the IBM PEF backend of the broker. PEF has no attestation report: the owner
// seals a per-workload Ed25519 broker credential into the guest's ESM blob, which the
// ultravisor opens only on an authorised host and only for the sealed kernel, initrd and boot
// arguments (docs/pef.md#broker-credential). The guest shows the credential by signing
// api.PEFChallenge(REPORT_DATA), which binds the session's nonce and the guest's TEE key; this
// verifier checks that signature with the public key registered for the workload.
package pef

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
)

// Verifier checks PEF evidence (api.PEFEvidence). The zero value is the pef verifier; NewSim
// returns the sim-pef one (the same check: under sim-pef the node's software ultravisor,
// simtee/pefuv, released the credential, so the broker must opt in to it).
type Verifier struct {
	// Sim makes this the verifier of tee sim-pef.
	Sim bool
}

// NewSim returns the verifier of the simulated PEF (tee sim-pef). Enable it only on an
// explicit insecure opt-in (sealpod-kbs --insecure-sim-pef).
func NewSim() Verifier { return Verifier{Sim: true} }

// TEE implements verify.Verifier.
func (v Verifier) TEE() string {
	if v.Sim {
		return api.TEESimPEF
	}
	return api.TEEPEF
}

// ParseEvidence checks the syntax of PEF evidence and returns its signature.
func ParseEvidence(ev *api.Evidence) ([]byte, error) {
	if ev == nil || ev.PEF == nil {
		return nil, verify.Reject(verify.FieldEvidence, "pef", "", "no pef evidence (a pef session takes evidence.pef)")
	}
	if ev.SNP != nil || ev.TDX != nil {
		return nil, verify.Reject(verify.FieldEvidence, "pef", "", "snp or tdx evidence in a pef session")
	}
	if n := len(ev.PEF.Signature); n != api.PEFSignatureSize {
		return nil, verify.Reject(verify.FieldSignature, strconv.Itoa(api.PEFSignatureSize)+" bytes", strconv.Itoa(n)+" bytes", "evidence.pef.signature has the wrong size")
	}
	return ev.PEF.Signature, nil
}

// Verify implements verify.Verifier: the signature must be the registered credential's over
// api.PEFChallenge(p.ReportData). The result's Measurement is "cred-sha256:" and the SHA-256
// of the credential's public key (PEF has no launch measurement the broker can see; the
// ultravisor enforces the digests sealed in the blob).
func (v Verifier) Verify(_ context.Context, ev *api.Evidence, p verify.Policy) (*verify.Result, error) {
	sig, err := ParseEvidence(ev)
	if err != nil {
		return nil, err
	}
	if len(p.PEFCredential) != ed25519.PublicKeySize {
		return nil, verify.Reject(verify.FieldPolicy, "a registered pefCredential", "", "the workload has no %d-byte PEF broker credential", ed25519.PublicKeySize)
	}
	if len(p.ReportData) != api.ReportDataSize {
		return nil, fmt.Errorf("pef verify: policy report data is %d bytes, want %d", len(p.ReportData), api.ReportDataSize)
	}
	msg := api.PEFChallenge([api.ReportDataSize]byte(p.ReportData))
	if !ed25519.Verify(ed25519.PublicKey(p.PEFCredential), msg, sig) {
		return nil, verify.Reject(verify.FieldSignature, "", "",
			"evidence.pef.signature does not verify with the workload's registered credential over this session's nonce and TEE key")
	}
	sum := sha256.Sum256(p.PEFCredential)
	return &verify.Result{TEE: v.TEE(), Measurement: "cred-sha256:" + hex.EncodeToString(sum[:]), TCB: "n/a (pef: ESM blob)"}, nil
}
