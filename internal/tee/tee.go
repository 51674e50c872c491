// Package tee names the confidential-computing technologies Sealpod seals for and launches
// on, with the facts every component must agree on: how the envelope digest is placed in the
// launch (SNP HOST_DATA, TDX MRCONFIGID) and which kind of evidence the guest presents.
//
// It is the one definition shared by the owner's tools (imagebuilder, ctl), the guest build
// (guest-image), the node (runtime-shim), the guest (agent) and the broker (kbs), so it
// imports nothing of them. See docs/formats.md "TEEs".
package tee

import (
	"errors"
	"fmt"
	"strings"
)

// TEE is the name of a confidential-computing backend as it appears in envelopes, guest.json,
// the broker protocol and node configuration.
type TEE string

// The TEEs. Sim is the software simulation of SNP (the shim plays the AMD-SP) and SimTDX the
// software simulation of TDX (the shim plays TDX module and quoting enclave, signing real v4
// quotes under a node-local fake Intel chain) and SimPEF the software simulation of IBM PEF (the
// node plays the ultravisor with a software host key: simtee/pefuv); none is ever accepted
// unless explicitly enabled.
const (
	SNP    TEE = "snp"
	TDX    TEE = "tdx"
	PEF    TEE = "pef"
	Sim    TEE = "sim"
	SimTDX TEE = "sim-tdx"
	SimPEF TEE = "sim-pef"
)

// Known lists every TEE, in the order used in messages.
var Known = []TEE{SNP, TDX, PEF, Sim, SimTDX, SimPEF}

// DigestSize is the size of the envelope digest (SHA-256) that the launch carries.
const DigestSize = 32

// Launch data sizes.
const (
	// SNPHostDataSize is the size of SNP (and sim) HOST_DATA: the digest itself.
	SNPHostDataSize = 32
	// TDXMRConfigIDSize is the size of TDX MRCONFIGID: the digest zero-padded.
	TDXMRConfigIDSize = 48
)

// ErrUnknown is wrapped by Parse and Validate for a name that is not a known TEE.
var ErrUnknown = errors.New("unknown TEE")

// Parse validates a TEE name (exact, lowercase).
func Parse(s string) (TEE, error) {
	t := TEE(s)
	if err := t.Validate(); err != nil {
		return "", err
	}
	return t, nil
}

// Validate reports whether t is a known TEE.
func (t TEE) Validate() error {
	switch t {
	case SNP, TDX, PEF, Sim, SimTDX, SimPEF:
		return nil
	}
	return fmt.Errorf("%w %q (want one of %s)", ErrUnknown, string(t), KnownList())
}

// KnownList returns the known TEE names joined by ", " for messages and help texts.
func KnownList() string {
	s := make([]string, len(Known))
	for i, t := range Known {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}

// Strings returns the known TEE names as strings (for flag completion and string lists).
func Strings() []string {
	s := make([]string, len(Known))
	for i, t := range Known {
		s[i] = string(t)
	}
	return s
}

// HostDataSize is the size of the launch-bound data that carries the envelope digest: 32 for
// snp and sim (HOST_DATA), 48 for tdx and sim-tdx (MRCONFIGID), 0 for pef, sim-pef and unknown TEEs (PEF binds the
// launch through the ESM blob's digests, not a host-data field).
func (t TEE) HostDataSize() int {
	switch t {
	case SNP, Sim:
		return SNPHostDataSize
	case TDX, SimTDX:
		return TDXMRConfigIDSize
	}
	return 0
}

// HostData places an envelope digest in t's launch-bound field: the 32 bytes as SNP/sim
// HOST_DATA, zero-padded to 48 bytes as TDX/sim-tdx MRCONFIGID, nil for pef, sim-pef and unknown TEEs. This is
// the only place the rule is written; the shim (QEMU arguments), the agent (its check of its
// own evidence) and the broker's verifiers all use it.
func (t TEE) HostData(digest [DigestSize]byte) []byte {
	n := t.HostDataSize()
	if n == 0 {
		return nil
	}
	out := make([]byte, n)
	copy(out, digest[:])
	return out
}

// Evidence is the kind of evidence a guest of a TEE presents to the broker.
type Evidence string

// Evidence kinds.
const (
	// EvidenceSNPReport: an SEV-SNP attestation report (sim: signed by the simulated AMD-SP).
	EvidenceSNPReport Evidence = "snp-report"
	// EvidenceTDXQuote: a TDX quote v4 (sim-tdx: signed under the node's fake Intel chain).
	EvidenceTDXQuote Evidence = "tdx-quote"
	// EvidencePEFCredential: no report; the ultravisor released the ESM-sealed broker credential.
	EvidencePEFCredential Evidence = "pef-credential"
)

// Evidence returns the kind of evidence t's guests present ("" for an unknown TEE).
func (t TEE) Evidence() Evidence {
	switch t {
	case SNP, Sim:
		return EvidenceSNPReport
	case TDX, SimTDX:
		return EvidenceTDXQuote
	case PEF, SimPEF:
		return EvidencePEFCredential
	}
	return ""
}

// The ESM attachments of a PEF (and sim-pef) guest: imagebuilder/esm seals them into the blob
// for the ultravisor, the agent reads them back from it (UV_ESMB_GET_FILE, or the simulated
// ultravisor). The PEF counterpart of HOST_DATA: where the launch carries what the guest needs.
const (
	// PEFAttachDataKey holds the workload's 32-byte data key (opens the sealed envelope).
	PEFAttachDataKey = "sealpod-data-key"
	// PEFAttachBrokerCredential holds the per-workload credential the guest proves to the
	// broker in place of an attestation report (format: kbs/api).
	PEFAttachBrokerCredential = "sealpod-broker-cred" // #nosec G101 -- an attachment name, not a credential
)

// Simulated reports whether t is a software simulation (never detected, only given).
func (t TEE) Simulated() bool { return t == Sim || t == SimTDX || t == SimPEF }
