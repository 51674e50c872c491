package api

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/sealpod/sealpod/internal/lazyregexp"
)

// Encrypted volumes (issue 15; docs/kbs.md "Volume generations"): the broker keeps a
// monotonic generation per (workload, volume identity) so that the guest can detect an older
// copy of a volume. The bump is two-phase: begin returns the committed generation c and a
// pending one p = c+1 (the same p until it is committed), the guest writes p into the volume,
// then commits p.

// Paths of the volume generation calls (bearer token of the attest answer).
const (
	PathVolumeBegin  = "/kbs/v1/volume/begin"
	PathVolumeCommit = "/kbs/v1/volume/commit"
)

// MaxVolumesPerWorkload bounds the volume identities the broker keeps for one workload.
const MaxVolumesPerWorkload = 64

// Reasons of the volume calls' refusals (Error.Reason, HTTP 409).
const (
	// ReasonVolumeConflict: commit of a generation that is not the pending one.
	ReasonVolumeConflict = "volume_conflict"
	// ReasonVolumeLimit: begin of a new volume when the workload has MaxVolumesPerWorkload.
	ReasonVolumeLimit = "volume_limit"
)

// VolumeBeginRequest is the body of POST /kbs/v1/volume/begin.
type VolumeBeginRequest struct {
	Volume string `json:"volume"` // "<namespace>/<claim>" (ValidateVolumeIdentity)
}

// VolumeBeginResponse answers a begin: the committed generation (0 for a volume the broker
// has not seen) and the pending one (always Committed+1).
type VolumeBeginResponse struct {
	Committed uint64 `json:"committed"`
	Pending   uint64 `json:"pending"`
}

// VolumeCommitRequest is the body of POST /kbs/v1/volume/commit.
type VolumeCommitRequest struct {
	Volume     string `json:"volume"`
	Generation uint64 `json:"generation"` // the pending generation begin returned
}

// VolumeCommitResponse answers a commit with the committed generation.
type VolumeCommitResponse struct {
	Committed uint64 `json:"committed"`
}

// ErrVolumeIdentity is matched (errors.Is) by every malformed volume identity.
var ErrVolumeIdentity = errors.New("invalid volume identity")

// The Kubernetes name syntaxes (DNS-1123), as imagebuilder/spec checks them when it seals
// (ValidVolumeName, ValidObjectName); kbs/api imports no imagebuilder package, so the check is
// written again here and a test holds the two to the same answers.
var (
	dns1123Label     = lazyregexp.New(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = lazyregexp.New(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// MaxVolumeIdentityLen is the longest identity: a 63-byte namespace, "/", a 253-byte claim.
const MaxVolumeIdentityLen = 63 + 1 + 253

// ValidateVolumeIdentity checks a volume identity "<namespace>/<claim>": the namespace a
// DNS-1123 label (≤ 63), the claim name a DNS-1123 subdomain (≤ 253), as spec.Claim.Identity
// makes it.
func ValidateVolumeIdentity(v string) error {
	if len(v) > MaxVolumeIdentityLen {
		return fmt.Errorf("%w: %d bytes, longer than %d", ErrVolumeIdentity, len(v), MaxVolumeIdentityLen)
	}
	ns, claim, ok := strings.Cut(v, "/")
	if !ok {
		return fmt.Errorf("%w: %q is not <namespace>/<claim>", ErrVolumeIdentity, v)
	}
	if len(ns) > 63 || !dns1123Label.MatchString(ns) {
		return fmt.Errorf("%w: namespace %q of %q is not a DNS-1123 label", ErrVolumeIdentity, ns, v)
	}
	if len(claim) > 253 || !dns1123Subdomain.MatchString(claim) {
		return fmt.Errorf("%w: claim %q of %q is not a DNS-1123 subdomain", ErrVolumeIdentity, claim, v)
	}
	return nil
}

// Validate checks the request.
func (r *VolumeBeginRequest) Validate() error {
	if err := ValidateVolumeIdentity(r.Volume); err != nil {
		return fmt.Errorf("volume begin request field volume: %w", err)
	}
	return nil
}

// Validate checks the request; generation 0 is never pending.
func (r *VolumeCommitRequest) Validate() error {
	if err := ValidateVolumeIdentity(r.Volume); err != nil {
		return fmt.Errorf("volume commit request field volume: %w", err)
	}
	if r.Generation == 0 {
		return errors.New("volume commit request field generation: 0 is never pending (commit the generation begin returned)")
	}
	return nil
}

// DecodeVolumeBeginRequest decodes and validates a begin body (strict JSON: unknown fields and
// trailing data refused).
func DecodeVolumeBeginRequest(b []byte) (VolumeBeginRequest, error) {
	var r VolumeBeginRequest
	if err := DecodeJSON(bytes.NewReader(b), &r); err != nil {
		return VolumeBeginRequest{}, fmt.Errorf("volume begin request: %w", err)
	}
	if err := r.Validate(); err != nil {
		return VolumeBeginRequest{}, err
	}
	return r, nil
}

// DecodeVolumeCommitRequest decodes and validates a commit body (strict JSON).
func DecodeVolumeCommitRequest(b []byte) (VolumeCommitRequest, error) {
	var r VolumeCommitRequest
	if err := DecodeJSON(bytes.NewReader(b), &r); err != nil {
		return VolumeCommitRequest{}, fmt.Errorf("volume commit request: %w", err)
	}
	if err := r.Validate(); err != nil {
		return VolumeCommitRequest{}, err
	}
	return r, nil
}
