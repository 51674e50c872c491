// Package simsp is the channel between a `sim` guest and its simulated AMD-SP, which the host
// (the shim, or the test harness) plays on the virtio-serial port named PortName: the guest
// sends the 64 bytes of REPORT_DATA, the host answers an SNP-format attestation report signed
// by kbs/simtee's Signer with MEASUREMENT = the launch digest of what it booted (the measure
// package) and HOST_DATA = the envelope digest it launched the guest with, plus the
// certificate table (VCEK, ASK, ARK).
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
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/sealpod/sealpod/guest-image/measure"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/simtee"
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

// DecodeMessage decodes one frame body strictly.
func DecodeMessage(b []byte, v any) error {
	if err := api.DecodeJSON(bytes.NewReader(b), v); err != nil {
		return fmt.Errorf("%w: %v", ErrFrame, err)
	}
	return nil
}

// Launch is what the simulated AMD-SP binds into every report of one guest.
type Launch struct {
	Measurement [48]byte // launch digest of firmware/kernel/initrd/cmdline/vCPUs
	HostData    [32]byte // envelope digest
}

// LaunchSource gives the launch values for the next report. A Launch is its own source; a
// host that changes its mind per request (a hostile host, or a test) supplies a function.
type LaunchSource interface{ Launch() Launch }

// Launch returns l.
func (l Launch) Launch() Launch { return l }

// LaunchFunc adapts a function to a LaunchSource.
type LaunchFunc func() Launch

// Launch calls f.
func (f LaunchFunc) Launch() Launch { return f() }

// LaunchFromBundle computes the launch values of a guest booted from b for an envelope: the
// sim launch digest (measure.Compute over measure.BundleInputs, as `make guest` does) and the
// envelope digest.
func LaunchFromBundle(b *bundle.Bundle, env []byte) (Launch, error) {
	var l Launch
	m, err := measure.Compute(measure.BundleInputs(b, bundle.TEESim))
	if err != nil {
		return l, fmt.Errorf("simsp launch %s: %w", b.Dir, err)
	}
	d, err := hex.DecodeString(m.Sim)
	if err != nil || len(d) != len(l.Measurement) {
		return l, fmt.Errorf("simsp launch %s: sim measurement %q is not 48 bytes of hex", b.Dir, m.Sim)
	}
	copy(l.Measurement[:], d)
	h, _ := hex.DecodeString(envelope.Digest(env))
	copy(l.HostData[:], h)
	return l, nil
}

// Serve answers report requests on conn until ctx is done or the guest side closes. Every
// request is signed with signer for the values launch returns at that moment. A malformed
// request gets an error answer; a framing error ends the session.
func Serve(ctx context.Context, conn io.ReadWriteCloser, signer *simtee.Signer, launch LaunchSource, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	for {
		var req Request
		err := ReadFrame(conn, &req)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
				return nil
			}
			return fmt.Errorf("simsp serve: read request: %w", err)
		}
		resp := answer(&req, signer, launch.Launch())
		if resp.Error != "" {
			log.Warn("simsp: refused a report request", "reason", resp.Error)
		} else {
			log.Debug("simsp: signed a report")
		}
		if err := WriteFrame(conn, resp); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("simsp serve: write response: %w", err)
		}
	}
}

func answer(req *Request, signer *simtee.Signer, l Launch) *Response {
	if req.Version != ProtocolVersion {
		return &Response{Error: fmt.Sprintf("request version %d: want %d", req.Version, ProtocolVersion)}
	}
	if len(req.ReportData) != abi.ReportDataSize {
		return &Response{Error: fmt.Sprintf("request reportData: %d bytes, want %d", len(req.ReportData), abi.ReportDataSize)}
	}
	o := simtee.ReportOptions{Measurement: l.Measurement, HostData: l.HostData}
	copy(o.ReportData[:], req.ReportData)
	rep, table, err := signer.Report(o)
	if err != nil {
		return &Response{Error: "sign report: " + err.Error()}
	}
	return &Response{Report: rep, CertTable: table}
}

// Client is the guest side.
type Client struct {
	rw io.ReadWriter
}

// NewClient returns a client on an open port (or any stream to a Serve).
func NewClient(rw io.ReadWriter) *Client { return &Client{rw: rw} }

type deadliner interface{ SetDeadline(time.Time) error }

// Report holds the evidence and the launch values the report carries, as the guest reads
// them from its own report.
type Report struct {
	Evidence *api.Evidence
	HostData [32]byte
	Measure  [48]byte
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
	r := &Report{Evidence: &api.Evidence{SNP: &api.SNPEvidence{Report: resp.Report, CertTable: resp.CertTable}}}
	copy(r.HostData[:], rp.GetHostData())
	copy(r.Measure[:], rp.GetMeasurement())
	return r, nil
}
