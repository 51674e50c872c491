package shim

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/runtime-shim/config"
	"github.com/sealpod/sealpod/simtee/tdxsim"
)

// simTDXService is the host side of sim-tdx: the TDX quote server of simtee/tdxsim on the
// sim-sp port, signing under the node's fake Intel PCK chain (node config simTDXKey).
func simTDXService(cfg *config.Config, g *bundle.Bundle, env []byte) (*teeService, error) {
	signer, err := tdxsim.LoadSigner(cfg.SimTDXKey)
	if err != nil {
		return nil, fmt.Errorf("sim-tdx key %s: %w", cfg.SimTDXKey, err)
	}
	launch, err := tdxsim.LaunchFromBundle(g, env)
	if err != nil {
		return nil, err
	}
	return &teeService{name: "simulated TDX quote service", serve: func(ctx context.Context, conn io.ReadWriteCloser, log *slog.Logger) error {
		return tdxsim.Serve(ctx, conn, signer, launch, log)
	}}, nil
}
