// Package registry holds the key broker's registered workloads (identity, attestation policy,
// data key) and the hash-chained, signed history of every change, from which it produces the
// signed manifest served at GET /kbs/v1/manifest. It is a server internal: the workload,
// history and manifest formats are wire types of kbs/api, which clients import instead.
package registry

import (
	"crypto"

	"github.com/sealpod/sealpod/kbs/api"
)

// The registry's record and manifest types are the wire types of kbs/api; these aliases keep
// the broker's own packages short. Clients (kbs/client, sealctl, the agent) use kbs/api.
type (
	Workload       = api.Workload
	TCB            = api.TCB
	SNPTCB         = api.SNPTCB
	FieldError     = api.FieldError
	SANKind        = api.SANKind
	HistoryEntry   = api.HistoryEntry
	ChainHead      = api.ChainHead
	Manifest       = api.Manifest
	SignedManifest = api.SignedManifest
)

// TEE names accepted in Workload.TEEs (see kbs/api).
const (
	TEESNP = api.TEESNP
	TEETDX = api.TEETDX
	TEEPEF = api.TEEPEF
	TEESim = api.TEESim
)

// Limits applied by Validate (see kbs/api).
const (
	MaxIDLen              = api.MaxWorkloadIDLen
	MaxMeasurementsPerTEE = api.MaxMeasurementsPerTEE
	MaxSANs               = api.MaxSANs
	MaxSANLen             = api.MaxSANLen
	DataKeySize           = api.DataKeySize
	TDXPinReason          = api.TDXPinReason
)

// SAN kinds (see kbs/api).
const (
	SANDNS = api.SANDNS
	SANIP  = api.SANIP
	SANURI = api.SANURI
)

// Manifest format constants (see kbs/api).
const (
	AlgECDSASHA256  = api.AlgECDSASHA256
	AlgEd25519      = api.AlgEd25519
	OpPut           = api.OpPut
	OpRemove        = api.OpRemove
	ManifestVersion = api.ManifestVersion
)

var (
	// ErrInvalid is matched (errors.Is) by every validation error (= api.ErrInvalidWorkload).
	ErrInvalid = api.ErrInvalidWorkload
	// ErrNotFound is returned (wrapped) when a workload does not exist (= api.ErrWorkloadNotFound).
	ErrNotFound = api.ErrWorkloadNotFound
	// ErrVerify is matched by every signature, hash-chain or manifest verification failure
	// (= api.ErrVerify).
	ErrVerify = api.ErrVerify
	// ZeroHash is the Prev of the first history entry.
	ZeroHash = api.ZeroHash
)

// ValidateID checks a workload id (api.ValidateWorkloadID).
func ValidateID(id string) error { return api.ValidateWorkloadID(id) }

// ValidateSAN checks one SAN (api.ValidateSAN).
func ValidateSAN(s string) error { return api.ValidateSAN(s) }

// ParseSAN classifies a SAN (api.ParseSAN).
func ParseSAN(s string) (SANKind, error) { return api.ParseSAN(s) }

// VerifyHistory checks a complete history (api.VerifyHistory).
func VerifyHistory(entries []HistoryEntry, pub crypto.PublicKey) (ChainHead, error) {
	return api.VerifyHistory(entries, pub)
}

// VerifyManifest checks a signed manifest offline (api.VerifyManifest).
func VerifyManifest(m *SignedManifest, pub crypto.PublicKey) error { return api.VerifyManifest(m, pub) }

// MarshalPublicKey returns the PKIX DER encoding used in SignedManifest.PublicKey.
func MarshalPublicKey(pub crypto.PublicKey) ([]byte, error) { return api.MarshalPublicKey(pub) }
