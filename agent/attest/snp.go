package attest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-sev-guest/abi"
	labi "github.com/google/go-sev-guest/client/linuxabi"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/kbs/api"
)

// SEVDevice is an open SEV-SNP guest device: the ioctl of go-sev-guest's client.Device, which
// its fake (go-sev-guest/testing.Device) implements.
type SEVDevice interface {
	Ioctl(command uintptr, argument any) (uintptr, error)
}

// MaxCertTable bounds the certificate table the host may hand over with an extended report:
// the kernel's own limit (SEV_FW_BLOB_MAX_SIZE, 16 KiB). A larger table is not read.
const MaxCertTable = 16 << 10

// maxCertTableEntries bounds the entries of a certificate table (as the broker does).
const maxCertTableEntries = 64

// SNP gets SEV-SNP extended reports (the report and, when the host supplies it, the
// certificate table with the VCEK): through configfs-tsm when TSM is set, else through Device.
type SNP struct {
	TSM    configfsi.Client
	Device SEVDevice

	mu sync.Mutex // one guest request at a time
}

// TEE is "snp".
func (*SNP) TEE() string { return api.TEESNP }

// Source is SourceTSM or SourceSEVGuest.
func (a *SNP) Source() string {
	if a.TSM != nil {
		return SourceTSM
	}
	return SourceSEVGuest
}

// Evidence gets a report with REPORT_DATA rd. The report must carry rd; the host's
// certificate table is passed on when it is well formed (trimmed to its entries) and dropped
// otherwise (the broker then needs the VCEK in its cache).
func (a *SNP) Evidence(_ context.Context, rd [64]byte) (*unseal.Evidence, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var raw, table []byte
	if a.TSM != nil {
		resp, err := tsmReport(a.TSM, providerSNP, rd, true)
		if err != nil {
			return nil, fmt.Errorf("snp: %w", err)
		}
		raw, table = resp.OutBlob, resp.AuxBlob
	} else {
		if a.Device == nil {
			return nil, fmt.Errorf("snp: %w: no configfs-tsm and no %s", ErrEvidence, SEVGuestDevice)
		}
		var err error
		if raw, table, err = extendedReport(a.Device, rd); err != nil {
			return nil, fmt.Errorf("snp: %s: %w", SEVGuestDevice, err)
		}
	}
	return snpEvidence(raw, table, rd)
}

// snpEvidence checks a report (size, format, REPORT_DATA) and builds the evidence.
func snpEvidence(raw, table []byte, rd [64]byte) (*unseal.Evidence, error) {
	if len(raw) != abi.ReportSize {
		return nil, fmt.Errorf("snp report: %w: %d bytes, want %d", ErrEvidence, len(raw), abi.ReportSize)
	}
	rep, err := abi.ReportToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("snp report: %w", errors.Join(ErrEvidence, err))
	}
	if !bytes.Equal(rep.GetReportData(), rd[:]) {
		return nil, fmt.Errorf("snp report: %w", ErrReportData)
	}
	ev := &api.SNPEvidence{Report: bytes.Clone(raw)}
	if n, err := certTableExtent(table); err == nil && n > 0 {
		ev.CertTable = bytes.Clone(table[:n])
	}
	return &unseal.Evidence{Evidence: &api.Evidence{SNP: ev}, HostData: rep.GetHostData()}, nil
}

// certTableExtent checks the syntax of a GHCB certificate table (24-byte entries: GUID, offset,
// length, little endian, ended by an all-zero entry; every blob after the entries and inside
// the table) and returns how many bytes it spans; 0 for an empty table. The host writes the
// table: it is bounded (MaxCertTable, 64 entries) and every range checked in 64 bits.
func certTableExtent(t []byte) (int, error) {
	if len(t) == 0 {
		return 0, nil
	}
	if len(t) > MaxCertTable {
		return 0, fmt.Errorf("certificate table: %d bytes, at most %d", len(t), MaxCertTable)
	}
	const entrySize = abi.CertTableEntrySize
	var ranges [][2]uint64
	for i := 0; ; i++ {
		if i > maxCertTableEntries {
			return 0, fmt.Errorf("certificate table: more than %d entries", maxCertTableEntries)
		}
		off := i * entrySize
		if off+entrySize > len(t) {
			return 0, fmt.Errorf("certificate table: entry %d beyond the table (%d bytes), no terminator", i, len(t))
		}
		e := t[off : off+entrySize]
		o, l := uint64(binary.LittleEndian.Uint32(e[16:20])), uint64(binary.LittleEndian.Uint32(e[20:24]))
		if bytes.Equal(e, make([]byte, entrySize)) {
			end := uint64(off + entrySize)
			if i == 0 {
				return 0, nil // no entries
			}
			for j, r := range ranges {
				if r[0] < end || r[0]+r[1] > uint64(len(t)) {
					return 0, fmt.Errorf("certificate table: entry %d range [%d,+%d) outside the data (%d bytes)", j, r[0], r[1], len(t))
				}
				end = max(end, r[0]+r[1])
			}
			return int(end), nil
		}
		ranges = append(ranges, [2]uint64{o, l})
	}
}

// errCertsLength: the extended report needs a certificate buffer of the returned length.
var errCertsLength = errors.New("certificate buffer too small")

// extendedReport asks the device for an extended report. The first request carries no
// certificate buffer: a host without certificates answers it with the report; one with
// certificates says how much room they need, and the request is repeated with a buffer of
// that size (at most MaxCertTable). Without a usable table the plain report is requested.
func extendedReport(d SEVDevice, rd [64]byte) (report, table []byte, err error) {
	rep, n, err := extReportIoctl(d, rd, nil)
	if err == nil {
		return rep, nil, nil
	}
	if errors.Is(err, errCertsLength) && n > 0 && n <= MaxCertTable {
		buf := make([]byte, n)
		if rep, _, err = extReportIoctl(d, rd, buf); err == nil {
			return rep, buf, nil
		}
	}
	// No certificates we can take (none, too large, or the extended request failed): the
	// plain report; the broker takes the VCEK from its cache.
	var resp labi.SnpReportRespABI
	req := labi.SnpUserGuestRequest{ReqData: &labi.SnpReportReqABI{ReportData: rd}, RespData: &resp}
	if err := guestRequest(d, labi.IocSnpGetReport, &req); err != nil {
		return nil, nil, fmt.Errorf("get report: %w", errors.Join(ErrEvidence, err))
	}
	return bytes.Clone(resp.Data[:abi.ReportSize]), nil, nil
}

// extReportIoctl issues SNP_GET_EXT_REPORT with certs as the certificate buffer. On
// errCertsLength it returns the length the host asked for.
func extReportIoctl(d SEVDevice, rd [64]byte, certs []byte) ([]byte, uint32, error) {
	var resp labi.SnpReportRespABI
	ext := labi.SnpExtendedReportReq{
		Data:        labi.SnpReportReqABI{ReportData: rd},
		Certs:       certs,
		CertsLength: uint32(len(certs)),
	}
	req := labi.SnpUserGuestRequest{ReqData: &ext, RespData: &resp}
	if err := guestRequest(d, labi.IocSnpGetExtendedReport, &req); err != nil {
		var fw *abi.SevFirmwareErr
		if errors.As(err, &fw) && fw.Status == abi.GuestRequestInvalidLength {
			return nil, ext.CertsLength, errCertsLength
		}
		return nil, 0, err
	}
	return bytes.Clone(resp.Data[:abi.ReportSize]), 0, nil
}

// guestRequest runs one sev-guest ioctl and turns its outcome into an error (as go-sev-guest's
// client does: a firmware error when the kernel passed one on, the ES result otherwise).
func guestRequest(d SEVDevice, cmd uintptr, req *labi.SnpUserGuestRequest) error {
	res, err := d.Ioctl(cmd, req)
	if err != nil {
		if req.FwErr != 0 {
			return &abi.SevFirmwareErr{Status: abi.SevFirmwareStatus(req.FwErr)}
		}
		return err
	}
	if res != uintptr(labi.EsOk) {
		return &labi.SevEsErr{Result: labi.EsResult(res)}
	}
	return nil
}
