package tdxqe

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"

	tdxabi "github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
)

// Values of the simulated platform that every quote carries.
var (
	// qeVendorID is Intel's QE vendor id (939a7233-f79c-4ca9-940a-0db3957f0607).
	qeVendorID = []byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07}
	// teeTCBSVN is the TEE_TCB_SVN the simulated TDX module reports.
	teeTCBSVN = []byte{3, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	// mrSeam names the simulated TDX module (it is no Intel-signed module).
	mrSeam = sha512.Sum384([]byte("sealpod sim-tdx: simulated TDX module (no SEAM)"))
)

// TD attributes and XFAM of the simulated TD.
const (
	tdAttrDebug         = 1 << 0  // TUD.DEBUG
	tdAttrSEPTVEDisable = 1 << 28 // SEPT_VE_DISABLE, as QEMU's tdx-guest sets by default
	simXFAM             = 0xe7    // x87, SSE, AVX, AVX-512 state
	qeSVN, pceSVN       = 8, simPCESVN
)

// QuoteOptions are the values one quote reports.
type QuoteOptions struct {
	MRTD       [48]byte
	RTMRs      [4][48]byte
	MRConfigID [48]byte
	ReportData [64]byte
	// Debug sets TD_ATTRIBUTES.DEBUG (for tests of the broker's refusal; a launch never does).
	Debug bool
}

// Signer signs TDX v4 quotes: it holds the PCK key and chain and an attestation key that a QE
// report, signed once with the PCK key, binds (REPORT_DATA = SHA-256(attestation key ‖ QE
// authentication data)).
type Signer struct {
	ak       *ecdsa.PrivateKey
	akPub    []byte // X ‖ Y, 64 bytes
	certData *pb.CertificationData
	signedSz uint32
}

// NewSigner returns a signer for a chain with a fresh attestation key.
func NewSigner(c *Chain) (*Signer, error) {
	if c == nil || c.PCKKey == nil || c.PCK == nil || !c.PCKKey.PublicKey.Equal(c.PCK.PublicKey) {
		return nil, errors.New("sim-tdx signer: the PCK certificate does not match the key")
	}
	ak, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("sim-tdx signer: attestation key: %w", err)
	}
	pt, err := ak.PublicKey.Bytes() // 0x04 ‖ X ‖ Y
	if err != nil || len(pt) != 65 {
		return nil, fmt.Errorf("sim-tdx signer: attestation key encoding: %v", err)
	}
	akPub := pt[1:]
	authData := make([]byte, 32)
	for i := range authData {
		authData[i] = byte(i)
	}
	bind := sha256.Sum256(append(append([]byte(nil), akPub...), authData...))
	qeReport := &pb.EnclaveReport{
		CpuSvn:     append([]byte(nil), simCPUSVN...),
		Reserved1:  make([]byte, 28),
		Attributes: append([]byte{0x11}, make([]byte, 15)...), // INIT, PROVISIONKEY... (not checked offline)
		MrEnclave:  digest32("sealpod sim-tdx: quoting enclave"),
		Reserved2:  make([]byte, 32),
		MrSigner:   digest32("sealpod sim-tdx: quoting enclave signer"),
		Reserved3:  make([]byte, 96),
		IsvProdId:  2,
		IsvSvn:     qeSVN,
		Reserved4:  make([]byte, 60),
		ReportData: append(bind[:], make([]byte, 32)...),
	}
	qeRaw, err := tdxabi.EnclaveReportToAbiBytes(qeReport)
	if err != nil {
		return nil, fmt.Errorf("sim-tdx signer: QE report: %w", err)
	}
	qeSig, err := rawSign(c.PCKKey, qeRaw)
	if err != nil {
		return nil, fmt.Errorf("sim-tdx signer: sign QE report: %w", err)
	}
	chain := c.ChainPEM()
	const (
		qeReportSize = 0x180
		sigSize      = 0x40
		sizeFields   = 2 + 6 // QE auth data size; PCK chain type and size
	)
	qeCertSize := qeReportSize + sigSize + sizeFields + len(authData) + len(chain)
	certData := &pb.CertificationData{
		CertificateDataType: 6, // QE report certification data
		Size:                uint32(qeCertSize),
		QeReportCertificationData: &pb.QEReportCertificationData{
			QeReport:          qeReport,
			QeReportSignature: qeSig,
			QeAuthData:        &pb.QeAuthData{ParsedDataSize: uint32(len(authData)), Data: authData},
			PckCertificateChainData: &pb.PCKCertificateChainData{
				CertificateDataType: 5, // PCK certificate chain, PEM
				Size:                uint32(len(chain)),
				PckCertChain:        chain,
			},
		},
	}
	const sigAndKey = 0x80
	return &Signer{ak: ak, akPub: akPub, certData: certData, signedSz: uint32(sigAndKey + 6 + qeCertSize)}, nil
}

func digest32(s string) []byte {
	d := sha256.Sum256([]byte(s))
	return d[:]
}

// rawSign signs SHA-256(msg) and returns r ‖ s, 32 bytes each (the quote's signature format).
func rawSign(key *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, key, d[:])
	if err != nil {
		return nil, err
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out, nil
}

func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// Quote returns a TDX v4 quote for o, signed by the attestation key.
func (s *Signer) Quote(o QuoteOptions) ([]byte, error) {
	attr := uint64(tdAttrSEPTVEDisable)
	if o.Debug {
		attr |= tdAttrDebug
	}
	rtmrs := make([][]byte, len(o.RTMRs))
	for i := range o.RTMRs {
		rtmrs[i] = append([]byte(nil), o.RTMRs[i][:]...)
	}
	q := &pb.QuoteV4{
		Header: &pb.Header{
			Version:            4,
			AttestationKeyType: tdxabi.AttestationKeyType,
			TeeType:            tdxabi.TeeTDX,
			QeSvn:              le16(qeSVN),
			PceSvn:             le16(pceSVN),
			QeVendorId:         qeVendorID,
			UserData:           make([]byte, 20),
		},
		TdQuoteBody: &pb.TDQuoteBody{
			TeeTcbSvn:      teeTCBSVN,
			MrSeam:         mrSeam[:],
			MrSignerSeam:   make([]byte, 48),
			SeamAttributes: make([]byte, 8),
			TdAttributes:   le64(attr),
			Xfam:           le64(simXFAM),
			MrTd:           append([]byte(nil), o.MRTD[:]...),
			MrConfigId:     append([]byte(nil), o.MRConfigID[:]...),
			MrOwner:        make([]byte, 48),
			MrOwnerConfig:  make([]byte, 48),
			Rtmrs:          rtmrs,
			ReportData:     append([]byte(nil), o.ReportData[:]...),
		},
		SignedDataSize: s.signedSz,
	}
	hdr, err := tdxabi.HeaderToAbiBytes(q.GetHeader())
	if err != nil {
		return nil, fmt.Errorf("sim-tdx quote header: %w", err)
	}
	body, err := tdxabi.TdQuoteBodyToAbiBytes(q.GetTdQuoteBody())
	if err != nil {
		return nil, fmt.Errorf("sim-tdx quote body: %w", err)
	}
	sig, err := rawSign(s.ak, append(hdr, body...))
	if err != nil {
		return nil, fmt.Errorf("sim-tdx quote: sign: %w", err)
	}
	q.SignedData = &pb.Ecdsa256BitQuoteV4AuthData{Signature: sig, EcdsaAttestationKey: s.akPub, CertificationData: s.certData}
	raw, err := tdxabi.QuoteToAbiBytes(q)
	if err != nil {
		return nil, fmt.Errorf("sim-tdx quote: %w", err)
	}
	return raw, nil
}
