package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/containerd/containerd/errdefs"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/runtime-shim/config"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
	"github.com/sealpod/sealpod/simtee/amdsp"
	"github.com/sealpod/sealpod/simtee/spserver"
)

// ErrTEEMismatch is wrapped when a pod was sealed for no TEE the node offers.
var ErrTEEMismatch = errors.New("no TEE in common")

// chooseTEE returns the first TEE of the node's list (its order of preference) that the pod
// was sealed for. The pod's list only filters: a TEE the node does not offer is never chosen.
func chooseTEE(offers []tee.TEE, sealed []string) (tee.TEE, bool) {
	for _, t := range offers {
		if slices.Contains(sealed, string(t)) {
			return t, true
		}
	}
	return "", false
}

// podTEE reads the TEEs the pod was sealed for from the envelope header and picks the node's.
// The header is host-readable, unauthenticated data: it only narrows the node's own list, and
// a wrong list makes the guest's attestation fail at the broker, never boots another TEE.
func podTEE(sandboxID string, cfg *config.Config, env []byte) (tee.TEE, error) {
	h, err := envelope.ParseHeader(env)
	if err != nil {
		return "", fmt.Errorf("sandbox %s: envelope header: %w: %w", sandboxID, err, errdefs.ErrInvalidArgument)
	}
	t, ok := chooseTEE(cfg.Offers(), h.TEEs)
	if !ok {
		// Both lists are validated TEE names (envelope.Header.Validate, config.Validate).
		return "", fmt.Errorf("sandbox %s: pod sealed for %s; this node offers %s: %w: %w", sandboxID,
			strings.Join(h.TEEs, ", "), cfg.OffersList(), ErrTEEMismatch, errdefs.ErrFailedPrecondition)
	}
	return t, nil
}

// snpPolicy is the SNP guest policy of the node: debug off, SMT as the node config says.
func snpPolicy(cfg *config.Config) uint64 {
	p := uint64(qemu.SNPPolicyReserved)
	if cfg.SNPSMTAllowed() {
		p |= qemu.SNPPolicySMT
	}
	return p
}

// setLaunch fills spec's TEE part: the chosen TEE, the envelope digest the launch binds
// (HOST_DATA / MRCONFIGID) and the node's launch parameters of that TEE.
func setLaunch(spec *vmSpec, t tee.TEE, cfg *config.Config, env []byte) {
	d := envelope.Sum(env)
	spec.TEE, spec.HostData = t, d[:]
	switch t {
	case tee.SNP:
		spec.SNP = qemu.SNPOptions{CBitPos: cfg.SNPCBitPos, ReducedPhysBits: cfg.SNPReducedPhysBits, Policy: snpPolicy(cfg)}
	case tee.TDX:
		spec.TDX = qemu.TDXOptions{QGS: cfg.QGS()}
	}
}

// teeService is the host side of an emulated TEE on the sim-sp port: the shim plays the
// hardware (insecure by construction; the node config opts in, loudly).
type teeService struct {
	name  string // for logs
	serve func(ctx context.Context, conn io.ReadWriteCloser, log *slog.Logger) error
}

// simService loads the key and computes the launch values of an emulated TEE before QEMU
// starts (nil for hardware TEEs: the hardware answers the guest).
func simService(t tee.TEE, cfg *config.Config, g *bundle.Bundle, env []byte) (*teeService, error) {
	switch t {
	case tee.Sim:
		signer, err := amdsp.LoadSigner(cfg.SimKey)
		if err != nil {
			return nil, fmt.Errorf("sim key %s: %w", cfg.SimKey, err)
		}
		launch, err := spserver.LaunchFromBundle(g, env)
		if err != nil {
			return nil, err
		}
		return &teeService{name: "simulated AMD-SP", serve: func(ctx context.Context, conn io.ReadWriteCloser, log *slog.Logger) error {
			return spserver.Serve(ctx, conn, signer, launch, log)
		}}, nil
	case tee.SimTDX:
		return simTDXService(cfg, g, env)
	case tee.SimPEF:
		return simPEFService(cfg, g, slog.Default())
	}
	return nil, nil
}
