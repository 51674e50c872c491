// Package pef is the IBM PEF backend of the broker. PEF has no attestation evidence to verify:
// the owner wraps the data key to each authorised host's key in the ESM blob and the
// ultravisor enforces the digests of kernel, initrd and cmdline. Key release by this broker
// is therefore not supported for pef.
package pef

import (
	"context"
	"fmt"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
)

// Verifier refuses every request with verify.ErrUnsupported.
type Verifier struct{}

// TEE implements verify.Verifier.
func (Verifier) TEE() string { return api.TEEPEF }

// Verify implements verify.Verifier; it always fails.
func (Verifier) Verify(context.Context, *api.Evidence, verify.Policy) (*verify.Result, error) {
	return nil, fmt.Errorf("tee pef: key release %w (PEF keys are wrapped to host keys in the ESM blob; there is no evidence to verify)", verify.ErrUnsupported)
}
