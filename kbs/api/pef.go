package api

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
)

// PEF has no attestation report (docs/pef.md#broker-credential). The owner seals a
// per-workload Ed25519 private key (the broker credential) into the guest's ESM blob; the
// ultravisor opens the blob only on an authorised host and only for the sealed kernel, initrd
// and boot arguments. The guest proves it holds the credential by signing PEFChallenge, which
// binds the broker's nonce and the guest's TEE key exactly as REPORT_DATA does for SNP/TDX; the
// broker checks the signature with the public key registered for the workload
// (Workload.PEFCredential).

// PEF credential and evidence sizes and domains.
const (
	// PEFCredentialMagic starts the credential attachment (sealpod-broker-cred); it keeps the
	// credential from being mistaken for the 32-byte data key attachment.
	PEFCredentialMagic = "sealpod-pef-cred-v1\x00" // #nosec G101 -- a format prefix, not a credential
	// PEFCredentialSize is the attachment's size: magic || 32-byte Ed25519 seed.
	PEFCredentialSize = len(PEFCredentialMagic) + ed25519.SeedSize
	// PEFChallengeDomain prefixes the signed challenge.
	PEFChallengeDomain = "sealpod-pef-challenge-v1\x00"
	// PEFSignatureSize is the size of PEFEvidence.Signature.
	PEFSignatureSize    = ed25519.SignatureSize
	pefCredentialHexLen = 2 * ed25519.PublicKeySize
)

// PEFEvidence is the evidence of pef guests: no report, a signature by the broker credential
// sealed in the guest's ESM blob.
type PEFEvidence struct {
	// Signature is Ed25519(credential, PEFChallenge(REPORT_DATA)), 64 bytes.
	Signature []byte `json:"signature"`
}

// ErrPEFCredential is matched by every error of ParsePEFCredential.
var ErrPEFCredential = errors.New("malformed PEF broker credential")

// PEFChallenge returns the message a PEF guest signs: PEFChallengeDomain || reportData, where
// reportData is ReportData(nonce, teePubKey).
func PEFChallenge(reportData [ReportDataSize]byte) []byte {
	return append([]byte(PEFChallengeDomain), reportData[:]...)
}

// MarshalPEFCredential returns the ESM attachment holding the credential's private key.
func MarshalPEFCredential(priv ed25519.PrivateKey) []byte {
	return append([]byte(PEFCredentialMagic), priv.Seed()...)
}

// ParsePEFCredential reads a credential attachment (MarshalPEFCredential).
func ParsePEFCredential(b []byte) (ed25519.PrivateKey, error) {
	if len(b) != PEFCredentialSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrPEFCredential, len(b), PEFCredentialSize)
	}
	if !bytes.HasPrefix(b, []byte(PEFCredentialMagic)) {
		return nil, fmt.Errorf("%w: no %q prefix", ErrPEFCredential, PEFCredentialMagic[:len(PEFCredentialMagic)-1])
	}
	return ed25519.NewKeyFromSeed(b[len(PEFCredentialMagic):]), nil
}

// SignPEFChallenge makes the evidence of a pef guest for a session (nonce) and its TEE key.
func SignPEFChallenge(priv ed25519.PrivateKey, nonce, teePubKey []byte) *Evidence {
	sig := ed25519.Sign(priv, PEFChallenge(ReportData(nonce, teePubKey)))
	return &Evidence{PEF: &PEFEvidence{Signature: sig}}
}

// validatePEFCredential checks Workload.PEFCredential against tees: required (64 lowercase hex
// characters, an Ed25519 public key) when pef or sim-pef is listed, absent otherwise.
func validatePEFCredential(cred string, pef bool) error {
	switch {
	case !pef && cred != "":
		return fieldErr("pefCredential", "set, but neither tee %s nor %s is listed in tees", TEEPEF, TEESimPEF)
	case pef && !isLowerHex(cred, pefCredentialHexLen):
		return fieldErr("pefCredential", "must be %d lowercase hex characters (the Ed25519 public key of the broker credential sealed in the ESM blob) for tee %s and %s", pefCredentialHexLen, TEEPEF, TEESimPEF)
	}
	return nil
}
