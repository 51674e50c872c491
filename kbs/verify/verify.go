// Package verify defines the one interface every TEE evidence verifier of the key broker
// implements (packages snp, tdx, sim) and the typed rejection they return.
package verify

import (
	"context"
	"errors"
	"fmt"

	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/kbs/api"
)

// LaunchHostData returns the launch-bound data the evidence of t must carry: the policy's
// envelope digest placed by tee.TEE.HostData (the one copy of the rule). ok is false when the
// policy has no 32-byte digest or t binds no host data.
func (p Policy) LaunchHostData(t tee.TEE) (want []byte, ok bool) {
	if len(p.HostData) != tee.DigestSize {
		return nil, false
	}
	want = t.HostData([tee.DigestSize]byte(p.HostData))
	return want, want != nil
}

// SNPTCB is a minimum SEV-SNP TCB (components of TCB_VERSION).
type SNPTCB struct{ Bootloader, TEE, SNP, Microcode uint8 }

// Policy is what the evidence must show; the server builds it from the registered workload
// and the session.
type Policy struct {
	// Measurements are the allowed launch measurements, lowercase hex. snp/sim: 48-byte
	// MEASUREMENT; tdx/sim-tdx: "mrtd:rtmr0:rtmr1:rtmr2:rtmr3" (an empty rtmr is not pinned).
	Measurements []string
	// HostData is the workload's 32-byte envelope digest; the evidence must carry it as its
	// TEE places it (LaunchHostData): HOST_DATA for snp/sim, MRCONFIGID zero-padded for
	// tdx/sim-tdx.
	HostData []byte
	// ReportData is the expected 64-byte REPORT_DATA (api.ReportData(nonce, teePubKey)).
	ReportData []byte
	// MinSNPTCB is the minimum reported TCB for snp/sim; nil = no minimum.
	MinSNPTCB *SNPTCB
	// MinTDXTeeTCBSVN is the component-wise minimum TEE_TCB_SVN (16 bytes) for tdx; nil = none.
	MinTDXTeeTCBSVN []byte
	// PEFCredential is the workload's registered Ed25519 broker-credential public key (pef).
	PEFCredential []byte
}

// Result describes accepted evidence.
type Result struct {
	TEE         string
	Measurement string // the matched allowed value
	TCB         string // human-readable TCB of the evidence
}

// Verifier checks one TEE's evidence against a policy.
type Verifier interface {
	TEE() string
	Verify(ctx context.Context, ev *api.Evidence, p Policy) (*Result, error)
}

// Rejection fields.
const (
	FieldEvidence    = "evidence"
	FieldChain       = "certificate_chain"
	FieldSignature   = "signature"
	FieldMeasurement = "measurement"
	FieldHostData    = "host_data"
	FieldMrConfigID  = "mrconfigid"
	FieldReportData  = "report_data"
	FieldDebug       = "debug"
	FieldTCB         = "tcb"
	FieldPolicy      = "policy"
	FieldTEE         = "tee"
)

// ErrRejected is matched (errors.Is) by every *Rejection.
var ErrRejected = errors.New("evidence rejected")

// Rejection says why evidence was refused: which field, what was expected and what the
// evidence had. It never carries secrets (measurements, digests and nonces-derived values are
// public).
type Rejection struct {
	Field    string
	Expected string
	Got      string
	Detail   string
}

func (r *Rejection) Error() string {
	s := "evidence rejected: " + r.Field
	if r.Detail != "" {
		s += ": " + r.Detail
	}
	if r.Expected != "" || r.Got != "" {
		s += fmt.Sprintf(" (expected %s, got %s)", r.Expected, r.Got)
	}
	return s
}

// Is makes errors.Is(err, ErrRejected) true.
func (r *Rejection) Is(target error) bool { return target == ErrRejected }

// Reject builds a Rejection.
func Reject(field, expected, got, detail string, args ...any) *Rejection {
	return &Rejection{Field: field, Expected: expected, Got: got, Detail: fmt.Sprintf(detail, args...)}
}

// ErrUnsupported is returned for TEEs this broker has no verifier for (pef).
var ErrUnsupported = errors.New("not supported by this broker")
