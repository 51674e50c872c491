package simsp

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/sealpod/sealpod/internal/lazyregexp"
)

// KindESMFile asks the simulated PEF ultravisor (sim-pef) for one attachment of the guest's
// ESM blob by name (Request.Name); the answer carries it in Response.File. It stands for the
// UV_ESMB_GET_FILE ultracall (0xF14C) a PEF guest makes on hardware (docs/pef.md): the
// ultravisor answers only for a guest whose blob it opened and whose kernel, initrd and boot
// arguments matched its digests, and each attachment only once per boot.
const KindESMFile = "esm-file"

// MaxESMFile bounds an attachment the guest accepts (Sealpod's are 32 and 52 bytes; the
// ultravisor hands out at most one 64-KiB files-fdt).
const MaxESMFile = 4096

// ErrESMFile: the host's answer is not an attachment.
var ErrESMFile = errors.New("simsp: bad ESM attachment")

// esmFileNameRe is the attachment-name syntax of imagebuilder/esm (svm-tools' node names).
var esmFileNameRe = lazyregexp.New(`^[A-Za-z][0-9A-Za-z,._+-]{0,30}$`)

// GetESMFile asks the simulated ultravisor for the ESM attachment name.
func (c *Client) GetESMFile(ctx context.Context, name string) ([]byte, error) {
	if !esmFileNameRe.MatchString(name) {
		return nil, fmt.Errorf("%w: name %q is not an attachment name", ErrESMFile, clip(name))
	}
	resp, err := c.roundTrip(ctx, Request{Version: ProtocolVersion, Kind: KindESMFile, Name: name})
	if err != nil {
		return nil, err
	}
	return ParseESMFileResponse(resp, name)
}

// ParseESMFileResponse checks a host answer to a KindESMFile request: exactly one non-empty
// attachment of at most MaxESMFile bytes, and nothing else.
func ParseESMFileResponse(resp *Response, name string) ([]byte, error) {
	if resp.Error != "" {
		return nil, fmt.Errorf("%w: ESM attachment %s: %s", ErrRefused, clip(name), clip(resp.Error))
	}
	if len(resp.Report) > 0 || len(resp.CertTable) > 0 || len(resp.Quote) > 0 || resp.TEE != "" {
		return nil, fmt.Errorf("%w: %s: the answer carries more than an attachment", ErrESMFile, clip(name))
	}
	if n := len(resp.File); n == 0 || n > MaxESMFile {
		return nil, fmt.Errorf("%w: %s: %d bytes, want 1..%d", ErrESMFile, clip(name), n, MaxESMFile)
	}
	return bytes.Clone(resp.File), nil
}
