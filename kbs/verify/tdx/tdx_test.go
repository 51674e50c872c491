package tdx

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	tdxabi "github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/testing/testdata"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
	"google.golang.org/protobuf/proto"
)

// fakeIntel is a test-only Intel SGX chain: root -> PCK platform CA -> PCK certificate.
type fakeIntel struct {
	root, inter, pck *x509.Certificate
	pckKey           *ecdsa.PrivateKey
	pool             *x509.CertPool
	chainPEM         []byte
}

var oidAKID = asn1.ObjectIdentifier{2, 5, 29, 35}

func newFakeIntel(t testing.TB, samplePCK *x509.Certificate) *fakeIntel {
	t.Helper()
	mk := func(tmpl, parent *x509.Certificate, pub, signer any) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	nb := time.Now().Add(-time.Hour)
	name := func(cn string) pkix.Name {
		return pkix.Name{CommonName: cn, Organization: []string{"Intel Corporation"}, Locality: []string{"Santa Clara"}, Province: []string{"CA"}, Country: []string{"US"}}
	}
	rootKey, interKey, pckKey := key(), key(), key()
	rootT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: name("Intel SGX Root CA"), NotBefore: nb, NotAfter: nb.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, SignatureAlgorithm: x509.ECDSAWithSHA256}
	root := mk(rootT, rootT, &rootKey.PublicKey, rootKey)
	interT := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: name("Intel SGX PCK Platform CA"), NotBefore: nb, NotAfter: nb.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, SignatureAlgorithm: x509.ECDSAWithSHA256}
	inter := mk(interT, root, &interKey.PublicKey, rootKey)
	// The PCK certificate carries the sample's extensions (SGX extension with FMSPC, TCB, ...),
	// its authority key id regenerated for our intermediate.
	var exts []pkix.Extension
	for _, e := range samplePCK.Extensions {
		if !e.Id.Equal(oidAKID) {
			exts = append(exts, e)
		}
	}
	pckT := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: name("Intel SGX PCK Certificate"), NotBefore: nb, NotAfter: nb.Add(24 * time.Hour),
		ExtraExtensions: exts, SignatureAlgorithm: x509.ECDSAWithSHA256}
	pck := mk(pckT, inter, &pckKey.PublicKey, interKey)
	if len(pck.Extensions) != len(samplePCK.Extensions) {
		t.Fatalf("fake PCK has %d extensions, sample %d", len(pck.Extensions), len(samplePCK.Extensions))
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	var chain []byte
	for _, c := range []*x509.Certificate{pck, inter, root} {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return &fakeIntel{root: root, inter: inter, pck: pck, pckKey: pckKey, pool: pool, chainPEM: chain}
}

func sampleQuote(t testing.TB) *pb.QuoteV4 {
	q, err := tdxabi.QuoteToProto(testdata.RawQuote)
	if err != nil {
		t.Fatal(err)
	}
	return q.(*pb.QuoteV4)
}

func samplePCK(t testing.TB, q *pb.QuoteV4) *x509.Certificate {
	chain := q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	b, _ := pem.Decode(chain)
	if b == nil {
		t.Fatal("sample quote has no PCK chain")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func rawSig(t testing.TB, key *ecdsa.PrivateKey, msg []byte) []byte {
	d := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out
}

// resign replaces the sample quote's PCK chain with the fake chain, makes a fresh attestation
// key, re-binds and re-signs the QE report with the PCK key and signs header+body.
func (f *fakeIntel) resign(t testing.TB, q *pb.QuoteV4) []byte {
	t.Helper()
	ak, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	akBytes := make([]byte, 64)
	ak.X.FillBytes(akBytes[:32])
	ak.Y.FillBytes(akBytes[32:])
	sd := q.GetSignedData()
	sd.EcdsaAttestationKey = akBytes
	qe := sd.GetCertificationData().GetQeReportCertificationData()
	chainData := qe.GetPckCertificateChainData()
	oldLen := len(chainData.PckCertChain)
	chainData.PckCertChain = f.chainPEM
	chainData.Size = uint32(len(f.chainPEM))
	delta := len(f.chainPEM) - oldLen
	sd.GetCertificationData().Size = uint32(int(sd.GetCertificationData().Size) + delta)
	q.SignedDataSize = uint32(int(q.SignedDataSize) + delta)

	h := sha256.Sum256(append(append([]byte(nil), akBytes...), qe.GetQeAuthData().GetData()...))
	rd := make([]byte, 64)
	copy(rd, h[:])
	qe.GetQeReport().ReportData = rd
	qeRaw, err := tdxabi.EnclaveReportToAbiBytes(qe.GetQeReport())
	if err != nil {
		t.Fatal(err)
	}
	qe.QeReportSignature = rawSig(t, f.pckKey, qeRaw)

	hdr, err := tdxabi.HeaderToAbiBytes(q.GetHeader())
	if err != nil {
		t.Fatal(err)
	}
	body, err := tdxabi.TdQuoteBodyToAbiBytes(q.GetTdQuoteBody())
	if err != nil {
		t.Fatal(err)
	}
	sd.Signature = rawSig(t, ak, append(hdr, body...))
	raw, err := tdxabi.QuoteToAbiBytes(q)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestVerifyTDX(t *testing.T) {
	base := sampleQuote(t)
	intel := newFakeIntel(t, samplePCK(t, base))
	other := newFakeIntel(t, samplePCK(t, base))

	nonce, pub := make([]byte, 32), make([]byte, 32)
	rand.Read(nonce)
	rand.Read(pub)
	rd := api.ReportData(nonce, pub)
	digest := sha256.Sum256([]byte("envelope"))
	cfg := make([]byte, 48)
	copy(cfg, digest[:])

	prep := func(q *pb.QuoteV4) {
		b := q.GetTdQuoteBody()
		b.ReportData = append([]byte(nil), rd[:]...)
		b.MrConfigId = append([]byte(nil), cfg...)
		b.TdAttributes[0] &^= 1
	}
	body := sampleQuote(t).GetTdQuoteBody()
	mrtd := hex.EncodeToString(body.GetMrTd())
	rtmr := func(i int) string { return hex.EncodeToString(body.GetRtmrs()[i]) }
	pinned := mrtd + ":" + rtmr(0) + ":" + rtmr(1) + ":" + rtmr(2) + ":"
	policy := verify.Policy{
		Measurements: []string{"00" + pinned[2:], pinned},
		HostData:     digest[:],
		ReportData:   rd[:],
	}
	svn := body.GetTeeTcbSvn()
	high := append([]byte(nil), svn...)
	high[0]++

	tests := []struct {
		name      string
		mutate    func(q *pb.QuoteV4)
		raw       func(raw []byte) []byte
		policy    func(p *verify.Policy)
		signer    *fakeIntel
		roots     *x509.CertPool
		wantField string
	}{
		{name: "good"},
		{name: "good, rtmr0 and rtmr3 open", policy: func(p *verify.Policy) { p.Measurements = []string{mrtd + "::" + rtmr(1) + ":" + rtmr(2) + ":"} }},
		// A policy that leaves the kernel (RTMR[1]) or initrd (RTMR[2]) open is never appraised.
		{name: "policy mrtd only", policy: func(p *verify.Policy) { p.Measurements = []string{mrtd} }, wantField: verify.FieldPolicy},
		{name: "policy empty rtmrs", policy: func(p *verify.Policy) { p.Measurements = []string{mrtd + "::::"} }, wantField: verify.FieldPolicy},
		{name: "policy rtmr1 open", policy: func(p *verify.Policy) { p.Measurements = []string{mrtd + ":" + rtmr(0) + "::" + rtmr(2) + ":"} }, wantField: verify.FieldPolicy},
		{name: "policy rtmr2 open", policy: func(p *verify.Policy) { p.Measurements = []string{mrtd + ":" + rtmr(0) + ":" + rtmr(1) + "::"} }, wantField: verify.FieldPolicy},
		{name: "policy with one open value", policy: func(p *verify.Policy) { p.Measurements = append(p.Measurements, mrtd) }, wantField: verify.FieldPolicy},
		{name: "wrong rtmr1", mutate: func(q *pb.QuoteV4) { q.TdQuoteBody.Rtmrs[1][0] ^= 1 }, wantField: verify.FieldMeasurement},
		{name: "wrong rtmr2", mutate: func(q *pb.QuoteV4) { q.TdQuoteBody.Rtmrs[2][0] ^= 1 }, wantField: verify.FieldMeasurement},
		{name: "wrong mrtd", mutate: func(q *pb.QuoteV4) { q.TdQuoteBody.MrTd[0] ^= 1 }, wantField: verify.FieldMeasurement},
		{name: "wrong rtmr0", mutate: func(q *pb.QuoteV4) { q.TdQuoteBody.Rtmrs[0][0] ^= 1 }, wantField: verify.FieldMeasurement},
		{name: "wrong mrconfigid", mutate: func(q *pb.QuoteV4) { q.TdQuoteBody.MrConfigId[0] ^= 1 }, wantField: verify.FieldMrConfigID},
		{name: "wrong report data", mutate: func(q *pb.QuoteV4) { q.TdQuoteBody.ReportData[0] ^= 1 }, wantField: verify.FieldReportData},
		{name: "debug on", mutate: func(q *pb.QuoteV4) { q.TdQuoteBody.TdAttributes[0] |= 1 }, wantField: verify.FieldDebug},
		{name: "tcb too low", policy: func(p *verify.Policy) { p.MinTDXTeeTCBSVN = high }, wantField: verify.FieldTCB},
		{name: "tampered body", raw: func(raw []byte) []byte { raw[48+200] ^= 1; return raw }, wantField: verify.FieldSignature},
		{name: "foreign root", signer: other, wantField: verify.FieldChain},
		{name: "fake chain against Intel's real root", roots: x509.NewCertPool(), wantField: verify.FieldChain},
		{name: "truncated", raw: func(raw []byte) []byte { return raw[:600] }, wantField: verify.FieldEvidence},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := proto.Clone(base).(*pb.QuoteV4)
			prep(q)
			if tc.mutate != nil {
				tc.mutate(q)
			}
			signer := intel
			if tc.signer != nil {
				signer = tc.signer
			}
			raw := signer.resign(t, q)
			if tc.raw != nil {
				raw = tc.raw(raw)
			}
			p := policy
			if tc.policy != nil {
				tc.policy(&p)
			}
			roots := intel.pool
			if tc.roots != nil {
				roots = tc.roots
			}
			v := New(Config{TrustedRoots: roots})
			res, err := v.Verify(context.Background(), &api.Evidence{TDX: &api.TDXEvidence{Quote: raw}}, p)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if res.TEE != api.TEETDX {
					t.Fatalf("result %+v", res)
				}
				return
			}
			var rej *verify.Rejection
			if !errors.As(err, &rej) || rej.Field != tc.wantField {
				t.Fatalf("Verify error %v, want rejection of %s", err, tc.wantField)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(testdata.RawQuote)
	f.Add([]byte{4, 0, 2, 0})
	f.Fuzz(func(t *testing.T, raw []byte) {
		q, err := Parse(&api.TDXEvidence{Quote: raw})
		if err == nil && q.GetTdQuoteBody() == nil {
			t.Fatal("parsed quote without body")
		}
	})
}

// FuzzVerify mutates a validly re-signed quote and runs the whole verifier: nothing may panic
// and nothing but the original may be accepted.
func FuzzVerify(f *testing.F) {
	base := sampleQuote(f)
	intel := newFakeIntel(f, samplePCK(f, base))
	var rd [64]byte
	digest := make([]byte, 32)
	q := proto.Clone(base).(*pb.QuoteV4)
	q.TdQuoteBody.ReportData = rd[:]
	q.TdQuoteBody.MrConfigId = make([]byte, 48)
	q.TdQuoteBody.TdAttributes[0] &^= 1
	good := intel.resign(f, q)
	b := q.TdQuoteBody
	pinned := strings.Join([]string{hex.EncodeToString(b.MrTd), "", hex.EncodeToString(b.Rtmrs[1]), hex.EncodeToString(b.Rtmrs[2]), ""}, ":")
	p := verify.Policy{Measurements: []string{pinned}, HostData: digest, ReportData: rd[:]}
	v := New(Config{TrustedRoots: intel.pool})
	if _, err := v.Verify(context.Background(), &api.Evidence{TDX: &api.TDXEvidence{Quote: good}}, p); err != nil {
		f.Fatalf("seed quote: %v", err)
	}
	f.Add(good)
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, err := v.Verify(context.Background(), &api.Evidence{TDX: &api.TDXEvidence{Quote: raw}}, p)
		if err == nil && !bytes.Equal(raw, good) {
			// Bytes after the signed region (extra bytes) may differ; anything signed may not.
			if len(raw) < 632 || !bytes.Equal(raw[:632], good[:632]) {
				t.Fatalf("accepted a modified quote")
			}
		}
	})
}
