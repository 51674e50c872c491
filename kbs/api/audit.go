package api

import (
	"errors"
	"fmt"
	"time"
)

// Audit event kinds (AuditEvent.Kind).
const (
	AuditKindAuth        = "auth"
	AuditKindAttest      = "attest"
	AuditKindKey         = "key"
	AuditKindCertificate = "certificate"
	AuditKindAdmin       = "admin"
	// AuditKindRelease is an attest of the two-request flow (with a CSR): when ok, the
	// token, the data key and the workload certificate were released in one answer.
	AuditKindRelease = "release"
	// AuditKindVolume is a volume generation call (begin or commit; the reason names the
	// call, the volume identity and the generations, never a key).
	AuditKindVolume = "volume"
)

// Audit event results (AuditEvent.Result).
const (
	AuditResultOK     = "ok"
	AuditResultDenied = "denied"
	AuditResultError  = "error"
)

// MaxAuditFieldLen bounds each free-text field of an AuditEvent.
const MaxAuditFieldLen = 1024

// ErrInvalidAuditEvent is matched by errors.Is for a malformed audit event.
var ErrInvalidAuditEvent = errors.New("invalid audit event")

// AuditEvent is one record of the broker's audit log, as it is stored and as the admin API
// returns it (GET /kbs/v1/admin/audit). The broker's kbs/audit names it audit.Event.
type AuditEvent struct {
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"` // auth|attest|release|key|certificate|admin|volume
	Workload string    `json:"workload,omitempty"`
	TEE      string    `json:"tee,omitempty"`
	Result   string    `json:"result"` // ok|denied|error
	Reason   string    `json:"reason,omitempty"`
	Remote   string    `json:"remote,omitempty"`
}

// Validate checks the kind, the result and field lengths.
func (e *AuditEvent) Validate() error {
	switch e.Kind {
	case AuditKindAuth, AuditKindAttest, AuditKindRelease, AuditKindKey, AuditKindCertificate, AuditKindAdmin, AuditKindVolume:
	default:
		return fmt.Errorf("%w: kind %q (want auth, attest, release, key, certificate, admin or volume)", ErrInvalidAuditEvent, e.Kind)
	}
	switch e.Result {
	case AuditResultOK, AuditResultDenied, AuditResultError:
	default:
		return fmt.Errorf("%w: result %q (want ok, denied or error)", ErrInvalidAuditEvent, e.Result)
	}
	if e.Time.Before(time.Unix(0, 0)) {
		return fmt.Errorf("%w: time %s before 1970", ErrInvalidAuditEvent, e.Time)
	}
	for name, v := range map[string]string{"workload": e.Workload, "tee": e.TEE, "reason": e.Reason, "remote": e.Remote} {
		if len(v) > MaxAuditFieldLen {
			return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalidAuditEvent, name, MaxAuditFieldLen)
		}
	}
	return nil
}

// AuditAnchor is where the exported (dropped) part of the broker's audit log ends (the
// admin API's Status.AuditAnchor; the broker's kbs/audit names it audit.Anchor).
type AuditAnchor struct {
	Seq     uint64    `json:"seq"`    // segments written
	Events  uint64    `json:"events"` // events dropped in total
	Hash    string    `json:"hash"`   // chain hash of the last dropped event (zero hash: none)
	Through string    `json:"through,omitempty"`
	Time    time.Time `json:"time,omitzero"` // of the last prune
}
