// Package simsp is the contract between a simulated-TEE guest and the simulated hardware the
// host (the shim, or a test harness) plays on the virtio-serial port named PortName:
//
//   - `sim` (package simtee/spserver, the simulated AMD-SP): the guest sends the 64 bytes of
//     REPORT_DATA, the host answers an SNP-format attestation report with MEASUREMENT = the
//     launch digest of what it booted and HOST_DATA = the envelope digest it launched the guest
//     with, plus the certificate table (VCEK, ASK, ARK);
//   - `sim-tdx` (package simtee/tdxsim, the simulated TDX module and quoting enclave): the
//     guest asks for a quote (Kind KindQuote) and the host answers a TDX v4 quote with MRTD and
//     RTMRs of what it booted and MRCONFIGID = the envelope digest, signed under the node's
//     fake Intel PCK chain;
//   - `sim-pef` (package simtee/pefuv, the simulated PEF ultravisor): the guest asks for an
//     attachment of its ESM blob by name (Kind KindESMFile, esmfile.go) — the data key and the
//     broker credential — which on hardware it reads with the UV_ESMB_GET_FILE ultracall.
//
// A guest learns which of them the host plays with a KindTEE request (Client.TEE): the
// guest attests as the TEE it was launched for, and the key broker accepts that TEE only for
// workloads registered for it. This package holds the frame protocol (both sides) and the
// guest-side client; it imports nothing of the host side, the broker or the
// launch-measurement code, so the agent links only what runs in the guest.
//
// Framing: every message is a 4-byte big-endian length followed by that many bytes of JSON
// (Request from the guest, Response from the host), at most MaxFrame bytes. The guest treats
// the host as hostile: it bounds what it reads and checks the report's size, version and
// REPORT_DATA before using it (the key broker verifies the signature).
package simsp

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/go-sev-guest/abi"

	"github.com/sealpod/sealpod/agent/attest/tdxquote"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/kbs/api"
)

// PortName is the virtio-serial port name of the simulated AMD-SP.
const PortName = "sealpod.sim-sp"

// ProtocolVersion is the only Request.Version this package speaks.
const ProtocolVersion = 1

// MaxFrame bounds one message (a report with its certificate table is about 6 KiB, a quote
// with its PCK chain about 7 KiB as JSON).
const MaxFrame = 64 << 10

// Request kinds (Request.Kind).
const (
	// KindReport asks for an SNP-format report (sim); "" means the same.
	KindReport = string(tee.EvidenceSNPReport)
	// KindQuote asks for a TDX v4 quote (sim-tdx).
	KindQuote = string(tee.EvidenceTDXQuote)
	// KindTEE asks which simulated TEE the host plays (Response.TEE).
	KindTEE = "tee"
)

// Errors callers branch on.
var (
	// ErrFrame: a frame is empty, too large or not the expected JSON.
	ErrFrame = errors.New("simsp: bad frame")
	// ErrReport: the host's answer is not a report for our REPORT_DATA.
	ErrReport = errors.New("simsp: bad report")
	// ErrRefused: the host answered with an error.
	ErrRefused = errors.New("simsp: request refused by the host")
	// ErrQuote: the host's answer is not a TDX quote for our REPORT_DATA.
	ErrQuote = errors.New("simsp: bad quote")
	// ErrTEE: the host names no simulated TEE this guest knows.
	ErrTEE = errors.New("simsp: bad simulated TEE")
)

// Request is what the guest sends.
type Request struct {
	Version    int    `json:"version"`
	Kind       string `json:"kind,omitempty"`       // KindReport (or ""), KindQuote or KindTEE
	ReportData []byte `json:"reportData,omitempty"` // exactly 64 bytes for a report or a quote
	Name       string `json:"name,omitempty"`       // the ESM attachment asked for (KindESMFile, sim-pef)
}

// Response is what the host answers (one of Report, Quote, TEE or Error).
type Response struct {
	Report    []byte `json:"report,omitempty"`    // 1184-byte ATTESTATION_REPORT
	CertTable []byte `json:"certTable,omitempty"` // AMD GUID table: VCEK, ASK, ARK
	Quote     []byte `json:"quote,omitempty"`     // TDX v4 quote with its PCK chain
	TEE       string `json:"tee,omitempty"`       // the simulated TEE: sim, sim-tdx or sim-pef
	File      []byte `json:"file,omitempty"`      // an ESM attachment (KindESMFile, sim-pef)
	Error     string `json:"error,omitempty"`
}

// WriteFrame writes one length-prefixed message.
func WriteFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("simsp: encode frame: %w", err)
	}
	if len(b) > MaxFrame {
		return fmt.Errorf("%w: %d bytes exceeds %d", ErrFrame, len(b), MaxFrame)
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err = w.Write(buf)
	return err
}

// ReadFrame reads one length-prefixed message into v, refusing frames over MaxFrame, unknown
// fields and trailing data.
func ReadFrame(r io.Reader, v any) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxFrame {
		return fmt.Errorf("%w: length %d (want 1..%d)", ErrFrame, n, MaxFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("%w: body: %v", ErrFrame, err)
	}
	return DecodeMessage(b, v)
}

// DecodeMessage decodes one frame body strictly (api.DecodeJSON: one JSON value, no unknown
// fields, nothing after it).
func DecodeMessage(b []byte, v any) error {
	if err := api.DecodeJSON(bytes.NewReader(b), v); err != nil {
		return fmt.Errorf("%w: %v", ErrFrame, err)
	}
	return nil
}

// Client is the guest side.
type Client struct {
	rw io.ReadWriter
}

// NewClient returns a client on an open port (or any stream to a Serve).
func NewClient(rw io.ReadWriter) *Client { return &Client{rw: rw} }

type deadliner interface{ SetDeadline(time.Time) error }

// Report holds the host's answer (the raw report and certificate table, the evidence the guest
// hands to the broker) and the launch values the report carries, as the guest reads them from
// its own report.
type Report struct {
	Report    []byte // 1184-byte ATTESTATION_REPORT
	CertTable []byte // AMD GUID table (VCEK, ASK, ARK), possibly empty
	HostData  [32]byte
	Measure   [48]byte
}

// roundTrip sends one request and reads its answer, within ctx's deadline where the port
// supports deadlines.
func (c *Client) roundTrip(ctx context.Context, req Request) (*Response, error) {
	if d, ok := c.rw.(deadliner); ok {
		if dl, has := ctx.Deadline(); has {
			_ = d.SetDeadline(dl)
			defer d.SetDeadline(time.Time{})
		}
	}
	if err := WriteFrame(c.rw, req); err != nil {
		return nil, fmt.Errorf("simsp: send request: %w", err)
	}
	var resp Response
	if err := ReadFrame(c.rw, &resp); err != nil {
		return nil, fmt.Errorf("simsp: read answer: %w", err)
	}
	return &resp, nil
}

// GetReport asks the simulated AMD-SP for a report carrying reportData.
func (c *Client) GetReport(ctx context.Context, reportData [64]byte) (*Report, error) {
	resp, err := c.roundTrip(ctx, Request{Version: ProtocolVersion, ReportData: reportData[:]})
	if err != nil {
		return nil, err
	}
	return ParseResponse(resp, reportData)
}

// TEE asks the host which simulated TEE it plays for this guest: tee.Sim, tee.SimTDX or
// tee.SimPEF.
func (c *Client) TEE(ctx context.Context) (tee.TEE, error) {
	resp, err := c.roundTrip(ctx, Request{Version: ProtocolVersion, Kind: KindTEE})
	if err != nil {
		return "", err
	}
	return ParseTEEResponse(resp)
}

// ParseTEEResponse checks a host answer to a KindTEE request: exactly a simulated TEE name.
func ParseTEEResponse(resp *Response) (tee.TEE, error) {
	if resp.Error != "" {
		return "", fmt.Errorf("%w: %s", ErrRefused, clip(resp.Error))
	}
	if len(resp.Report) > 0 || len(resp.CertTable) > 0 || len(resp.Quote) > 0 || len(resp.File) > 0 {
		return "", fmt.Errorf("%w: the answer carries evidence, want only a TEE name", ErrTEE)
	}
	t, err := tee.Parse(resp.TEE)
	if err != nil || !t.Simulated() {
		return "", fmt.Errorf("%w: %q, want %s, %s or %s", ErrTEE, clip(resp.TEE), tee.Sim, tee.SimTDX, tee.SimPEF)
	}
	return t, nil
}

// Quote holds the host's TDX answer (the raw quote, the evidence the guest hands to the
// broker) and the launch values it carries, as the guest reads them from its own quote.
type Quote struct {
	Quote      []byte
	MRConfigID [tee.TDXMRConfigIDSize]byte
	MRTD       [48]byte
	RTMRs      [4][48]byte
}

// GetQuote asks the simulated TDX for a quote carrying reportData.
func (c *Client) GetQuote(ctx context.Context, reportData [64]byte) (*Quote, error) {
	resp, err := c.roundTrip(ctx, Request{Version: ProtocolVersion, Kind: KindQuote, ReportData: reportData[:]})
	if err != nil {
		return nil, err
	}
	return ParseQuoteResponse(resp, reportData)
}

// ParseQuoteResponse checks a host answer to a KindQuote request for reportData: a well-formed
// version 4 quote of at most tdxquote.MaxSize bytes carrying reportData, and nothing else.
func ParseQuoteResponse(resp *Response, reportData [64]byte) (*Quote, error) {
	if resp.Error != "" {
		return nil, fmt.Errorf("%w: %s", ErrRefused, clip(resp.Error))
	}
	if len(resp.Report) > 0 || len(resp.CertTable) > 0 || resp.TEE != "" || len(resp.File) > 0 {
		return nil, fmt.Errorf("%w: the answer carries more than a quote", ErrQuote)
	}
	q, err := tdxquote.Check(resp.Quote, reportData)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrQuote, err)
	}
	body := q.GetTdQuoteBody()
	out := &Quote{Quote: bytes.Clone(resp.Quote)}
	copy(out.MRConfigID[:], body.GetMrConfigId())
	copy(out.MRTD[:], body.GetMrTd())
	for i, r := range body.GetRtmrs() {
		if i < len(out.RTMRs) {
			copy(out.RTMRs[i][:], r)
		}
	}
	return out, nil
}

// maxHostText bounds the host-written texts the guest quotes in its errors.
const maxHostText = 200

// clip bounds a host-written text and replaces anything but printable ASCII (it may reach the
// console inside an error).
func clip(s string) string {
	if len(s) > maxHostText {
		s = s[:maxHostText]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}

// ParseResponse checks a host answer for reportData and extracts the launch values.
func ParseResponse(resp *Response, reportData [64]byte) (*Report, error) {
	if resp.Error != "" {
		return nil, fmt.Errorf("%w: %s", ErrRefused, resp.Error)
	}
	if len(resp.Report) != abi.ReportSize {
		return nil, fmt.Errorf("%w: report is %d bytes, want %d", ErrReport, len(resp.Report), abi.ReportSize)
	}
	rp, err := abi.ReportToProto(resp.Report)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrReport, err)
	}
	if !bytes.Equal(rp.GetReportData(), reportData[:]) {
		return nil, fmt.Errorf("%w: REPORT_DATA is not the one requested", ErrReport)
	}
	if len(resp.CertTable) > 0 {
		var t abi.CertTable
		if err := t.Unmarshal(resp.CertTable); err != nil {
			return nil, fmt.Errorf("%w: certificate table: %v", ErrReport, err)
		}
	}
	r := &Report{Report: resp.Report, CertTable: resp.CertTable}
	copy(r.HostData[:], rp.GetHostData())
	copy(r.Measure[:], rp.GetMeasurement())
	return r, nil
}
