// Package sim verifies `sim` evidence: SNP-format reports signed by a node's simulated AMD-SP
// (package simtee/amdsp). Verification is exactly package snp's, with the sim roots of
// --insecure-sim-roots as the only trusted roots. It is insecure by construction (the host
// holds the signing key) and exists for CI and demos.
package sim

import (
	"fmt"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
	"github.com/sealpod/sealpod/kbs/verify/snp"
	"github.com/sealpod/sealpod/simtee/simroots"
)

// New returns a verifier for sim evidence that trusts only roots.
func New(roots *simroots.Roots) verify.Verifier {
	return snp.New(snp.Config{TEE: api.TEESim, TrustedRoots: roots.TrustedRoots()})
}

// Load reads a --insecure-sim-roots file and returns its verifier.
func Load(rootsPath string) (verify.Verifier, error) {
	roots, err := simroots.Load(rootsPath)
	if err != nil {
		return nil, fmt.Errorf("sim verifier: %w", err)
	}
	return New(roots), nil
}
