// Package spchan is the host's side of the simulated-TEE port (the frame protocol of package
// agent/simsp): one loop that reads the guest's requests and writes the answers the simulated
// hardware gives, shared by the simulated AMD-SP (simtee/spserver) and the simulated TDX
// (simtee/tdxsim).
package spchan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/sealpod/sealpod/agent/simsp"
)

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
