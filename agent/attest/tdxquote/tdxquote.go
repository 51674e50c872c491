// Package tdxquote parses a TDX quote (version 4) that reached the guest from outside its
// trust boundary (configfs-tsm, the tdx_guest device, or the host's simulated TDX of sim-tdx)
// and checks that it carries the REPORT_DATA the guest asked for. It only parses: the key
// broker verifies the signatures. It links nothing but go-tdx-guest's ABI, so both the
// attesters (agent/attest) and the sim channel client (agent/simsp) use it.
package tdxquote

import (
	"bytes"
	"errors"
	"fmt"

	tdxabi "github.com/google/go-tdx-guest/abi"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
)

// MaxSize bounds a quote (the broker's limit; real v4 quotes with a PCK chain are ~5 KiB).
const MaxSize = 64 << 10

// Errors callers branch on.
var (
	// ErrMalformed: the bytes are not a well-formed version 4 quote of at most MaxSize bytes.
	ErrMalformed = errors.New("malformed TDX quote")
	// ErrReportData: the quote does not carry the REPORT_DATA that was asked for.
	ErrReportData = errors.New("TDX quote does not carry the requested REPORT_DATA")
)

// Parse decodes a version 4 quote of 1..MaxSize bytes. go-tdx-guest v0.3.1's QuoteToProto
// panics on some malformed quotes (the broker's FuzzParse found it), so a panic is an error.
func Parse(b []byte) (q4 *tdxpb.QuoteV4, err error) {
	if len(b) == 0 || len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, want 1..%d", ErrMalformed, len(b), MaxSize)
	}
	defer func() {
		if r := recover(); r != nil {
			q4, err = nil, fmt.Errorf("%w: %v", ErrMalformed, r)
		}
	}()
	q, err := tdxabi.QuoteToProto(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	q4, ok := q.(*tdxpb.QuoteV4)
	if !ok || q4 == nil {
		return nil, fmt.Errorf("%w: %T, want a version 4 quote", ErrMalformed, q)
	}
	if err := tdxabi.CheckQuoteV4(q4); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return q4, nil
}

// Check parses b and requires its REPORT_DATA to be rd.
func Check(b []byte, rd [64]byte) (*tdxpb.QuoteV4, error) {
	q, err := Parse(b)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(q.GetTdQuoteBody().GetReportData(), rd[:]) {
		return nil, ErrReportData
	}
	return q, nil
}
