// Package snp verifies AMD SEV-SNP attestation reports for the key broker with go-sev-guest:
// verify (VCEK chain to the trusted AMD roots, report signature) then the workload policy
// (REPORT_DATA, MEASUREMENT, HOST_DATA, debug, minimum TCB) and go-sev-guest validate.
// The same code verifies `sim` evidence against the sim roots (see package sim).
package snp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/validate"
	sevverify "github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
	"github.com/sealpod/sealpod/kbs/verify/p384"
)

// Config configures a Verifier.
type Config struct {
	// TEE is the name reported in results ("snp" unless wrapped by sim).
	TEE string
	// TrustedRoots are the ARK/ASK per product line; nil means AMD's roots built into
	// go-sev-guest.
	TrustedRoots map[string][]*trust.AMDRootCerts
	// CertCacheDir is an offline VCEK cache (see CachePath); "" = none. No network is used.
	CertCacheDir string
	// Now returns the verification time; nil = time.Now.
	Now func() time.Time
}

// Verifier verifies SNP-format evidence. It remembers VCEKs whose chain to the trusted roots
// it has verified (until the VCEK expires), so that the RSA chain checks run once per chip
// and TCB rather than once per report.
type Verifier struct {
	cfg Config

	mu       sync.Mutex
	verified map[[32]byte]verifiedVCEK
	tables   int // entries of verified with a table
}

// verifiedVCEK is a VCEK whose chain verified: its expiry and the parsed certificate (read
// only; x509.Certificate is safe to share), so a report from a known chip does not parse the
// same DER again.
type verifiedVCEK struct {
	notAfter time.Time
	cert     *x509.Certificate
	table    *p384.Table // the VCEK's precomputed multiples (package p384); nil = crypto/ecdsa
}

// maxVerifiedVCEKs bounds the chain cache; it is emptied when full. maxVCEKTables bounds how
// many of its VCEKs get a p384.Table (207 KiB each): a node's pods all report with the node's
// VCEK, so a broker sees one per chip and TCB.
const (
	maxVerifiedVCEKs = 4096
	maxVCEKTables    = 128
)

func vcekCacheKey(rep *spb.Report, der []byte) [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%d\x00", rep.GetCpuid1EaxFms())
	h.Write(der)
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}

// chainVerified returns the parsed VCEK if a VCEK with this cache key chained to the trusted
// roots before and has not expired; nil otherwise.
func (v *Verifier) chainVerified(k [32]byte, now time.Time) *verifiedVCEK {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.verified[k]
	if !ok || !now.Before(e.notAfter) {
		return nil
	}
	return &e
}

// rememberChain records a VCEK whose chain verified, with its p384.Table while fewer than
// maxVCEKTables have one (built outside the lock: about four verifications' worth of CPU).
func (v *Verifier) rememberChain(k [32]byte, cert *x509.Certificate) {
	v.mu.Lock()
	want := v.tables < maxVCEKTables
	v.mu.Unlock()
	var table *p384.Table
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); ok && want {
		table, _ = p384.NewTable(pub) // not a P-384 key: the report check refuses it via crypto/ecdsa
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.verified == nil || len(v.verified) >= maxVerifiedVCEKs {
		v.verified = make(map[[32]byte]verifiedVCEK)
		v.tables = 0
	}
	if old, ok := v.verified[k]; ok && old.table != nil {
		v.tables--
	}
	if table != nil {
		v.tables++
	}
	v.verified[k] = verifiedVCEK{notAfter: cert.NotAfter, cert: cert, table: table}
}

// reportSignature checks the report's signature with the remembered VCEK: with its p384.Table
// where it has one (the same answer as crypto/ecdsa, held to it by package p384's tests), else
// with go-sev-guest.
func (e *verifiedVCEK) reportSignature(raw []byte) error {
	if e.table == nil {
		return sevverify.SnpReportSignature(raw, e.cert)
	}
	if err := abi.ValidateReportFormat(raw); err != nil {
		return fmt.Errorf("attestation report format error: %w", err)
	}
	if algo := abi.SignatureAlgo(raw); algo != abi.SignEcdsaP384Sha384 {
		return fmt.Errorf("unknown SignatureAlgo: %d", algo)
	}
	signed := abi.SignedComponent(raw)
	sig := raw[len(signed):]
	digest := sha512.Sum384(signed)
	if !e.table.Verify(digest[:], abi.AmdBigInt(sig[0:0x48]), abi.AmdBigInt(sig[0x48:0x90])) {
		return errors.New("report signature verification error: ECDSA P-384 signature does not verify")
	}
	return nil
}

// New returns a Verifier.
func New(cfg Config) *Verifier {
	if cfg.TEE == "" {
		cfg.TEE = api.TEESNP
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Verifier{cfg: cfg}
}

// TEE implements verify.Verifier.
func (v *Verifier) TEE() string { return v.cfg.TEE }

// CachePath is where a VCEK for a chip at a reported TCB is looked up in a cert cache
// directory: <dir>/vcek-<CHIP_ID hex>-<REPORTED_TCB as 16 hex digits>.der (DER or PEM).
func CachePath(dir string, chipID []byte, reportedTCB uint64) string {
	return filepath.Join(dir, fmt.Sprintf("vcek-%s-%016x.der", hex.EncodeToString(chipID), reportedTCB))
}

// Parsed is decoded SNP evidence.
type Parsed struct {
	Raw    []byte
	Report *spb.Report
	VCEK   []byte // DER, may be nil
}

// Parse decodes evidence without verifying anything. It is the parser of untrusted input.
func Parse(ev *api.SNPEvidence) (*Parsed, error) {
	if ev == nil {
		return nil, verify.Reject(verify.FieldEvidence, "snp evidence", "none", "")
	}
	if len(ev.Report) != abi.ReportSize {
		return nil, verify.Reject(verify.FieldEvidence, fmt.Sprintf("%d-byte report", abi.ReportSize), fmt.Sprintf("%d bytes", len(ev.Report)), "")
	}
	if err := abi.ValidateReportFormat(ev.Report); err != nil {
		return nil, verify.Reject(verify.FieldEvidence, "", "", "report format: %v", err)
	}
	rep, err := abi.ReportToProto(ev.Report)
	if err != nil {
		return nil, verify.Reject(verify.FieldEvidence, "", "", "report: %v", err)
	}
	p := &Parsed{Raw: ev.Report, Report: rep}
	switch {
	case len(ev.VCEK) > 0:
		p.VCEK = ev.VCEK
	case len(ev.CertTable) > 0:
		der, err := vcekFromCertTable(ev.CertTable)
		if err != nil {
			return nil, verify.Reject(verify.FieldEvidence, "", "", "certificate table: %v", err)
		}
		p.VCEK = der
	}
	return p, nil
}

var vcekGUID = mustGUID(abi.VcekGUID)

func mustGUID(s string) [16]byte {
	var g [16]byte
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		panic("bad GUID " + s)
	}
	copy(g[:], b)
	return g
}

// maxCertTableEntries bounds the GHCB certificate table we accept.
const maxCertTableEntries = 64

// vcekFromCertTable returns the VCEK entry of an extended-report certificate table (24-byte
// entries: GUID, offset, length, little endian, ended by an all-zero entry). It is written
// here, with 64-bit bounds checks, because abi.CertTable.Unmarshal adds offset+length in 32
// bits and lets a hostile table allocate gigabytes.
func vcekFromCertTable(t []byte) ([]byte, error) {
	const entrySize = abi.CertTableEntrySize
	var entries [][3]uint64 // guid index, offset, length
	var guids [][16]byte
	for i := 0; ; i++ {
		if i >= maxCertTableEntries {
			return nil, fmt.Errorf("more than %d entries", maxCertTableEntries)
		}
		off := i * entrySize
		if off+entrySize > len(t) {
			return nil, fmt.Errorf("entry %d beyond the table (%d bytes) and no terminator", i, len(t))
		}
		e := t[off : off+entrySize]
		var g [16]byte
		copy(g[:], e[:16])
		o, l := uint64(binary.LittleEndian.Uint32(e[16:20])), uint64(binary.LittleEndian.Uint32(e[20:24]))
		if g == ([16]byte{}) && o == 0 && l == 0 {
			headerEnd := uint64(off + entrySize)
			for j, en := range entries {
				if en[1] < headerEnd || en[1]+en[2] > uint64(len(t)) {
					return nil, fmt.Errorf("entry %d range [%d,+%d) outside the data (%d bytes)", j, en[1], en[2], len(t))
				}
			}
			break
		}
		entries = append(entries, [3]uint64{uint64(len(guids)), o, l})
		guids = append(guids, g)
	}
	for _, en := range entries {
		if guids[en[0]] == vcekGUID {
			return bytes.Clone(t[en[1] : en[1]+en[2]]), nil
		}
	}
	return nil, nil
}

func tcbString(t kds.TCBParts) string {
	return fmt.Sprintf("bl=%d tee=%d snp=%d ucode=%d", t.BlSpl, t.TeeSpl, t.SnpSpl, t.UcodeSpl)
}

func (v *Verifier) loadCached(rep *spb.Report) []byte {
	if v.cfg.CertCacheDir == "" {
		return nil
	}
	data, err := os.ReadFile(CachePath(v.cfg.CertCacheDir, rep.GetChipId(), rep.GetReportedTcb()))
	if err != nil {
		return nil
	}
	if b, _ := pem.Decode(data); b != nil && b.Type == "CERTIFICATE" {
		return b.Bytes
	}
	return data
}

// Verify implements verify.Verifier.
func (v *Verifier) Verify(ctx context.Context, ev *api.Evidence, p verify.Policy) (res *verify.Result, err error) {
	// Evidence is hostile and the parsing libraries are not all panic-free on malformed input.
	defer func() {
		if r := recover(); r != nil {
			res, err = nil, verify.Reject(verify.FieldEvidence, "", "", "malformed evidence: %v", r)
		}
	}()
	if ev == nil || ev.SNP == nil {
		return nil, verify.Reject(verify.FieldEvidence, "snp evidence", "none", "")
	}
	parsed, err := Parse(ev.SNP)
	if err != nil {
		return nil, err
	}
	rep := parsed.Report
	vcekDER := parsed.VCEK
	if len(vcekDER) == 0 {
		vcekDER = v.loadCached(rep)
	}
	if len(vcekDER) == 0 {
		return nil, verify.Reject(verify.FieldChain, "VCEK certificate", "none", "VCEK neither in the evidence nor in the cert cache")
	}
	att := &spb.Attestation{Report: rep, CertificateChain: &spb.CertificateChain{VcekCert: vcekDER}}
	now := v.cfg.Now()
	cacheKey := vcekCacheKey(rep, vcekDER)
	if known := v.chainVerified(cacheKey, now); known != nil {
		// The VCEK chained to our roots before (same DER, same product line) and is still
		// valid: only the report signature is left to check.
		if err := known.reportSignature(parsed.Raw); err != nil {
			return nil, verify.Reject(verify.FieldSignature, "", "", "report signature does not verify with the VCEK: %v", err)
		}
	} else {
		vcek, err := x509.ParseCertificate(vcekDER)
		if err != nil {
			return nil, verify.Reject(verify.FieldChain, "", "", "VCEK certificate: %v", err)
		}
		opts := &sevverify.Options{DisableCertFetching: true, TrustedRoots: v.cfg.TrustedRoots, Now: now}
		if err := sevverify.SnpAttestation(att, opts); err != nil {
			// Tell a bad report signature apart from a VCEK that does not chain to our roots.
			if serr := sevverify.SnpReportSignature(parsed.Raw, vcek); serr != nil {
				return nil, verify.Reject(verify.FieldSignature, "", "", "report signature does not verify with the VCEK: %v", serr)
			}
			return nil, verify.Reject(verify.FieldChain, "", "", "VCEK does not chain to the trusted %s roots: %v", v.cfg.TEE, err)
		}
		v.rememberChain(cacheKey, vcek)
	}

	// The workload policy, each field with its own reason.
	if len(p.ReportData) != abi.ReportDataSize || !bytes.Equal(rep.GetReportData(), p.ReportData) {
		return nil, verify.Reject(verify.FieldReportData, hex.EncodeToString(p.ReportData), hex.EncodeToString(rep.GetReportData()), "not bound to this session's nonce and TEE key")
	}
	meas := hex.EncodeToString(rep.GetMeasurement())
	if !slices.Contains(p.Measurements, meas) {
		return nil, verify.Reject(verify.FieldMeasurement, "one of ["+strings.Join(p.Measurements, ",")+"]", meas, "")
	}
	if want, ok := p.LaunchHostData(tee.TEE(v.cfg.TEE)); !ok || !bytes.Equal(rep.GetHostData(), want) {
		return nil, verify.Reject(verify.FieldHostData, hex.EncodeToString(want), hex.EncodeToString(rep.GetHostData()), "not the workload's envelope digest")
	}
	pol, err := abi.ParseSnpPolicy(rep.GetPolicy())
	if err != nil {
		return nil, verify.Reject(verify.FieldEvidence, "", "", "guest policy: %v", err)
	}
	if pol.Debug {
		return nil, verify.Reject(verify.FieldDebug, "off", "on", "guest policy allows debugging")
	}
	reported := kds.DecomposeTCBVersion(kds.TCBVersion(rep.GetReportedTcb()))
	var minTCB kds.TCBParts
	if m := p.MinSNPTCB; m != nil {
		minTCB = kds.TCBParts{BlSpl: m.Bootloader, TeeSpl: m.TEE, SnpSpl: m.SNP, UcodeSpl: m.Microcode}
		if !kds.TCBPartsLE(minTCB, reported) {
			return nil, verify.Reject(verify.FieldTCB, ">= "+tcbString(minTCB), tcbString(reported), "reported TCB below the workload's minimum")
		}
	}
	// go-sev-guest validate: the same values again plus its own consistency rules (TCB of the
	// VCEK = reported TCB, committed = current firmware, no migration agent, CHIP_ID = HWID).
	vopts := &validate.Options{
		GuestPolicy: abi.SnpPolicy{SMT: true},
		ReportData:  p.ReportData,
		HostData:    p.HostData,
		MinimumTCB:  minTCB,
	}
	if err := validate.SnpAttestation(att, vopts); err != nil {
		return nil, verify.Reject(verify.FieldPolicy, "", "", "validate: %v", err)
	}
	_ = ctx
	return &verify.Result{TEE: v.cfg.TEE, Measurement: meas, TCB: tcbString(reported)}, nil
}

var _ verify.Verifier = (*Verifier)(nil)
