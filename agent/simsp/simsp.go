// Package simsp is the contract between a `sim` guest and its simulated AMD-SP, which the host
// (the shim, or a test harness, with package simtee/spserver) plays on the virtio-serial port
// named PortName: the guest sends the 64 bytes of REPORT_DATA, the host answers an SNP-format
// attestation report with MEASUREMENT = the launch digest of what it booted and HOST_DATA =
// the envelope digest it launched the guest with, plus the certificate table (VCEK, ASK, ARK).
// This package holds the frame protocol (both sides) and the guest-side client; it imports
// nothing of the host side, the broker or the launch-measurement code, so the agent links only
// what runs in the guest.
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

	"github.com/sealpod/sealpod/kbs/api"
)

// PortName is the virtio-serial port name of the simulated AMD-SP.
const PortName = "sealpod.sim-sp"

// ProtocolVersion is the only Request.Version this package speaks.
const ProtocolVersion = 1

// MaxFrame bounds one message (a report with its certificate table is about 6 KiB).
const MaxFrame = 64 << 10

// Errors callers branch on.
var (
	// ErrFrame: a frame is empty, too large or not the expected JSON.
	ErrFrame = errors.New("simsp: bad frame")
	// ErrReport: the host's answer is not a report for our REPORT_DATA.
	ErrReport = errors.New("simsp: bad report")
	// ErrRefused: the host answered with an error.
	ErrRefused = errors.New("simsp: request refused by the host")
)

// Request is what the guest sends.
type Request struct {
	Version    int    `json:"version"`
	ReportData []byte `json:"reportData"` // exactly 64 bytes
}

// Response is what the host answers.
type Response struct {
	Report    []byte `json:"report,omitempty"`    // 1184-byte ATTESTATION_REPORT
	CertTable []byte `json:"certTable,omitempty"` // AMD GUID table: VCEK, ASK, ARK
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

// GetReport asks the simulated AMD-SP for a report carrying reportData.
func (c *Client) GetReport(ctx context.Context, reportData [64]byte) (*Report, error) {
	if d, ok := c.rw.(deadliner); ok {
		if dl, has := ctx.Deadline(); has {
			_ = d.SetDeadline(dl)
			defer d.SetDeadline(time.Time{})
		}
	}
	if err := WriteFrame(c.rw, Request{Version: ProtocolVersion, ReportData: reportData[:]}); err != nil {
		return nil, fmt.Errorf("simsp: send request: %w", err)
	}
	var resp Response
	if err := ReadFrame(c.rw, &resp); err != nil {
		return nil, fmt.Errorf("simsp: read answer: %w", err)
	}
	return ParseResponse(&resp, reportData)
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
