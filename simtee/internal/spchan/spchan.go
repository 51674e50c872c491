// Package spchan is the host's side of the simulated-TEE port (the frame protocol of package
// agent/simsp): one loop that reads the guest's requests and writes the answers the simulated
// hardware gives, shared by the simulated AMD-SP (simtee/spserver), the simulated TDX
// (simtee/tdxsim) and the simulated PEF ultravisor (simtee/pefuv), and Triage, the checks
// every one of them makes before its own answer.
package spchan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/internal/tee"
)

// Triage is what every simulated device answers before its own work: a request of another
// protocol version is refused, KindTEE is answered with t, and a kind not in accepted (the
// last of which is named in the refusal) is refused, saying what the device makes. It returns
// nil for a request of an accepted kind, which the device answers itself.
func Triage(req *simsp.Request, t tee.TEE, makes string, accepted ...string) *simsp.Response {
	if req.Version != simsp.ProtocolVersion {
		return &simsp.Response{Error: fmt.Sprintf("request version %d: want %d", req.Version, simsp.ProtocolVersion)}
	}
	if req.Kind == simsp.KindTEE {
		return &simsp.Response{TEE: string(t)}
	}
	if !slices.Contains(accepted, req.Kind) {
		return &simsp.Response{Error: fmt.Sprintf("request kind %q: this host simulates %s, which %s only (kind %q)",
			strings.ToValidUTF8(req.Kind, "?"), t, makes, accepted[len(accepted)-1])}
	}
	return nil
}

// Serve answers requests on conn until ctx is done or the guest side closes. name prefixes
// errors and log lines ("sim-sp", "sim-tdx"). A malformed request gets answer's error
// answer; a framing error ends the session.
func Serve(ctx context.Context, conn io.ReadWriteCloser, name string, answer func(*simsp.Request) *simsp.Response, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	for {
		var req simsp.Request
		err := simsp.ReadFrame(conn, &req)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
				return nil
			}
			return fmt.Errorf("%s serve: read request: %w", name, err)
		}
		resp := answer(&req)
		if resp.Error != "" {
			log.Warn(name+": refused a request", "reason", resp.Error)
		} else {
			log.Debug(name+": answered a request", "kind", req.Kind)
		}
		if err := simsp.WriteFrame(conn, resp); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s serve: write response: %w", name, err)
		}
	}
}
