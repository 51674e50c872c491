package snp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	sevtest "github.com/google/go-sev-guest/testing"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
	"github.com/sealpod/sealpod/simtee/amdsp"
)

var (
	fakeOnce   sync.Once
	fakeSigner *sevtest.AmdSigner
	fakeErr    error
)

// librarySigner is go-sev-guest's fake ARK/ASK/VCEK signer (test-only keys).
func librarySigner(t testing.TB) *sevtest.AmdSigner {
	fakeOnce.Do(func() {
		fakeSigner, fakeErr = sevtest.DefaultTestOnlyCertChain("Milan-B0", time.Now().Add(-time.Hour))
	})
	if fakeErr != nil {
		t.Fatalf("fake AMD chain: %v", fakeErr)
	}
	return fakeSigner
}

func rootsOf(s *sevtest.AmdSigner) map[string][]*trust.AMDRootCerts {
	return map[string][]*trust.AMDRootCerts{"Milan": {{
		ProductLine:  "Milan",
		ProductCerts: &trust.ProductCerts{Ark: s.Ark, Ask: s.Ask},
	}}}
}

type fields struct {
	reportData  [64]byte
	measurement [48]byte
	hostData    [32]byte
	debug       bool
	tcb         uint64
}

// rawReport builds a v3 Milan report with f and signs it with key.
func rawReport(t testing.TB, f fields, key *ecdsa.PrivateKey) []byte {
	r := make([]byte, abi.ReportSize)
	binary.LittleEndian.PutUint32(r[0x00:], 3)
	binary.LittleEndian.PutUint64(r[0x08:], abi.SnpPolicyToBytes(abi.SnpPolicy{SMT: true, Debug: f.debug}))
	binary.LittleEndian.PutUint32(r[0x34:], abi.SignEcdsaP384Sha384)
	binary.LittleEndian.PutUint64(r[0x38:], f.tcb)
	copy(r[0x50:], f.reportData[:])
	copy(r[0x90:], f.measurement[:])
	copy(r[0xC0:], f.hostData[:])
	binary.LittleEndian.PutUint64(r[0x180:], f.tcb)
	r[0x188], r[0x189], r[0x18A] = 0x19, 0x01, 0x00
	binary.LittleEndian.PutUint64(r[0x1E0:], f.tcb)
	binary.LittleEndian.PutUint64(r[0x1F0:], f.tcb)
	d := sha512.Sum384(abi.SignedComponent(r))
	R, S, err := ecdsa.Sign(rand.Reader, key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := abi.SetSignature(R, S, r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestVerifySNP(t *testing.T) {
	s := librarySigner(t)
	table, err := s.CertTableBytes()
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 32)
	pub := make([]byte, 32)
	rand.Read(nonce)
	rand.Read(pub)
	rd := api.ReportData(nonce, pub)
	meas := sha512.Sum384([]byte("guest"))
	hd := sha256.Sum256([]byte("envelope"))
	good := fields{reportData: rd, measurement: meas, hostData: hd}
	policy := verify.Policy{
		Measurements: []string{hex.EncodeToString(meas[:])},
		HostData:     hd[:],
		ReportData:   rd[:],
	}
	foreign, err := amdsp.NewChain(amdsp.Options{RSABits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	foreignRoots := foreign.Roots().TrustedRoots()

	tests := []struct {
		name      string
		mutate    func(f *fields)
		policy    func(p *verify.Policy)
		evidence  func(ev *api.SNPEvidence)
		roots     map[string][]*trust.AMDRootCerts
		wantField string
	}{
		{name: "good"},
		{name: "good, VCEK as DER", evidence: func(ev *api.SNPEvidence) { ev.CertTable, ev.VCEK = nil, s.Vcek.Raw }},
		{name: "wrong measurement", mutate: func(f *fields) { f.measurement[0] ^= 1 }, wantField: verify.FieldMeasurement},
		{name: "wrong host data", mutate: func(f *fields) { f.hostData[0] ^= 1 }, wantField: verify.FieldHostData},
		{name: "wrong report data", mutate: func(f *fields) { f.reportData[0] ^= 1 }, wantField: verify.FieldReportData},
		{name: "debug on", mutate: func(f *fields) { f.debug = true }, wantField: verify.FieldDebug},
		{name: "tcb too low", policy: func(p *verify.Policy) { p.MinSNPTCB = &verify.SNPTCB{SNP: 8} }, wantField: verify.FieldTCB},
		{name: "tampered signature", evidence: func(ev *api.SNPEvidence) { ev.Report[0x2A0] ^= 1 }, wantField: verify.FieldSignature},
		{name: "tampered field after signing", evidence: func(ev *api.SNPEvidence) { ev.Report[0x90] ^= 1 }, wantField: verify.FieldSignature},
		{name: "foreign root", roots: foreignRoots, wantField: verify.FieldChain},
		{name: "fake chain against AMD's real roots", roots: map[string][]*trust.AMDRootCerts{}, wantField: verify.FieldChain},
		{name: "no VCEK", evidence: func(ev *api.SNPEvidence) { ev.CertTable = nil }, wantField: verify.FieldChain},
		{name: "short report", evidence: func(ev *api.SNPEvidence) { ev.Report = ev.Report[:100] }, wantField: verify.FieldEvidence},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := good
			if tc.mutate != nil {
				tc.mutate(&f)
			}
			ev := &api.SNPEvidence{Report: rawReport(t, f, s.Keys.Vcek), CertTable: table}
			if tc.evidence != nil {
				tc.evidence(ev)
			}
			p := policy
			if tc.policy != nil {
				tc.policy(&p)
			}
			roots := rootsOf(s)
			if tc.roots != nil {
				roots = tc.roots
			}
			v := New(Config{TrustedRoots: roots})
			res, err := v.Verify(context.Background(), &api.Evidence{SNP: ev}, p)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if res.TEE != "snp" || res.Measurement != policy.Measurements[0] {
					t.Fatalf("result %+v", res)
				}
				return
			}
			var rej *verify.Rejection
			if !errors.As(err, &rej) || !errors.Is(err, verify.ErrRejected) {
				t.Fatalf("Verify error %v, want a rejection of %s", err, tc.wantField)
			}
			if rej.Field != tc.wantField {
				t.Fatalf("rejected field %q (%v), want %q", rej.Field, err, tc.wantField)
			}
		})
	}
}

func TestVerifySNPCertCache(t *testing.T) {
	s := librarySigner(t)
	dir := t.TempDir()
	meas := sha512.Sum384([]byte("guest"))
	hd := sha256.Sum256([]byte("envelope"))
	var rd [64]byte
	rep := rawReport(t, fields{reportData: rd, measurement: meas, hostData: hd, tcb: 0}, s.Keys.Vcek)
	p := verify.Policy{Measurements: []string{hex.EncodeToString(meas[:])}, HostData: hd[:], ReportData: rd[:]}
	v := New(Config{TrustedRoots: rootsOf(s), CertCacheDir: dir})
	ev := &api.Evidence{SNP: &api.SNPEvidence{Report: rep}}
	if _, err := v.Verify(context.Background(), ev, p); err == nil {
		t.Fatal("verified without any VCEK")
	}
	chip := make([]byte, 64)
	if err := os.WriteFile(CachePath(dir, chip, 0), s.Vcek.Raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), ev, p); err != nil {
		t.Fatalf("Verify with cached VCEK: %v", err)
	}
}

func TestTCBOrdering(t *testing.T) {
	lo, _ := kds.ComposeTCBParts(kds.TCBParts{SnpSpl: 1})
	if kds.TCBPartsLE(kds.TCBParts{SnpSpl: 2}, kds.DecomposeTCBVersion(lo)) {
		t.Fatal("TCB snp=1 accepted against minimum snp=2")
	}
}

func FuzzParse(f *testing.F) {
	s := librarySigner(f)
	table, _ := s.CertTableBytes()
	var zero fields
	rep := rawReport(f, zero, s.Keys.Vcek)
	f.Add(rep, table, []byte(nil))
	f.Add(rep, []byte(nil), s.Vcek.Raw)
	f.Add([]byte{1, 2, 3}, []byte{0}, []byte(nil))
	f.Fuzz(func(t *testing.T, report, certTable, vcek []byte) {
		ev := &api.SNPEvidence{Report: report, CertTable: certTable, VCEK: vcek}
		p, err := Parse(ev)
		if err == nil && p.Report == nil {
			t.Fatal("no error and no report")
		}
	})
}

// TestChainCache checks that a remembered VCEK chain still gets every report signature and
// policy check, and that expiry forces the full verification again.
func TestChainCache(t *testing.T) {
	s := librarySigner(t)
	table, _ := s.CertTableBytes()
	meas := sha512.Sum384([]byte("guest"))
	hd := sha256.Sum256([]byte("envelope"))
	var rd [64]byte
	p := verify.Policy{Measurements: []string{hex.EncodeToString(meas[:])}, HostData: hd[:], ReportData: rd[:]}
	now := time.Now()
	v := New(Config{TrustedRoots: rootsOf(s), Now: func() time.Time { return now }})
	good := rawReport(t, fields{reportData: rd, measurement: meas, hostData: hd}, s.Keys.Vcek)
	ev := func(r []byte) *api.Evidence { return &api.Evidence{SNP: &api.SNPEvidence{Report: r, CertTable: table}} }
	for i := range 2 {
		if _, err := v.Verify(context.Background(), ev(good), p); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	if v.tables != 1 {
		t.Fatalf("remembered VCEKs with a p384 table: %d, want 1 (the cached path would use crypto/ecdsa)", v.tables)
	}
	bad := append([]byte(nil), good...)
	bad[0x2A0] ^= 1
	var rej *verify.Rejection
	if _, err := v.Verify(context.Background(), ev(bad), p); !errors.As(err, &rej) || rej.Field != verify.FieldSignature {
		t.Fatalf("tampered report with cached VCEK: %v", err)
	}
	wrong := rawReport(t, fields{reportData: rd, measurement: meas, hostData: hd, debug: true}, s.Keys.Vcek)
	if _, err := v.Verify(context.Background(), ev(wrong), p); !errors.As(err, &rej) || rej.Field != verify.FieldDebug {
		t.Fatalf("debug report with cached VCEK: %v", err)
	}
	now = s.Vcek.NotAfter.Add(time.Hour)
	if _, err := v.Verify(context.Background(), ev(good), p); !errors.As(err, &rej) || rej.Field != verify.FieldChain {
		t.Fatalf("expired VCEK: %v", err)
	}
}

// TestChainCacheNotPoisoned checks that only a fully verified chain is remembered: a VCEK
// that does not chain to the trusted roots, or a first report whose signature fails, leaves
// the cache empty, so the next report with that VCEK gets the full verification again.
func TestChainCacheNotPoisoned(t *testing.T) {
	s := librarySigner(t)
	foreign, err := amdsp.NewChain(amdsp.Options{RSABits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	meas := sha512.Sum384([]byte("guest"))
	hd := sha256.Sum256([]byte("envelope"))
	var rd [64]byte
	p := verify.Policy{Measurements: []string{hex.EncodeToString(meas[:])}, HostData: hd[:], ReportData: rd[:]}
	table, _ := s.CertTableBytes()
	good := rawReport(t, fields{reportData: rd, measurement: meas, hostData: hd}, s.Keys.Vcek)
	badSig := bytes.Clone(good)
	badSig[0x2A0] ^= 1
	cases := []struct {
		name   string
		roots  map[string][]*trust.AMDRootCerts
		report []byte
		field  string
	}{
		{"VCEK not chaining to the trusted roots", foreign.Roots().TrustedRoots(), good, verify.FieldChain},
		{"bad signature at first sight", rootsOf(s), badSig, verify.FieldSignature},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := New(Config{TrustedRoots: c.roots})
			for i := range 2 {
				var rej *verify.Rejection
				_, err := v.Verify(context.Background(), &api.Evidence{SNP: &api.SNPEvidence{Report: c.report, CertTable: table}}, p)
				if !errors.As(err, &rej) || rej.Field != c.field {
					t.Fatalf("round %d: got %v, want a %s rejection", i, err, c.field)
				}
				if n := len(v.verified); n != 0 {
					t.Fatalf("round %d: %d chains remembered after a refusal", i, n)
				}
			}
		})
	}
}

// FuzzVerify mutates signed evidence and runs the whole verifier: nothing may panic and no
// report whose signed part differs from the original may be accepted.
func FuzzVerify(f *testing.F) {
	s := librarySigner(f)
	table, _ := s.CertTableBytes()
	meas := sha512.Sum384([]byte("guest"))
	hd := sha256.Sum256([]byte("envelope"))
	var rd [64]byte
	good := rawReport(f, fields{reportData: rd, measurement: meas, hostData: hd}, s.Keys.Vcek)
	p := verify.Policy{Measurements: []string{hex.EncodeToString(meas[:])}, HostData: hd[:], ReportData: rd[:]}
	v := New(Config{TrustedRoots: rootsOf(s)})
	f.Add(good, table)
	f.Fuzz(func(t *testing.T, report, certTable []byte) {
		_, err := v.Verify(context.Background(), &api.Evidence{SNP: &api.SNPEvidence{Report: report, CertTable: certTable}}, p)
		if err == nil && (len(report) != len(good) || !bytes.Equal(report[:0x2A0], good[:0x2A0])) {
			t.Fatal("accepted a report whose signed part was modified")
		}
	})
}
