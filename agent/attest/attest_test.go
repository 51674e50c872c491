package attest_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-sev-guest/abi"
	tdxlabi "github.com/google/go-tdx-guest/client/linuxabi"
	tdxtest "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"
	"github.com/sealpod/sealpod/agent/attest"
	"github.com/sealpod/sealpod/agent/attest/attesttest"
	"github.com/sealpod/sealpod/agent/errkind"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
	"github.com/sealpod/sealpod/kbs/verify/snp"
	"github.com/sealpod/sealpod/kbs/verify/tdx"
)

// sessionReportData is REPORT_DATA as the agent makes it: api.ReportData(nonce, TEE key).
func sessionReportData(t *testing.T) [64]byte {
	t.Helper()
	nonce, pub := make([]byte, api.NonceSize), make([]byte, api.TEEPubKeySize)
	rand.Read(nonce)
	rand.Read(pub)
	return api.ReportData(nonce, pub)
}

// snpBroker is the key broker's SNP verifier with the fake chain's roots as trusted roots
// and, when cacheVCEK, the fake VCEK in its offline cert cache.
func snpBroker(t *testing.T, f *attesttest.SNP, cacheVCEK bool) (*snp.Verifier, verify.Policy) {
	t.Helper()
	cfg := snp.Config{TrustedRoots: f.Roots()}
	if cacheVCEK {
		cfg.CertCacheDir = t.TempDir()
		var chipID [64]byte // the fake reports' CHIP_ID
		if err := os.WriteFile(snp.CachePath(cfg.CertCacheDir, chipID[:], f.TCB), f.Signer.Vcek.Raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return snp.New(cfg), verify.Policy{Measurements: []string{hex.EncodeToString(f.Measurement[:])}, HostData: f.HostData[:]}
}

// tdxBroker is the key broker's TDX verifier with Intel's root (the sample quote is real),
// at a time the sample's PCK certificate is valid.
func tdxBroker(t *testing.T, f *attesttest.TDX) (*tdx.Verifier, verify.Policy) {
	t.Helper()
	q, err := tdx.Parse(&api.TDXEvidence{Quote: f.Quote})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain())
	if b == nil {
		t.Fatal("sample quote has no PCK chain")
	}
	pck, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	now := pck.NotBefore.Add(24 * time.Hour)
	rt := f.Body.GetRtmrs()
	m := hex.EncodeToString(f.Body.GetMrTd()) + "::" + hex.EncodeToString(rt[1]) + ":" + hex.EncodeToString(rt[2]) + ":"
	return tdx.New(tdx.Config{Now: func() time.Time { return now }}), verify.Policy{Measurements: []string{m}, HostData: f.Body.GetMrConfigId()[:32]}
}

// TestEvidenceVerifiedByBroker gets evidence from each source through the libraries' fakes
// and hands it to the key broker's verifiers in-process: accepted with the session's
// REPORT_DATA, refused (report_data) for another session's.
func TestEvidenceVerifiedByBroker(t *testing.T) {
	type setup struct {
		att      attest.Attester
		rd       [64]byte
		verifier verify.Verifier
		policy   verify.Policy
		hostData []byte
	}
	snpSetup := func(t *testing.T, device, hostCerts bool) setup {
		f := attesttest.NewSNP(t)
		if !hostCerts {
			f.Device.Certs = nil
		}
		rd := sessionReportData(t)
		f.Expect(rd)
		v, p := snpBroker(t, f, !hostCerts)
		var a attest.Attester = &attest.SNP{TSM: f.TSM()}
		if device {
			a = &attest.SNP{Device: f.Device}
		}
		return setup{a, rd, v, p, f.HostData[:]}
	}
	tdxSetup := func(t *testing.T, device bool) setup {
		f := attesttest.NewTDX(t)
		v, p := tdxBroker(t, f)
		var a attest.Attester = &attest.TDX{TSM: f.TSM()}
		if device {
			a = &attest.TDX{Device: f.Device}
		}
		return setup{a, f.ReportData, v, p, f.Body.GetMrConfigId()}
	}
	for _, tc := range []struct {
		name       string
		setup      func(t *testing.T) setup
		tee        string
		source     string
		certTable  bool // the evidence carries the host's certificate table (SNP)
		wantReason string
	}{
		{"snp configfs-tsm, VCEK chain in auxblob", func(t *testing.T) setup { return snpSetup(t, false, true) }, "snp", attest.SourceTSM, true, ""},
		{"snp sev-guest, VCEK chain from the extended report", func(t *testing.T) setup { return snpSetup(t, true, true) }, "snp", attest.SourceSEVGuest, true, ""},
		{"snp configfs-tsm, host without certificates, broker cache", func(t *testing.T) setup { return snpSetup(t, false, false) }, "snp", attest.SourceTSM, false, ""},
		{"snp sev-guest, host without certificates, broker cache", func(t *testing.T) setup { return snpSetup(t, true, false) }, "snp", attest.SourceSEVGuest, false, ""},
		{"tdx configfs-tsm", func(t *testing.T) setup { return tdxSetup(t, false) }, "tdx", attest.SourceTSM, false, ""},
		{"tdx tdx_guest", func(t *testing.T) setup { return tdxSetup(t, true) }, "tdx", attest.SourceTDXGuest, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.setup(t)
			if s.att.TEE() != tc.tee || s.att.Source() != tc.source {
				t.Fatalf("attester %s from %s, want %s from %s", s.att.TEE(), s.att.Source(), tc.tee, tc.source)
			}
			ev, err := s.att.Evidence(context.Background(), s.rd)
			if err != nil {
				t.Fatalf("Evidence: %v", err)
			}
			if !bytes.Equal(ev.HostData, s.hostData) {
				t.Fatalf("host data %x, want %x", ev.HostData, s.hostData)
			}
			if ev.Evidence.SNP != nil && (len(ev.Evidence.SNP.CertTable) > 0) != tc.certTable {
				t.Fatalf("certificate table of %d bytes, want one: %v", len(ev.Evidence.SNP.CertTable), tc.certTable)
			}
			p := s.policy
			p.ReportData = s.rd[:]
			res, err := s.verifier.Verify(context.Background(), ev.Evidence, p)
			if err != nil {
				t.Fatalf("broker refused the evidence: %v", err)
			}
			if res.TEE != tc.tee || res.Measurement != p.Measurements[0] {
				t.Fatalf("broker result %+v", res)
			}
			// The same evidence for another session (REPORT_DATA of another nonce) is refused.
			other := sessionReportData(t)
			p.ReportData = other[:]
			_, err = s.verifier.Verify(context.Background(), ev.Evidence, p)
			var rej *verify.Rejection
			if !errors.As(err, &rej) || rej.Field != verify.FieldReportData {
				t.Fatalf("evidence verified against another session's REPORT_DATA: %v, want a report_data rejection", err)
			}
		})
	}
}

// TestEvidenceCarriesAskedReportData: a device or TSM that answers with a report or quote
// for other REPORT_DATA is refused in the guest (ErrReportData), and no error text quotes
// the values.
func TestEvidenceCarriesAskedReportData(t *testing.T) {
	sf := attesttest.NewSNP(t)
	asked, carried := sessionReportData(t), sessionReportData(t)
	sf.ExpectCarrying(asked, carried)
	tf := attesttest.NewTDX(t)
	for _, tc := range []struct {
		name   string
		att    attest.Attester
		asked  [64]byte
		quoted [][]byte
	}{
		{"snp configfs-tsm", &attest.SNP{TSM: sf.TSM()}, asked, [][]byte{asked[:], carried[:]}},
		{"snp sev-guest", &attest.SNP{Device: sf.Device}, asked, [][]byte{asked[:], carried[:]}},
		// go-tdx-guest's own test case: REPORT_DATA 0…01 answered with the sample quote.
		{"tdx configfs-tsm", &attest.TDX{TSM: tf.TSM()}, tf.Others[0], [][]byte{tf.ReportData[:]}},
		{"tdx tdx_guest", &attest.TDX{Device: tf.Device}, tf.Others[0], [][]byte{tf.ReportData[:]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := tc.att.Evidence(context.Background(), tc.asked)
			if !errors.Is(err, attest.ErrReportData) {
				t.Fatalf("Evidence = %v, %v; want ErrReportData", ev, err)
			}
			if errkind.Of(err) != attest.ErrReportData {
				t.Fatalf("kind %q", errkind.Text(err))
			}
			for _, q := range tc.quoted {
				if strings.Contains(err.Error(), hex.EncodeToString(q)) {
					t.Fatalf("error quotes REPORT_DATA: %v", err)
				}
			}
		})
	}
}

// TestSNPCertificateTable: the host's certificate table is bounded, checked and trimmed; the
// report still comes when the table is unusable (the broker then needs its cache).
func TestSNPCertificateTable(t *testing.T) {
	padded := func(f *attesttest.SNP) []byte { return append(bytes.Clone(f.Device.Certs), make([]byte, 4096)...) }
	for _, tc := range []struct {
		name  string
		certs func(f *attesttest.SNP) []byte
		want  func(f *attesttest.SNP) []byte // the table in the evidence
	}{
		{"as the host gives it", func(f *attesttest.SNP) []byte { return f.Device.Certs }, func(f *attesttest.SNP) []byte { return f.Device.Certs }},
		{"page padding trimmed", padded, func(f *attesttest.SNP) []byte { return f.Device.Certs }},
		{"none", func(*attesttest.SNP) []byte { return nil }, func(*attesttest.SNP) []byte { return nil }},
		{"larger than the kernel allows", func(f *attesttest.SNP) []byte {
			return append(bytes.Clone(f.Device.Certs), make([]byte, attest.MaxCertTable)...)
		}, func(*attesttest.SNP) []byte { return nil }},
		{"entry outside the table", func(f *attesttest.SNP) []byte {
			c := bytes.Clone(f.Device.Certs)
			binary.LittleEndian.PutUint32(c[20:24], 1<<31) // first entry's length
			return c
		}, func(*attesttest.SNP) []byte { return nil }},
		{"no terminator", func(*attesttest.SNP) []byte { return bytes.Repeat([]byte{1}, 240) }, func(*attesttest.SNP) []byte { return nil }},
	} {
		for _, src := range []string{attest.SourceTSM, attest.SourceSEVGuest} {
			t.Run(tc.name+"/"+src, func(t *testing.T) {
				f := attesttest.NewSNP(t)
				want := tc.want(f)
				f.Device.Certs = tc.certs(f)
				rd := sessionReportData(t)
				f.Expect(rd)
				a := &attest.SNP{Device: f.Device}
				if src == attest.SourceTSM {
					a = &attest.SNP{TSM: f.TSM()}
				}
				ev, err := a.Evidence(context.Background(), rd)
				if err != nil {
					t.Fatalf("Evidence: %v", err)
				}
				if got := ev.Evidence.SNP.CertTable; !bytes.Equal(got, want) {
					t.Fatalf("certificate table %d bytes, want %d", len(got), len(want))
				}
				if len(want) > 0 {
					v, p := snpBroker(t, f, false)
					p.ReportData = rd[:]
					if _, err := v.Verify(context.Background(), ev.Evidence, p); err != nil {
						t.Fatalf("broker: %v", err)
					}
				}
			})
		}
	}
}

// TestTDXQuoteLengthBounded: the quote length in the TDX quote header is written by the host;
// a length beyond the buffer is an error, not a slice out of range (go-tdx-guest v0.3.1's
// client panics there).
func TestTDXQuoteLengthBounded(t *testing.T) {
	var rd, report [64]byte
	rd[0], report[0] = 7, 7
	var td [tdxlabi.TdReportSize]byte
	copy(td[:], report[:])
	long := append(bytes.Clone(testdata.RawQuote), make([]byte, tdxlabi.ReqBufSize)...)
	d, err := tdxtest.TcDevice([]tdxtest.TestCase{{Name: "long", Input: rd, Report: td, Quote: long}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = (&attest.TDX{Device: d}).Evidence(context.Background(), rd)
	if !errors.Is(err, attest.ErrEvidence) || !strings.Contains(err.Error(), "quote length") {
		t.Fatalf("Evidence = %v, want ErrEvidence about the quote length", err)
	}
}

// TestDetect: configfs-tsm first (when present and its provider is sev_guest or tdx_guest),
// then /dev/sev-guest, then /dev/tdx_guest, each with its reason.
func TestDetect(t *testing.T) {
	sf, tf := attesttest.NewSNP(t), attesttest.NewTDX(t)
	tsmFor := map[string]configfsi.Client{
		"sev_guest": sf.TSM(), "tdx_guest": tf.TSM(), "arm_cca_guest": attesttest.Provider("arm_cca_guest"),
	}
	errOpen := errors.New("open refused")
	for _, tc := range []struct {
		name          string
		tsm           string // provider; "" = no configfs-tsm; "error" = present but fails
		sev, tdx      bool   // device nodes present
		openFails     bool
		wantTEE       string // "" = no attester
		wantSource    string
		wantReason    string
		wantTSMErr    bool
		wantDetectErr error
	}{
		{name: "tsm sev_guest over the device", tsm: "sev_guest", sev: true, wantTEE: "snp", wantSource: attest.SourceTSM, wantReason: attest.ReasonTSM},
		{name: "tsm tdx_guest", tsm: "tdx_guest", wantTEE: "tdx", wantSource: attest.SourceTSM, wantReason: attest.ReasonTSM},
		{name: "sev-guest without tsm", sev: true, wantTEE: "snp", wantSource: attest.SourceSEVGuest, wantReason: attest.ReasonNoTSM},
		{name: "tdx_guest without tsm", tdx: true, wantTEE: "tdx", wantSource: attest.SourceTDXGuest, wantReason: attest.ReasonNoTSM},
		{name: "tsm of another provider, sev-guest", tsm: "arm_cca_guest", sev: true, wantTEE: "snp", wantSource: attest.SourceSEVGuest, wantReason: attest.ReasonTSMUnusable, wantTSMErr: true},
		{name: "tsm failing, tdx_guest", tsm: "error", tdx: true, wantTEE: "tdx", wantSource: attest.SourceTDXGuest, wantReason: attest.ReasonTSMUnusable, wantTSMErr: true},
		{name: "tsm failing, no device", tsm: "error", wantReason: attest.ReasonTSMUnusable, wantTSMErr: true},
		{name: "nothing", wantReason: attest.ReasonNoHardware},
		{name: "sev-guest that does not open", sev: true, openFails: true, wantDetectErr: attest.ErrEvidence},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			env := attest.Env{
				TSMDir: filepath.Join(dir, "tsm", "report"), SEVGuest: filepath.Join(dir, "sev-guest"), TDXGuest: filepath.Join(dir, "tdx_guest"),
				TSM: func() (configfsi.Client, error) {
					if c, ok := tsmFor[tc.tsm]; ok {
						return c, nil
					}
					return nil, errors.New("no report subsystem")
				},
				OpenSEV: func(string) (attest.SEVDevice, error) {
					if tc.openFails {
						return nil, errOpen
					}
					return sf.Device, nil
				},
				OpenTDX: func(string) (attest.TDXDevice, error) { return tf.Device, nil },
			}
			if tc.tsm != "" {
				if err := os.MkdirAll(env.TSMDir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for p, ok := range map[string]bool{env.SEVGuest: tc.sev, env.TDXGuest: tc.tdx} {
				if ok {
					if err := os.WriteFile(p, nil, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			c, err := attest.Detect(context.Background(), env)
			if tc.wantDetectErr != nil {
				if !errors.Is(err, tc.wantDetectErr) || !errors.Is(err, errOpen) {
					t.Fatalf("Detect error %v, want %v", err, tc.wantDetectErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			gotTEE := ""
			if c.Attester != nil {
				gotTEE = c.Attester.TEE()
				if c.Attester.Source() != c.Source {
					t.Fatalf("attester source %s, choice %s", c.Attester.Source(), c.Source)
				}
			}
			if gotTEE != tc.wantTEE || c.Source != tc.wantSource || c.Reason != tc.wantReason || (c.TSMErr != nil) != tc.wantTSMErr {
				t.Fatalf("Detect = tee %q source %q reason %q tsm error %v; want %q %q %q %v", gotTEE, c.Source, c.Reason, c.TSMErr, tc.wantTEE, tc.wantSource, tc.wantReason, tc.wantTSMErr)
			}
			if c.TSMErr != nil && !errors.Is(c.TSMErr, attest.ErrEvidence) {
				t.Fatalf("TSM error %v has no kind", c.TSMErr)
			}
		})
	}
}

// TestCertTableEntriesMatchTheLibrary: go-sev-guest parses the trimmed table to the same VCEK.
func TestCertTableEntriesMatchTheLibrary(t *testing.T) {
	f := attesttest.NewSNP(t)
	f.Device.Certs = append(bytes.Clone(f.Device.Certs), make([]byte, 4096)...)
	rd := sessionReportData(t)
	f.Expect(rd)
	ev, err := (&attest.SNP{Device: f.Device}).Evidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	var ct abi.CertTable
	if err := ct.Unmarshal(ev.Evidence.SNP.CertTable); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ct.Proto().GetVcekCert(), f.Signer.Vcek.Raw) {
		t.Fatal("trimmed table lost the VCEK")
	}
}
