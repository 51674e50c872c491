// Package api defines the wire protocol of the Sealpod key broker (docs/kbs.md#protocol): request and
// response types, the REPORT_DATA binding and the key-release box. The agent, sealctl and the
// broker all import it; nothing here performs I/O.
package api

import (
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/sealpod/sealpod/internal/lazyregexp"
	"github.com/sealpod/sealpod/internal/tee"
)

// Paths of the broker's HTTP API.
const (
	PathAuth   = "/kbs/v1/auth"
	PathAttest = "/kbs/v1/attest"
	// PathResource and PathCertificate are the deprecated third and fourth requests of the
	// four-request flow (attest without a CSR); the two-request flow gets the key and the
	// certificate in the attest answer. They remain for one release.
	PathResource    = "/kbs/v1/resource/" // + <workload> + "/key"
	PathCertificate = "/kbs/v1/certificate"
	PathCA          = "/kbs/v1/ca"
	PathManifest    = "/kbs/v1/manifest"
	PathAdmin       = "/kbs/v1/admin/"

	// SessionCookie carries the session id from auth to attest (and, for binding, to key and
	// certificate requests).
	SessionCookie = "sealpod-kbs-session"
	// HeaderTEEPubKey carries the base64 (std) X25519 public key on GET .../key; its SHA-256
	// must equal the token's binding.
	HeaderTEEPubKey = "Sealpod-Tee-Pubkey"
)

// ResourceKeyPath returns the path of a workload's key resource.
func ResourceKeyPath(workload string) string { return PathResource + workload + "/key" }

// TEE names on the wire: the names of internal/tee (the one definition), as plain strings.
const (
	TEESNP = string(tee.SNP)
	TEETDX = string(tee.TDX)
	TEEPEF = string(tee.PEF)
	TEESim = string(tee.Sim)
	// TEESimTDX is the simulated TDX (sim-tdx), accepted only under --insecure-sim-roots.
	TEESimTDX = string(tee.SimTDX)
	// TEESimPEF is the simulated IBM PEF (sim-pef: the node plays the ultravisor), accepted
	// only under --insecure-sim-pef.
	TEESimPEF = string(tee.SimPEF)
)

// Sizes of protocol values.
const (
	NonceSize      = 32
	TEEPubKeySize  = 32 // X25519
	ReportDataSize = 64
	DataKeySize    = 32
	// ReportDataDomain is the domain-separation prefix of REPORT_DATA.
	ReportDataDomain = "sealpod-attest-v1"
	// MaxCSRSize bounds the CSR of an attest request.
	MaxCSRSize = 16 << 10
)

// ReportData returns SHA-512("sealpod-attest-v1" || nonce || teePubKey), the 64 bytes the guest
// puts into the REPORT_DATA field of its evidence.
func ReportData(nonce, teePubKey []byte) [ReportDataSize]byte {
	h := sha512.New()
	h.Write([]byte(ReportDataDomain))
	h.Write(nonce)
	h.Write(teePubKey)
	var out [ReportDataSize]byte
	copy(out[:], h.Sum(nil))
	return out
}

var workloadIDRe = lazyregexp.New(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

// ValidWorkloadID reports whether id is a well-formed workload id.
func ValidWorkloadID(id string) bool { return len(id) <= 253 && workloadIDRe.MatchString(id) }

// ValidTEE reports whether name is a known TEE name (internal/tee).
func ValidTEE(name string) bool {
	_, err := tee.Parse(name)
	return err == nil
}

// AuthRequest is the body of POST /kbs/v1/auth.
type AuthRequest struct {
	TEE      string `json:"tee"`
	Workload string `json:"workload"`
}

// AuthResponse answers POST /kbs/v1/auth; the session cookie is set alongside.
type AuthResponse struct {
	Nonce     []byte `json:"nonce"` // 32 bytes, base64 in JSON
	ExpiresAt int64  `json:"expiresAt"`
}

// SNPEvidence is the evidence of snp and sim guests.
type SNPEvidence struct {
	// Report is the raw 1184-byte ATTESTATION_REPORT (abi format).
	Report []byte `json:"report"`
	// CertTable is the certificate table of the extended report (GUID table, AMD format); it
	// normally carries the VCEK (and may carry ASK/ARK, which are ignored: only the broker's
	// trusted roots count). Optional when VCEK is given or the broker has a cert cache.
	CertTable []byte `json:"certTable,omitempty"`
	// VCEK is the DER VCEK certificate, an alternative to CertTable.
	VCEK []byte `json:"vcek,omitempty"`
}

// TDXEvidence is the evidence of tdx guests.
type TDXEvidence struct {
	// Quote is the raw TDX quote (version 4) including its PCK certificate chain.
	Quote []byte `json:"quote"`
}

// Evidence is one TEE's evidence; exactly the field matching the session's TEE must be set
// (sim uses SNP, sim-tdx TDX).
type Evidence struct {
	SNP *SNPEvidence `json:"snp,omitempty"`
	TDX *TDXEvidence `json:"tdx,omitempty"`
	PEF *PEFEvidence `json:"pef,omitempty"` // pef.go
}

// AttestRequest is the body of POST /kbs/v1/attest.
type AttestRequest struct {
	TEEPubKey []byte   `json:"teePubKey"` // 32-byte X25519 public key
	Evidence  Evidence `json:"evidence"`
	// CSR (DER PKCS#10) for the workload certificate, made in the guest and bound to this
	// attestation by a URI SAN CSRBindingURI(REPORT_DATA). With it the answer carries the
	// token, the sealed keys and the certificate chain (the two-request flow, DESIGN §3.3);
	// without it only the token (the deprecated four-request flow).
	CSR []byte `json:"csr,omitempty"`
}

// AttestResponse answers a successful attestation.
type AttestResponse struct {
	Token     string `json:"token"`
	ExpiresAt int64  `json:"expiresAt"`
	TEE       string `json:"tee"`
	// SealedKeys is SealKey(Keys.Marshal()) to the request's TEE public key; set when the
	// request carried a CSR.
	SealedKeys []byte `json:"sealedKeys,omitempty"`
	// Chain is the workload certificate (leaf for the CSR's key, then intermediate), DER;
	// set when the request carried a CSR.
	Chain [][]byte `json:"chain,omitempty"`
	// RootPEM is the mesh root the chain leads to; set with Chain.
	RootPEM string `json:"rootPem,omitempty"`
}

// KeyResponse answers GET /kbs/v1/resource/<workload>/key (deprecated: see PathResource).
type KeyResponse struct {
	// SealedKey is nacl box.SealAnonymous(dataKey) to the session's TEE public key.
	SealedKey []byte `json:"sealedKey"`
}

// CertificateRequest is the body of POST /kbs/v1/certificate (deprecated: see PathCertificate).
type CertificateRequest struct {
	CSR []byte `json:"csr"` // DER PKCS#10
}

// CertificateResponse answers a certificate request.
type CertificateResponse struct {
	// Chain is leaf then intermediate, DER (base64 in JSON).
	Chain [][]byte `json:"chain"`
	// ChainPEM is the same chain as PEM.
	ChainPEM string `json:"chainPem"`
	// RootPEM is the mesh root.
	RootPEM string `json:"rootPem"`
}

// CAResponse answers GET /kbs/v1/ca.
type CAResponse struct {
	MeshRootPEM   string `json:"meshRootPem"`
	MeshBundlePEM string `json:"meshBundlePem"` // intermediate + root
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
	// Reason is a machine-readable code (see the Reason* constants).
	Reason string `json:"reason,omitempty"`
	// Field, Expected and Got describe an evidence rejection (no secrets).
	Field    string `json:"field,omitempty"`
	Expected string `json:"expected,omitempty"`
	Got      string `json:"got,omitempty"`
}

// Reason codes.
const (
	ReasonBadRequest   = "bad_request"
	ReasonNotFound     = "not_found"
	ReasonSession      = "session"
	ReasonNonce        = "nonce"
	ReasonToken        = "token"
	ReasonTokenExpired = "token_expired"
	ReasonEvidence     = "evidence"
	ReasonPolicy       = "policy"
	ReasonUnsupported  = "unsupported"
	ReasonInternal     = "internal"
)

// ErrTrailingData is returned when a JSON body has content after its object.
var ErrTrailingData = errors.New("trailing data after JSON object")

// DecodeJSON decodes exactly one JSON object from r into v, refusing unknown fields and
// trailing data.
func DecodeJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return ErrTrailingData
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		return ErrTrailingData
	}
	return nil
}

// clip shortens client-supplied strings quoted in error messages.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// Validate checks an auth request's fields.
func (r *AuthRequest) Validate() error {
	if !ValidTEE(r.TEE) {
		return fmt.Errorf("auth request field tee: %q is not one of snp, tdx, pef, sim", clip(r.TEE))
	}
	if !ValidWorkloadID(r.Workload) {
		return fmt.Errorf("auth request field workload: %q is not a valid workload id", clip(r.Workload))
	}
	return nil
}

// Validate checks an attest request's fields (not the evidence's content).
func (r *AttestRequest) Validate() error {
	if len(r.TEEPubKey) != TEEPubKeySize {
		return fmt.Errorf("attest request field teePubKey: %d bytes, want %d", len(r.TEEPubKey), TEEPubKeySize)
	}
	switch n := btoi(r.Evidence.SNP != nil) + btoi(r.Evidence.TDX != nil) + btoi(r.Evidence.PEF != nil); {
	case n == 0:
		return errors.New("attest request field evidence: empty")
	case n > 1:
		return errors.New("attest request field evidence: more than one of snp, tdx and pef set")
	}
	if r.CSR != nil && len(r.CSR) == 0 {
		return errors.New("attest request field csr: empty")
	}
	if len(r.CSR) > MaxCSRSize {
		return fmt.Errorf("attest request field csr: %d bytes, at most %d", len(r.CSR), MaxCSRSize)
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Validate checks a certificate request's fields.
func (r *CertificateRequest) Validate() error {
	if len(r.CSR) == 0 {
		return errors.New("certificate request field csr: empty")
	}
	return nil
}
