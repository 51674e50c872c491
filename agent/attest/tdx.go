package attest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	labi "github.com/google/go-tdx-guest/client/linuxabi"
	"github.com/sealpod/sealpod/agent/attest/tdxquote"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/kbs/api"
	"golang.org/x/sys/unix"
)

// TDXDevice is an open TDX guest device: the ioctl of go-tdx-guest's client.Device, which its
// fake (go-tdx-guest/testing.Device) implements.
type TDXDevice interface {
	Ioctl(command uintptr, argument any) (uintptr, error)
}

// MaxQuote bounds a TDX quote (the broker's limit; real v4 quotes with a PCK chain are ~5 KiB).
const MaxQuote = tdxquote.MaxSize

// TDX gets TD quotes (version 4, with the PCK chain): through configfs-tsm when TSM is set,
// else through Device. Upstream Linux has the quote only through configfs-tsm (6.7+); the
// tdx_guest device's quote ioctl exists in some vendor kernels only.
type TDX struct {
	TSM    configfsi.Client
	Device TDXDevice

	mu sync.Mutex
}

// TEE is "tdx".
func (*TDX) TEE() string { return api.TEETDX }

// Source is SourceTSM or SourceTDXGuest.
func (a *TDX) Source() string {
	if a.TSM != nil {
		return SourceTSM
	}
	return SourceTDXGuest
}

// Evidence gets a quote with REPORT_DATA rd; it must be a version 4 quote carrying rd.
func (a *TDX) Evidence(_ context.Context, rd [64]byte) (*unseal.Evidence, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var quote []byte
	if a.TSM != nil {
		resp, err := tsmReport(a.TSM, providerTDX, rd, false)
		if err != nil {
			return nil, fmt.Errorf("tdx: %w", err)
		}
		quote = resp.OutBlob
	} else {
		if a.Device == nil {
			return nil, fmt.Errorf("tdx: %w: no configfs-tsm and no %s", ErrEvidence, TDXGuestDevice)
		}
		var err error
		if quote, err = deviceQuote(a.Device, rd); err != nil {
			return nil, fmt.Errorf("tdx: %s: %w", TDXGuestDevice, err)
		}
	}
	return tdxEvidence(quote, rd)
}

// tdxEvidence checks a quote (size, version 4, REPORT_DATA) and builds the evidence.
func tdxEvidence(quote []byte, rd [64]byte) (*unseal.Evidence, error) {
	q, err := tdxquote.Check(quote, rd)
	if errors.Is(err, tdxquote.ErrReportData) {
		return nil, fmt.Errorf("tdx quote: %w", ErrReportData)
	}
	if err != nil {
		return nil, fmt.Errorf("tdx quote: %w", errors.Join(ErrEvidence, err))
	}
	ev := &api.TDXEvidence{Quote: bytes.Clone(quote)}
	return &unseal.Evidence{Evidence: &api.Evidence{TDX: ev}, HostData: q.GetTdQuoteBody().GetMrConfigId()}, nil
}

// deviceQuote gets a TD report for rd from the device and has it turned into a quote
// (TDX_CMD_GET_QUOTE, as go-tdx-guest's client does). The host writes the quote's length:
// it is bounded by the buffer.
func deviceQuote(d TDXDevice, rd [64]byte) ([]byte, error) {
	rreq := labi.TdxReportReq{ReportData: rd}
	res, err := d.Ioctl(labi.IocTdxGetReport, &rreq)
	if err != nil {
		return nil, fmt.Errorf("get report: %w", errors.Join(ErrEvidence, err))
	}
	if res != uintptr(labi.TdxAttestSuccess) {
		return nil, fmt.Errorf("get report: %w: result %d", ErrEvidence, res)
	}
	hdr := &labi.TdxQuoteHdr{Version: 1, InLen: labi.TdReportSize}
	copy(hdr.Data[:], rreq.TdReport[:])
	qreq := labi.TdxQuoteReq{Buffer: hdr, Length: labi.ReqBufSize}
	res, err = d.Ioctl(labi.IocTdxGetQuote, &qreq)
	if errors.Is(err, unix.ENOTTY) {
		return nil, fmt.Errorf("get quote: %w: the kernel's tdx_guest has no quote ioctl (use a kernel with configfs-tsm, Linux 6.7 or later)", errors.Join(ErrEvidence, err))
	}
	if err != nil {
		return nil, fmt.Errorf("get quote: %w", errors.Join(ErrEvidence, err))
	}
	if res != uintptr(labi.TdxAttestSuccess) {
		return nil, fmt.Errorf("get quote: %w: result %d", ErrEvidence, res)
	}
	if hdr.Status != labi.GetQuoteSuccess {
		return nil, fmt.Errorf("get quote: %w: status 0x%x", ErrEvidence, hdr.Status)
	}
	if hdr.OutLen == 0 || hdr.OutLen > uint32(len(hdr.Data)) {
		return nil, fmt.Errorf("get quote: %w: quote length %d, want 1..%d", ErrEvidence, hdr.OutLen, len(hdr.Data))
	}
	return bytes.Clone(hdr.Data[:hdr.OutLen]), nil
}
