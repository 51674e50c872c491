package api

import (
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// The two-request flow (DESIGN §3.3): auth, then attest with evidence and a CSR; the attest
// answer carries the token, the keys sealed to the TEE key and the workload certificate.

// CSRBindingPrefix starts the URI SAN that binds a CSR to one attestation; the rest is the
// lower-case hex of the session's REPORT_DATA (CSRBindingURI). The broker never copies CSR
// SANs into the certificate (it issues the SANs the owner registered), so the binding URI
// stays in the CSR.
const CSRBindingPrefix = "urn:sealpod:report-data:"

// CSRBindingURI returns the URI SAN a CSR sent with attest must carry: it ties the CSR's
// key, through the CSR's self-signature, to the nonce and TEE key of this attestation, so
// a CSR made for another session (or by another key holder) is refused.
func CSRBindingURI(reportData [ReportDataSize]byte) string {
	return CSRBindingPrefix + hex.EncodeToString(reportData[:])
}

// ErrCSRBinding is returned by CheckCSRBinding for a CSR that is not bound to the
// attestation it was sent with.
var ErrCSRBinding = errors.New("CSR is not bound to this attestation")

// CheckCSRBinding checks that csr (whose self-signature the caller has verified) carries
// exactly one binding URI SAN and that it names reportData.
func CheckCSRBinding(csr *x509.CertificateRequest, reportData [ReportDataSize]byte) error {
	want := CSRBindingURI(reportData)
	found := 0
	match := false
	for _, u := range csr.URIs {
		s := u.String()
		if !strings.HasPrefix(s, CSRBindingPrefix) {
			continue
		}
		found++
		match = subtle.ConstantTimeCompare([]byte(s), []byte(want)) == 1
	}
	switch {
	case found == 0:
		return fmt.Errorf("%w: no URI SAN %s<REPORT_DATA hex>", ErrCSRBinding, CSRBindingPrefix)
	case found > 1:
		return fmt.Errorf("%w: %d binding URI SANs, want one", ErrCSRBinding, found)
	case !match:
		return fmt.Errorf("%w: its binding URI SAN names another nonce or TEE key", ErrCSRBinding)
	}
	return nil
}

// VolumeSecretSize is the size of Keys.VolumeSecret when present.
const VolumeSecretSize = 32

// Keys is what the attest answer's box (AttestResponse.SealedKeys) holds. Encoding: the
// 32-byte data key, followed by the 32-byte volume secret when there is one; nothing else.
type Keys struct {
	DataKey []byte
	// VolumeSecret is the workload's volume secret (DESIGN §3.3 "and volume secret"; issue
	// 15): 32 random bytes the broker generates at the workload's first registration and
	// keeps across its updates; the guest derives each encrypted volume's keys from it and
	// the claim identity. Nil when absent: a workload registered by a broker before volume
	// support has none until its next update.
	VolumeSecret []byte
}

// ErrKeys is returned for a box content that is not a Keys encoding.
var ErrKeys = errors.New("sealed keys malformed")

// Marshal encodes k for sealing.
func (k Keys) Marshal() ([]byte, error) {
	if len(k.DataKey) != DataKeySize {
		return nil, fmt.Errorf("%w: data key of %d bytes, want %d", ErrKeys, len(k.DataKey), DataKeySize)
	}
	if k.VolumeSecret != nil && len(k.VolumeSecret) != VolumeSecretSize {
		return nil, fmt.Errorf("%w: volume secret of %d bytes, want %d", ErrKeys, len(k.VolumeSecret), VolumeSecretSize)
	}
	out := make([]byte, 0, DataKeySize+len(k.VolumeSecret))
	return append(append(out, k.DataKey...), k.VolumeSecret...), nil
}

// ParseKeys decodes an opened box; the returned slices are copies.
func ParseKeys(b []byte) (Keys, error) {
	switch len(b) {
	case DataKeySize:
		return Keys{DataKey: append([]byte(nil), b...)}, nil
	case DataKeySize + VolumeSecretSize:
		return Keys{DataKey: append([]byte(nil), b[:DataKeySize]...), VolumeSecret: append([]byte(nil), b[DataKeySize:]...)}, nil
	}
	return Keys{}, fmt.Errorf("%w: %d bytes, want %d or %d", ErrKeys, len(b), DataKeySize, DataKeySize+VolumeSecretSize)
}
