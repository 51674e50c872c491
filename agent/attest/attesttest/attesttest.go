// Package attesttest puts the TEE libraries' own fakes behind the guest's evidence sources,
// for tests: go-sev-guest's fake sev-guest device (its test-only ARK/ASK/VCEK chain signs the
// reports), go-tdx-guest's fake tdx_guest device (replaying Intel's real sample quote), and
// go-configfs-tsm's fake TSM report subsystem with either of them as its provider — what the
// kernel's configfs-tsm does with the AMD-SP or the TDX quoting enclave behind it.
package attesttest

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"
	"github.com/google/go-sev-guest/abi"
	sevabi "github.com/google/go-sev-guest/client/linuxabi"
	sevtest "github.com/google/go-sev-guest/testing"
	"github.com/google/go-sev-guest/verify/trust"
	tdxabi "github.com/google/go-tdx-guest/abi"
	tdxlabi "github.com/google/go-tdx-guest/client/linuxabi"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
	tdxtest "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"
)

// SNP is go-sev-guest's fake AMD-SP: Device answers the REPORT_DATA values programmed with
// Expect, and the library signs each report with the VCEK of Signer's test-only chain. The
// reports are version 3, Milan, debug off, TCB TCB, with Measurement and HostData.
type SNP struct {
	Signer      *sevtest.AmdSigner
	Device      *sevtest.Device
	Measurement [48]byte
	HostData    [32]byte
	TCB         uint64
}

// NewSNP returns a fake AMD-SP whose host supplies the certificate table (VCEK, ASK, ARK);
// set Device.Certs to nil for a host without one.
func NewSNP(t testing.TB) *SNP {
	t.Helper()
	signer, err := sevtest.DefaultTestOnlyCertChain("Milan-B0", time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatalf("go-sev-guest fake AMD chain: %v", err)
	}
	certs, err := signer.CertTableBytes()
	if err != nil {
		t.Fatalf("go-sev-guest fake certificate table: %v", err)
	}
	s := &SNP{Signer: signer}
	copy(s.Measurement[:], "sealpod test guest measurement")
	copy(s.HostData[:], "sealpod test envelope digest")
	s.Device = &sevtest.Device{ReportDataRsp: map[string]any{}, Certs: certs, Signer: signer, SevProduct: abi.DefaultSevProduct()}
	return s
}

// Expect makes the device answer a request for rd with a report carrying rd.
func (s *SNP) Expect(rd [64]byte) { s.ExpectCarrying(rd, rd) }

// ExpectCarrying makes the device answer a request for asked with a report carrying
// carried (a device that does not do what it is asked).
func (s *SNP) ExpectCarrying(asked, carried [64]byte) {
	var resp sevabi.SnpReportRespABI
	copy(resp.Data[:], s.rawReport(carried))
	s.Device.ReportDataRsp[hex.EncodeToString(asked[:])] = &sevtest.GetReportResponse{Resp: resp}
}

// rawReport is an unsigned v3 Milan report (the fake device signs it), laid out as in the
// SEV-SNP ABI (table 22): the fields the key broker's policy and go-sev-guest's validate read.
func (s *SNP) rawReport(rd [64]byte) []byte {
	r := make([]byte, abi.ReportSize)
	binary.LittleEndian.PutUint32(r[0x00:], 3)
	binary.LittleEndian.PutUint64(r[0x08:], abi.SnpPolicyToBytes(abi.SnpPolicy{SMT: true}))
	binary.LittleEndian.PutUint32(r[0x34:], abi.SignEcdsaP384Sha384)
	binary.LittleEndian.PutUint64(r[0x38:], s.TCB)
	copy(r[0x50:], rd[:])
	copy(r[0x90:], s.Measurement[:])
	copy(r[0xC0:], s.HostData[:])
	binary.LittleEndian.PutUint64(r[0x180:], s.TCB)
	r[0x188], r[0x189], r[0x18A] = 0x19, 0x01, 0x00 // Milan
	binary.LittleEndian.PutUint64(r[0x1E0:], s.TCB)
	binary.LittleEndian.PutUint64(r[0x1F0:], s.TCB)
	return r
}

// Roots are the fake chain's ARK and ASK as the key broker's trusted roots.
func (s *SNP) Roots() map[string][]*trust.AMDRootCerts {
	return map[string][]*trust.AMDRootCerts{"Milan": {{
		ProductLine:  "Milan",
		ProductCerts: &trust.ProductCerts{Ark: s.Signer.Ark, Ask: s.Signer.Ask},
	}}}
}

// TSM is configfs-tsm with this AMD-SP behind the sev_guest provider: outblob is the signed
// report for inblob (through the fake device), auxblob the host's certificate table.
func (s *SNP) TSM() *faketsm.Client {
	return tsm("sev_guest", func(rd [64]byte) ([]byte, error) {
		var resp sevabi.SnpReportRespABI
		req := sevabi.SnpUserGuestRequest{ReqData: &sevabi.SnpReportReqABI{ReportData: rd}, RespData: &resp}
		if _, err := s.Device.Ioctl(sevabi.IocSnpGetReport, &req); err != nil {
			return nil, err
		}
		return resp.Data[:abi.ReportSize], nil
	}, func() []byte { return s.Device.Certs })
}

// TDX is go-tdx-guest's fake tdx_guest device serving Intel's real sample quote (Sapphire
// Rapids, go-tdx-guest testing/testdata) for its REPORT_DATA, ReportData.
type TDX struct {
	Device     *tdxtest.Device
	ReportData [64]byte
	Quote      []byte
	// Body is the sample quote's body (MRTD, RTMRs, MRCONFIGID) for policies.
	Body *tdxpb.TDQuoteBody
	// Others are REPORT_DATA values the device also answers, with the same (non-matching) quote.
	Others [][64]byte
}

// NewTDX returns the fake device. It also answers go-tdx-guest's own test case (REPORT_DATA
// 0…01) with the sample quote, which carries other REPORT_DATA: Others[0].
func NewTDX(t testing.TB) *TDX {
	t.Helper()
	q, err := tdxabi.QuoteToProto(testdata.RawQuote)
	if err != nil {
		t.Fatalf("go-tdx-guest sample quote: %v", err)
	}
	body := q.(*tdxpb.QuoteV4).GetTdQuoteBody()
	x := &TDX{Quote: testdata.RawQuote, Body: body}
	copy(x.ReportData[:], body.GetReportData())
	var report [tdxlabi.TdReportSize]byte
	copy(report[:], testdata.RawReport)
	tcs := tdxtest.TestCases() // the library's own case: REPORT_DATA 0…01
	for _, tc := range tcs {
		x.Others = append(x.Others, tc.Input)
	}
	tcs = append(tcs, tdxtest.TestCase{Name: "sample", Input: x.ReportData, Report: report, Quote: testdata.RawQuote})
	d, err := tdxtest.TcDevice(tcs)
	if err != nil {
		t.Fatalf("go-tdx-guest fake device: %v", err)
	}
	x.Device = d
	return x
}

// TSM is configfs-tsm with the tdx_guest provider: outblob is the quote for inblob.
func (x *TDX) TSM() *faketsm.Client {
	return tsm("tdx_guest", func(rd [64]byte) ([]byte, error) {
		if rd == x.ReportData {
			return x.Quote, nil
		}
		for _, o := range x.Others {
			if rd == o {
				return x.Quote, nil
			}
		}
		return nil, fmt.Errorf("fake tdx_guest: no quote for REPORT_DATA %x", rd)
	}, nil)
}

// Provider is configfs-tsm with another provider name (an unusable TSM for the guest).
func Provider(name string) *faketsm.Client {
	return tsm(name, func([64]byte) ([]byte, error) { return nil, syscall.EINVAL }, nil)
}

// tsm is go-configfs-tsm's fake report subsystem (ReportV7: entries, generations, inblob
// and privlevel checks) with provider, outblob and auxblob served by the given functions.
func tsm(provider string, outblob func([64]byte) ([]byte, error), auxblob func() []byte) *faketsm.Client {
	sub := faketsm.ReportV7(0)
	makeEntry, readAttr := sub.MakeEntry, sub.ReadAttr
	sub.MakeEntry = func() *faketsm.ReportEntry {
		e := makeEntry()
		e.ROAttrs = map[string][]byte{"provider": []byte(provider + "\n")} // readable before any write, as in Linux
		return e
	}
	sub.ReadAttr = func(e *faketsm.ReportEntry, attr string) ([]byte, error) {
		switch attr {
		case "provider":
			return []byte(provider + "\n"), nil
		case "outblob":
			in := e.InAttrs["inblob"]
			if in == nil || len(in.Value) == 0 || len(in.Value) > 64 {
				return nil, syscall.EINVAL
			}
			var rd [64]byte
			copy(rd[:], in.Value)
			return outblob(rd)
		case "auxblob":
			if auxblob == nil {
				return nil, os.ErrNotExist
			}
			return auxblob(), nil
		}
		return readAttr(e, attr)
	}
	return &faketsm.Client{Subsystems: map[string]configfsi.Client{"report": sub}}
}
