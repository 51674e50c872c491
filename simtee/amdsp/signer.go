package amdsp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
)

// Signer signs SNP-format attestation reports with a sim VCEK.
type Signer struct {
	key     *ecdsa.PrivateKey
	vcek    *x509.Certificate
	certTab []byte
	chipID  [abi.ChipIDSize]byte
	tcb     kds.TCBVersion
}

// NewSigner builds a signer from a chain.
func NewSigner(c *Chain) (*Signer, error) {
	return newSigner(c.VCEKKey, c.VCEK, c.ASK, c.ARK)
}

func guid(s string) [16]byte {
	var g [16]byte
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		panic("bad GUID constant " + s)
	}
	copy(g[:], b)
	return g
}

func newSigner(key *ecdsa.PrivateKey, vcek, ask, ark *x509.Certificate) (*Signer, error) {
	if !key.PublicKey.Equal(vcek.PublicKey) {
		return nil, errors.New("sim signer: VCEK certificate does not match the private key")
	}
	exts, err := kds.VcekCertificateExtensions(vcek)
	if err != nil {
		return nil, fmt.Errorf("sim signer: VCEK extensions: %w", err)
	}
	if len(exts.HWID) != abi.ChipIDSize {
		return nil, fmt.Errorf("sim signer: VCEK HWID is %d bytes, want %d", len(exts.HWID), abi.ChipIDSize)
	}
	s := &Signer{key: key, vcek: vcek, tcb: exts.TCBVersion}
	copy(s.chipID[:], exts.HWID)
	var table abi.CertTable
	add := func(g string, der []byte) {
		var e abi.CertTableEntry
		copy(e.GUID[:], func() []byte { x := guid(g); return x[:] }())
		e.RawCert = der
		table.Entries = append(table.Entries, e)
	}
	add(abi.VcekGUID, vcek.Raw)
	if ask != nil {
		add(abi.AskGUID, ask.Raw)
	}
	if ark != nil {
		add(abi.ArkGUID, ark.Raw)
	}
	s.certTab = table.Marshal()
	return s, nil
}

// LoadSigner reads a key file written by WriteFiles.
func LoadSigner(path string) (*Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read sim key %s: %w", path, err)
	}
	s, err := ParseSigner(data)
	if err != nil {
		return nil, fmt.Errorf("sim key %s: %w", path, err)
	}
	return s, nil
}

// ParseSigner parses a key file's contents.
func ParseSigner(data []byte) (*Signer, error) {
	var key *ecdsa.PrivateKey
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		switch b.Type {
		case pemVCEKKey:
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("VCEK key: %w", err)
			}
			ek, ok := k.(*ecdsa.PrivateKey)
			if !ok || ek.Curve != elliptic.P384() {
				return nil, errors.New("VCEK key: not an ECDSA P-384 key")
			}
			key = ek
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("certificate %d: %w", len(certs), err)
			}
			certs = append(certs, c)
		default:
			return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
		}
	}
	if key == nil || len(certs) != 3 {
		return nil, fmt.Errorf("want a VCEK key and 3 certificates (VCEK, ASK, ARK), got key=%v certificates=%d", key != nil, len(certs))
	}
	return newSigner(key, certs[0], certs[1], certs[2])
}

// ReportOptions are the guest-chosen and launch-bound values of one report.
type ReportOptions struct {
	ReportData  [64]byte
	Measurement [48]byte
	HostData    [32]byte
	Debug       bool
	GuestSVN    uint32
	VMPL        uint32
}

// Report returns a signed 1184-byte report (ABI version 3) and the certificate table
// (VCEK, ASK, ARK).
func (s *Signer) Report(o ReportOptions) (report, certTable []byte, err error) {
	r := make([]byte, abi.ReportSize)
	binary.LittleEndian.PutUint32(r[0x00:], 3)
	binary.LittleEndian.PutUint32(r[0x04:], o.GuestSVN)
	binary.LittleEndian.PutUint64(r[0x08:], abi.SnpPolicyToBytes(abi.SnpPolicy{SMT: true, Debug: o.Debug}))
	binary.LittleEndian.PutUint32(r[0x30:], o.VMPL)
	binary.LittleEndian.PutUint32(r[0x34:], abi.SignEcdsaP384Sha384)
	binary.LittleEndian.PutUint64(r[0x38:], uint64(s.tcb)) // CURRENT_TCB
	binary.LittleEndian.PutUint32(r[0x48:], abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.VcekReportSigner}))
	copy(r[0x50:0x90], o.ReportData[:])
	copy(r[0x90:0xC0], o.Measurement[:])
	copy(r[0xC0:0xE0], o.HostData[:])
	binary.LittleEndian.PutUint64(r[0x180:], uint64(s.tcb)) // REPORTED_TCB
	r[0x188], r[0x189], r[0x18A] = fmsFamily, fmsModel, fmsStepping
	copy(r[0x1A0:0x1E0], s.chipID[:])
	binary.LittleEndian.PutUint64(r[0x1E0:], uint64(s.tcb)) // COMMITTED_TCB
	r[0x1E8], r[0x1E9], r[0x1EA] = 1, 55, 1                 // current build, minor, major
	r[0x1EC], r[0x1ED], r[0x1EE] = 1, 55, 1                 // committed
	binary.LittleEndian.PutUint64(r[0x1F0:], uint64(s.tcb)) // LAUNCH_TCB
	if err := s.sign(r); err != nil {
		return nil, nil, err
	}
	return r, append([]byte(nil), s.certTab...), nil
}

func (s *Signer) sign(r []byte) error {
	digest := sha512.Sum384(abi.SignedComponent(r))
	R, S, err := ecdsa.Sign(rand.Reader, s.key, digest[:])
	if err != nil {
		return fmt.Errorf("sim sign report: %w", err)
	}
	if err := abi.SetSignature(R, S, r); err != nil {
		return fmt.Errorf("sim sign report: %w", err)
	}
	return nil
}

// Resign re-signs a (possibly modified) raw report in place; tests use it to build evidence
// with arbitrary field values and a valid signature.
func (s *Signer) Resign(report []byte) error {
	if len(report) != abi.ReportSize {
		return fmt.Errorf("sim resign: report is %d bytes, want %d", len(report), abi.ReportSize)
	}
	for i := 0x2A0; i < abi.ReportSize; i++ {
		report[i] = 0
	}
	return s.sign(report)
}

// VCEK returns the signer's VCEK certificate.
func (s *Signer) VCEK() *x509.Certificate { return s.vcek }

// TCB returns the TCB the signer reports.
func (s *Signer) TCB() kds.TCBParts { return kds.DecomposeTCBVersion(s.tcb) }
