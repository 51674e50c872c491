package snp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"testing"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
)

// BenchmarkVerify measures the SNP verifier alone (chain, signature, policy, validate) on all
// cores; BenchmarkP384Verify is its floor. Compare ns/op of the two.
func BenchmarkVerify(b *testing.B) {
	s := librarySigner(b)
	table, _ := s.CertTableBytes()
	meas := sha512.Sum384([]byte("guest"))
	hd := sha256.Sum256([]byte("envelope"))
	var rd [64]byte
	rep := rawReport(b, fields{reportData: rd, measurement: meas, hostData: hd}, s.Keys.Vcek)
	p := verify.Policy{Measurements: []string{hex.EncodeToString(meas[:])}, HostData: hd[:], ReportData: rd[:]}
	v := New(Config{TrustedRoots: rootsOf(s)})
	ev := &api.Evidence{SNP: &api.SNPEvidence{Report: rep, CertTable: table}}
	if _, err := v.Verify(context.Background(), ev, p); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.Verify(context.Background(), ev, p); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkP384Verify(b *testing.B) {
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	d := sha512.Sum384([]byte("report"))
	sig, _ := ecdsa.SignASN1(rand.Reader, key, d[:])
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if !ecdsa.VerifyASN1(&key.PublicKey, d[:], sig) {
				b.Error("verify failed")
				return
			}
		}
	})
}
