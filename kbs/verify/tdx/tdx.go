// Package tdx verifies Intel TDX quotes (version 4) for the key broker with go-tdx-guest,
// offline: the PCK certificate chain in the quote must lead to the trusted Intel root (built
// in unless replaced), the QE report must be signed by the PCK key and bind the attestation
// key, and the quote must be signed by the attestation key. No collateral is fetched and no
// CRL is checked (documented limitation). Then the workload policy: REPORT_DATA, MRTD/RTMRs
// in the allowed set (a policy that does not pin MRTD, RTMR[1] and RTMR[2] is refused), MRCONFIGID = envelope digest zero-padded to 48 bytes, debug off and a
// minimum TEE_TCB_SVN, and go-tdx-guest validate.
package tdx

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	tdxabi "github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/validate"
	tdxverify "github.com/google/go-tdx-guest/verify"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
)

// Config configures a Verifier.
type Config struct {
	// TEE is the TEE whose evidence this verifier accepts and names in its results: tdx
	// (default) or sim-tdx, the simulated TDX whose quotes are signed under a node's fake
	// Intel chain (then TrustedRoots must hold that fake root; see NewSim).
	TEE string
	// TrustedRoots replaces Intel's SGX root CA built into go-tdx-guest (sim-tdx and tests).
	TrustedRoots *x509.CertPool
	Now          func() time.Time
}

// Verifier verifies TDX quotes.
type Verifier struct{ cfg Config }

// New returns a Verifier.
func New(cfg Config) *Verifier {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TEE == "" {
		cfg.TEE = api.TEETDX
	}
	return &Verifier{cfg: cfg}
}

// NewSim returns the verifier of sim-tdx evidence: this very verifier (chain, signatures,
// MRTD/RTMR policy, MRCONFIGID binding, debug, TCB), trusting only roots, the fake Intel root
// of --insecure-sim-roots, and never Intel's. It is insecure by construction (the node holds
// the PCK key) and exists for CI and demos.
func NewSim(roots *x509.CertPool) *Verifier {
	if roots == nil {
		roots = x509.NewCertPool() // never fall back to Intel's root
	}
	return New(Config{TEE: api.TEESimTDX, TrustedRoots: roots})
}

// TEE implements verify.Verifier.
func (v *Verifier) TEE() string { return v.cfg.TEE }

// maxQuoteSize bounds the quotes we parse (real v4 quotes with a PCK chain are ~5 KiB).
const maxQuoteSize = 64 << 10

// Parse decodes a raw quote; it is the parser of untrusted input. go-tdx-guest v0.3.1's
// QuoteToProto panics on some malformed quotes (slice bounds in the QE auth data, found by
// FuzzParse), so a panic there is turned into a rejection.
func Parse(ev *api.TDXEvidence) (q4 *pb.QuoteV4, err error) {
	if ev == nil || len(ev.Quote) == 0 {
		return nil, verify.Reject(verify.FieldEvidence, "tdx quote", "none", "")
	}
	if len(ev.Quote) > maxQuoteSize {
		return nil, verify.Reject(verify.FieldEvidence, fmt.Sprintf("<= %d bytes", maxQuoteSize), fmt.Sprintf("%d bytes", len(ev.Quote)), "quote too large")
	}
	defer func() {
		if r := recover(); r != nil {
			q4, err = nil, verify.Reject(verify.FieldEvidence, "", "", "malformed quote: %v", r)
		}
	}()
	q, err := tdxabi.QuoteToProto(ev.Quote)
	if err != nil {
		return nil, verify.Reject(verify.FieldEvidence, "", "", "quote: %v", err)
	}
	q4, ok := q.(*pb.QuoteV4)
	if !ok || q4 == nil {
		return nil, verify.Reject(verify.FieldEvidence, "quote version 4", fmt.Sprintf("%T", q), "")
	}
	if err := tdxabi.CheckQuoteV4(q4); err != nil {
		return nil, verify.Reject(verify.FieldEvidence, "", "", "quote: %v", err)
	}
	return q4, nil
}

// checkPinned refuses a reference value that does not pin MRTD, RTMR[1] and RTMR[2]: MRTD
// covers only the firmware, RTMR[1] the kernel and RTMR[2] the initrd and command line, so a
// value without them would accept a TD booted with a host-chosen kernel and initrd. The
// registry refuses to register such values; this check also fails closed on one stored
// before that rule.
func checkPinned(allowed string) error {
	parts := strings.Split(allowed, ":")
	if len(parts) != 5 || parts[0] == "" || parts[2] == "" || parts[3] == "" {
		return verify.Reject(verify.FieldPolicy, "mrtd:rtmr0:rtmr1:rtmr2:rtmr3 with MRTD, RTMR[1] and RTMR[2] pinned", allowed,
			"TDX reference value does not pin MRTD, RTMR[1] (kernel) and RTMR[2] (initrd, command line): a TD booted with a host-chosen kernel and initrd would match; re-register the workload with the guest bundle's full TDX measurement")
	}
	return nil
}

// measurementMatches reports whether body matches one allowed "mrtd:rtmr0:...:rtmr3" value
// (checkPinned first); an empty RTMR[0] or RTMR[3] is not compared.
func measurementMatches(allowed string, body *pb.TDQuoteBody) bool {
	parts := strings.Split(allowed, ":")
	if len(parts) != 5 {
		return false
	}
	if parts[0] != hex.EncodeToString(body.GetMrTd()) {
		return false
	}
	rtmrs := body.GetRtmrs()
	for i, want := range parts[1:] {
		if want == "" {
			continue
		}
		if i >= len(rtmrs) || want != hex.EncodeToString(rtmrs[i]) {
			return false
		}
	}
	return true
}

func describe(body *pb.TDQuoteBody) string {
	s := hex.EncodeToString(body.GetMrTd())
	for _, r := range body.GetRtmrs() {
		s += ":" + hex.EncodeToString(r)
	}
	return s
}

// Verify implements verify.Verifier.
func (v *Verifier) Verify(ctx context.Context, ev *api.Evidence, p verify.Policy) (res *verify.Result, err error) {
	// Evidence is hostile and the parsing libraries are not all panic-free on malformed input.
	defer func() {
		if r := recover(); r != nil {
			res, err = nil, verify.Reject(verify.FieldEvidence, "", "", "malformed evidence: %v", r)
		}
	}()
	if ev == nil || ev.TDX == nil {
		return nil, verify.Reject(verify.FieldEvidence, "tdx evidence", "none", "")
	}
	q, err := Parse(ev.TDX)
	if err != nil {
		return nil, err
	}
	opts := &tdxverify.Options{GetCollateral: false, CheckRevocations: false, TrustedRoots: v.cfg.TrustedRoots, Now: v.cfg.Now()}
	if err := tdxverify.TdxQuote(q, opts); err != nil {
		if errors.Is(err, tdxverify.ErrHashVerificationFail) || strings.Contains(err.Error(), "QE report") {
			return nil, verify.Reject(verify.FieldSignature, "", "", "quote: %v", err)
		}
		return nil, verify.Reject(verify.FieldChain, "", "", "PCK chain: %v", err)
	}
	body := q.GetTdQuoteBody()
	if len(p.ReportData) != api.ReportDataSize || !bytes.Equal(body.GetReportData(), p.ReportData) {
		return nil, verify.Reject(verify.FieldReportData, hex.EncodeToString(p.ReportData), hex.EncodeToString(body.GetReportData()), "not bound to this session's nonce and TEE key")
	}
	for _, m := range p.Measurements {
		if err := checkPinned(m); err != nil {
			return nil, err
		}
	}
	matched := ""
	for _, m := range p.Measurements {
		if measurementMatches(m, body) {
			matched = m
			break
		}
	}
	if matched == "" {
		return nil, verify.Reject(verify.FieldMeasurement, "one of ["+strings.Join(p.Measurements, ",")+"]", describe(body), "MRTD/RTMRs")
	}
	wantCfg, ok := p.LaunchHostData(tee.TEE(v.cfg.TEE))
	if !ok {
		return nil, verify.Reject(verify.FieldMrConfigID, "", "", "workload has no 32-byte envelope digest")
	}
	if !bytes.Equal(body.GetMrConfigId(), wantCfg) {
		return nil, verify.Reject(verify.FieldMrConfigID, hex.EncodeToString(wantCfg), hex.EncodeToString(body.GetMrConfigId()), "not the workload's envelope digest")
	}
	if attr := body.GetTdAttributes(); len(attr) > 0 && attr[0]&1 != 0 {
		return nil, verify.Reject(verify.FieldDebug, "off", "on", "TD_ATTRIBUTES.DEBUG set")
	}
	svn := body.GetTeeTcbSvn()
	if min := p.MinTDXTeeTCBSVN; len(min) > 0 {
		if len(min) != 16 || len(svn) != 16 {
			return nil, verify.Reject(verify.FieldTCB, "16-byte TEE_TCB_SVN", fmt.Sprintf("%d bytes", len(svn)), "")
		}
		for i := range min {
			if svn[i] < min[i] {
				return nil, verify.Reject(verify.FieldTCB, ">= "+hex.EncodeToString(min), hex.EncodeToString(svn), "TEE_TCB_SVN component %d below the workload's minimum", i)
			}
		}
	}
	vopts := &validate.Options{TdQuoteBodyOptions: validate.TdQuoteBodyOptions{
		ReportData:       p.ReportData,
		MrConfigID:       wantCfg,
		MinimumTeeTcbSvn: p.MinTDXTeeTCBSVN,
	}}
	if err := validate.TdxQuote(q, vopts); err != nil {
		return nil, verify.Reject(verify.FieldPolicy, "", "", "validate: %v", err)
	}
	_ = ctx
	return &verify.Result{TEE: v.cfg.TEE, Measurement: matched, TCB: hex.EncodeToString(svn)}, nil
}

var _ verify.Verifier = (*Verifier)(nil)
