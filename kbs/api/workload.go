package api

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/sealpod/sealpod/internal/lazyregexp"
	"github.com/sealpod/sealpod/internal/tee"
)

// Limits applied by Workload.Validate (DataKeySize is in api.go).
const (
	MaxWorkloadIDLen        = 253
	MaxMeasurementsPerTEE   = 64
	MaxSANs                 = 100
	MaxSANLen               = 253
	measurementHexLen       = 96 // 48-byte SNP MEASUREMENT / TDX MRTD / RTMR
	envelopeDigestHexLen    = 64 // SHA-256
	tdxTeeTCBSVNHexLen      = 32 // 16 bytes
	tdxMeasurementRTMRCount = 4
)

// TDXPinReason is why a TDX reference value must pin MRTD, RTMR[1] and RTMR[2].
const TDXPinReason = "must be \"mrtd:rtmr0:rtmr1:rtmr2:rtmr3\" pinning MRTD, RTMR[1] and RTMR[2] (RTMR[0] and RTMR[3] may be empty): " +
	"MRTD covers only the firmware, RTMR[1] the kernel and RTMR[2] the initrd and command line, so without them a TD booted with a host-chosen kernel and initrd would get the key"

// SNPTCB is the minimum SEV-SNP TCB (components of TCB_VERSION).
type SNPTCB struct {
	Bootloader uint8 `json:"bootloader"`
	TEE        uint8 `json:"tee"`
	SNP        uint8 `json:"snp"`
	Microcode  uint8 `json:"microcode"`
}

// TCB is the minimum TCB a workload's evidence must report, per TEE.
type TCB struct {
	SNP          *SNPTCB `json:"snp,omitempty"`
	TDXTeeTCBSVN string  `json:"tdxTeeTcbSvn,omitempty"` // hex, 16 bytes; minimum per component
}

// Workload is one registered confidential workload: its identity, its attestation policy and
// its data key (the key that opens its sealed envelope). It is the body of the admin API's
// workload requests and answers and the workload entry of the signed manifest.
type Workload struct {
	ID             string              `json:"id"`             // DNS-1123 label-ish: [a-z0-9]([-a-z0-9.]*[a-z0-9])?, <= 253
	TEEs           []string            `json:"tees"`           // subset of snp, tdx, pef, sim, sim-tdx
	Measurements   map[string][]string `json:"measurements"`   // tee -> allowed values, lowercase hex; tdx value = "mrtd:rtmr0:rtmr1:rtmr2:rtmr3", rtmr1 and rtmr2 required (empty rtmr0/rtmr3 = not pinned)
	EnvelopeDigest string              `json:"envelopeDigest"` // hex SHA-256 of the sealed envelope = expected HOST_DATA / MRCONFIGID
	MinTCB         TCB                 `json:"minTcb"`
	SANs           []string            `json:"sans"`              // DNS names / IPs / URIs allowed in the workload certificate
	DataKey        []byte              `json:"dataKey,omitempty"` // 32 bytes; never returned by list/get over the admin API
	// PEFCredential is the hex Ed25519 public key of the broker credential sealed in the
	// workload's ESM blob (pef.go); required when tees lists pef, empty otherwise.
	PEFCredential string    `json:"pefCredential,omitempty"`
	Generation    uint64    `json:"generation"` // set by the registry: 1 on first Put, +1 on every update
	UpdatedAt     time.Time `json:"updatedAt"`  // set by the registry
}

// Public returns a deep copy of w without its data key (what list/get/manifest expose).
func (w *Workload) Public() Workload {
	c := w.Clone()
	c.DataKey = nil
	return c
}

// Clone returns a deep copy of w, data key included.
func (w *Workload) Clone() Workload {
	c := *w
	c.TEEs = append([]string(nil), w.TEEs...)
	if w.Measurements != nil {
		c.Measurements = make(map[string][]string, len(w.Measurements))
		for k, v := range w.Measurements {
			c.Measurements[k] = append([]string(nil), v...)
		}
	}
	c.SANs = append([]string(nil), w.SANs...)
	c.DataKey = append([]byte(nil), w.DataKey...)
	if w.MinTCB.SNP != nil {
		s := *w.MinTCB.SNP
		c.MinTCB.SNP = &s
	}
	return c
}

// ErrInvalidWorkload is matched (errors.Is) by every workload validation error.
var ErrInvalidWorkload = errors.New("invalid workload")

// ErrWorkloadNotFound means a workload does not exist (the broker's 404 on a workload).
var ErrWorkloadNotFound = errors.New("workload not found")

// FieldError is a workload validation error naming the offending field, e.g.
// "measurements[snp][0]".
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("invalid workload: %s: %s", e.Field, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidWorkload) true for every FieldError.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidWorkload }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

var (
	lowerHexRe = lazyregexp.New(`^[0-9a-f]+$`)
	dnsLabelRe = lazyregexp.New(`^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`)
)

// ValidateWorkloadID checks a workload id (also used for URL path segments) and returns a
// *FieldError for field "id"; ValidWorkloadID is the same check as a bool.
func ValidateWorkloadID(id string) error {
	switch {
	case id == "":
		return fieldErr("id", "required")
	case len(id) > MaxWorkloadIDLen:
		return fieldErr("id", "longer than %d characters", MaxWorkloadIDLen)
	case !workloadIDRe.MatchString(id):
		return fieldErr("id", "%q must match [a-z0-9]([-a-z0-9.]*[a-z0-9])?", id)
	}
	return nil
}

func isLowerHex(s string, n int) bool {
	return len(s) == n && lowerHexRe.MatchString(s)
}

// Validate checks every field and returns a *FieldError naming the first invalid one. It
// requires a 32-byte DataKey; Generation and UpdatedAt are not checked (the registry sets them).
func (w *Workload) Validate() error {
	if err := ValidateWorkloadID(w.ID); err != nil {
		return err
	}
	if len(w.TEEs) == 0 {
		return fieldErr("tees", "at least one TEE is required (%s)", tee.KnownList())
	}
	seen := map[string]bool{}
	for i, t := range w.TEEs {
		if !ValidTEE(t) {
			return fieldErr(fmt.Sprintf("tees[%d]", i), "unknown TEE %q (want one of %s)", t, tee.KnownList())
		}
		if seen[t] {
			return fieldErr(fmt.Sprintf("tees[%d]", i), "duplicate TEE %q", t)
		}
		seen[t] = true
	}
	for tee := range w.Measurements {
		if !seen[tee] {
			return fieldErr(fmt.Sprintf("measurements[%s]", tee), "TEE %q is not listed in tees", tee)
		}
	}
	for _, tee := range w.TEEs {
		ms := w.Measurements[tee]
		f := fmt.Sprintf("measurements[%s]", tee)
		if len(ms) == 0 && tee != TEEPEF && tee != TEESimPEF {
			return fieldErr(f, "at least one reference measurement is required for TEE %q", tee)
		}
		if len(ms) > MaxMeasurementsPerTEE {
			return fieldErr(f, "more than %d values", MaxMeasurementsPerTEE)
		}
		for i, m := range ms {
			if err := validateMeasurement(tee, m); err != nil {
				return fieldErr(fmt.Sprintf("%s[%d]", f, i), "%v", err)
			}
		}
	}
	if err := validatePEFCredential(w.PEFCredential, seen[TEEPEF] || seen[TEESimPEF]); err != nil {
		return err
	}
	if !isLowerHex(w.EnvelopeDigest, envelopeDigestHexLen) {
		return fieldErr("envelopeDigest", "must be %d lowercase hex characters (SHA-256 of the sealed envelope)", envelopeDigestHexLen)
	}
	if s := w.MinTCB.TDXTeeTCBSVN; s != "" && !isLowerHex(s, tdxTeeTCBSVNHexLen) {
		return fieldErr("minTcb.tdxTeeTcbSvn", "must be %d lowercase hex characters (16 bytes)", tdxTeeTCBSVNHexLen)
	}
	if len(w.SANs) > MaxSANs {
		return fieldErr("sans", "more than %d entries", MaxSANs)
	}
	sanSeen := map[string]bool{}
	for i, s := range w.SANs {
		if err := ValidateSAN(s); err != nil {
			return fieldErr(fmt.Sprintf("sans[%d]", i), "%v", err)
		}
		if sanSeen[s] {
			return fieldErr(fmt.Sprintf("sans[%d]", i), "duplicate %q", s)
		}
		sanSeen[s] = true
	}
	if len(w.DataKey) != DataKeySize {
		return fieldErr("dataKey", "must be %d bytes, got %d", DataKeySize, len(w.DataKey))
	}
	return nil
}

func validateMeasurement(tee, m string) error {
	switch tee {
	case TEESNP, TEESim:
		if !isLowerHex(m, measurementHexLen) {
			return fmt.Errorf("must be %d lowercase hex characters (48-byte launch measurement)", measurementHexLen)
		}
	case TEETDX, TEESimTDX:
		parts := strings.Split(m, ":")
		if len(parts) != 1+tdxMeasurementRTMRCount || parts[2] == "" || parts[3] == "" {
			return errors.New(TDXPinReason)
		}
		if !isLowerHex(parts[0], measurementHexLen) {
			return fmt.Errorf("mrtd must be %d lowercase hex characters", measurementHexLen)
		}
		for j, r := range parts[1:] {
			if r != "" && !isLowerHex(r, measurementHexLen) {
				return fmt.Errorf("rtmr%d must be empty or %d lowercase hex characters", j, measurementHexLen)
			}
		}
	case TEEPEF, TEESimPEF:
		if len(m) == 0 || len(m) > 128 || len(m)%2 != 0 || !lowerHexRe.MatchString(m) {
			return fmt.Errorf("must be lowercase hex of at most 64 bytes")
		}
	}
	return nil
}

// SANKind classifies a SAN string as it goes into a certificate.
type SANKind int

// SAN kinds.
const (
	SANDNS SANKind = iota
	SANIP
	SANURI
)

// ParseSAN classifies s: an IP address, a URI (contains "://" or starts with "spiffe:" / "urn:"),
// otherwise a DNS name.
func ParseSAN(s string) (SANKind, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	if len(s) > MaxSANLen {
		return 0, fmt.Errorf("longer than %d characters", MaxSANLen)
	}
	if net.ParseIP(s) != nil {
		return SANIP, nil
	}
	if strings.Contains(s, ":") {
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "" || (u.Host == "" && u.Opaque == "" && u.Path == "") {
			return 0, fmt.Errorf("%q is neither an IP, a DNS name nor an absolute URI", s)
		}
		return SANURI, nil
	}
	name := strings.TrimSuffix(s, ".")
	for _, label := range strings.Split(name, ".") {
		if len(label) > 63 || !dnsLabelRe.MatchString(label) {
			return 0, fmt.Errorf("%q is not a valid DNS name (no wildcards)", s)
		}
	}
	return SANDNS, nil
}

// ValidateSAN checks one SAN (see ParseSAN).
func ValidateSAN(s string) error {
	_, err := ParseSAN(s)
	return err
}
