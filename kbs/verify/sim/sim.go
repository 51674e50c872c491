// Package sim configures the verifiers of the simulated TEEs from the roots of
// --insecure-sim-roots: `sim` evidence (SNP-format reports signed by a node's simulated AMD-SP,
// package simtee/amdsp) is verified by package snp's code, and `sim-tdx` evidence (TDX v4
// quotes signed under a node's fake Intel PCK chain, package simtee/tdxsim) by package tdx's
// code, each with the sim roots as the only trusted roots. There is no verification logic
// here. Both are insecure by construction (the host holds the signing keys) and exist for CI
// and demos.
package sim

import (
	"fmt"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
	"github.com/sealpod/sealpod/kbs/verify/snp"
	"github.com/sealpod/sealpod/kbs/verify/tdx"
	"github.com/sealpod/sealpod/simtee/simroots"
)

// New returns a verifier for sim evidence that trusts only roots.
func New(roots *simroots.Roots) verify.Verifier {
	return snp.New(snp.Config{TEE: api.TEESim, TrustedRoots: roots.TrustedRoots()})
}

// Load reads a --insecure-sim-roots file and returns its sim verifier.
func Load(rootsPath string) (verify.Verifier, error) {
	roots, err := simroots.Load(rootsPath)
	if err != nil {
		return nil, fmt.Errorf("sim verifier: %w", err)
	}
	return New(roots), nil
}

// Verifiers returns the verifiers the roots enable, by TEE: sim always, sim-tdx when the roots
// carry the fake Intel root (tdx.NewSim: the real TDX verifier trusting only that root).
func Verifiers(roots *simroots.Roots) map[string]verify.Verifier {
	out := map[string]verify.Verifier{api.TEESim: New(roots)}
	if pool := roots.TDXRoots(); pool != nil {
		out[api.TEESimTDX] = tdx.NewSim(pool)
	}
	return out
}

// LoadVerifiers reads a --insecure-sim-roots file and returns Verifiers of its roots.
func LoadVerifiers(rootsPath string) (map[string]verify.Verifier, error) {
	roots, err := simroots.Load(rootsPath)
	if err != nil {
		return nil, fmt.Errorf("sim verifiers: %w", err)
	}
	return Verifiers(roots), nil
}
