package api

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/curve25519"
)

func TestReportData(t *testing.T) {
	nonce := bytes.Repeat([]byte{1}, 32)
	pub := bytes.Repeat([]byte{2}, 32)
	a := ReportData(nonce, pub)
	// Golden value computed independently: python3 -c 'import hashlib;
	// print(hashlib.sha512(b"sealpod-attest-v1"+b"\x01"*32+b"\x02"*32).hexdigest())'
	const golden = "f184a4a2e27b7959e8a060811c82b2757b5035f51f3e56e9c4ac8bf385bc40c3d6b6b93975ce0651edb1e9351c2b551ee4a7edb65958bca60614b1ff5e05d720"
	if got := hex.EncodeToString(a[:]); got != golden {
		t.Fatalf("REPORT_DATA %s, want %s", got, golden)
	}
	if b := ReportData(nonce, bytes.Repeat([]byte{3}, 32)); a == b {
		t.Fatal("REPORT_DATA does not depend on the TEE key")
	}
	if b := ReportData(bytes.Repeat([]byte{9}, 32), pub); a == b {
		t.Fatal("REPORT_DATA does not depend on the nonce")
	}
}

func TestSealOpenKey(t *testing.T) {
	var priv, pub [32]byte
	rand.Read(priv[:])
	p, _ := curve25519.X25519(priv[:], curve25519.Basepoint)
	copy(pub[:], p)
	key := bytes.Repeat([]byte{7}, 32)
	sealed, err := SealKey(key, pub[:])
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenKey(sealed, &pub, &priv)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("OpenKey: %v", err)
	}
	var otherPriv [32]byte
	rand.Read(otherPriv[:])
	if _, err := OpenKey(sealed, &pub, &otherPriv); !errors.Is(err, ErrOpenKey) {
		t.Fatalf("opened with another private key: %v", err)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := OpenKey(sealed, &pub, &priv); !errors.Is(err, ErrOpenKey) {
		t.Fatalf("opened a modified box: %v", err)
	}
}

func TestDecodeAndValidate(t *testing.T) {
	tests := []struct {
		name string
		body string
		v    interface{ Validate() error }
		ok   bool
	}{
		{"auth ok", `{"tee":"sim","workload":"web"}`, &AuthRequest{}, true},
		{"auth unknown tee", `{"tee":"sgx","workload":"web"}`, &AuthRequest{}, false},
		{"auth bad id", `{"tee":"snp","workload":"Web/../x"}`, &AuthRequest{}, false},
		{"auth unknown field", `{"tee":"snp","workload":"web","x":1}`, &AuthRequest{}, false},
		{"auth trailing", `{"tee":"snp","workload":"web"}{}`, &AuthRequest{}, false},
		{"attest short key", `{"teePubKey":"AAAA","evidence":{"snp":{"report":"AAAA"}}}`, &AttestRequest{}, false},
		{"attest no evidence", `{"teePubKey":"` + strings.Repeat("A", 43) + `=","evidence":{}}`, &AttestRequest{}, false},
		{"attest ok", `{"teePubKey":"` + strings.Repeat("A", 43) + `=","evidence":{"tdx":{"quote":"AAAA"}}}`, &AttestRequest{}, true},
		{"attest with csr", `{"teePubKey":"` + strings.Repeat("A", 43) + `=","evidence":{"tdx":{"quote":"AAAA"}},"csr":"MIIB"}`, &AttestRequest{}, true},
		{"attest empty csr", `{"teePubKey":"` + strings.Repeat("A", 43) + `=","evidence":{"tdx":{"quote":"AAAA"}},"csr":""}`, &AttestRequest{}, false},
		{"attest oversized csr", `{"teePubKey":"` + strings.Repeat("A", 43) + `=","evidence":{"tdx":{"quote":"AAAA"}},"csr":"` + strings.Repeat("A", (MaxCSRSize+3)/3*4+4) + `"}`, &AttestRequest{}, false},
		{"cert empty", `{"csr":""}`, &CertificateRequest{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := DecodeJSON(strings.NewReader(tc.body), tc.v)
			if err == nil {
				err = tc.v.Validate()
			}
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func FuzzDecodeRequests(f *testing.F) {
	for _, s := range []string{
		`{"tee":"sim","workload":"web"}`,
		`{"teePubKey":"AAAA","evidence":{"snp":{"report":"AAAA","certTable":"AA==","vcek":"AA=="}}}`,
		`{"csr":"MIIB"}`,
		`{"x":[1,2,{"y":null}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var a AuthRequest
		if DecodeJSON(bytes.NewReader(data), &a) == nil && a.Validate() == nil {
			if !ValidTEE(a.TEE) || !ValidWorkloadID(a.Workload) {
				t.Fatalf("accepted invalid auth request %+v", a)
			}
		}
		var at AttestRequest
		if DecodeJSON(bytes.NewReader(data), &at) == nil && at.Validate() == nil {
			if len(at.TEEPubKey) != TEEPubKeySize {
				t.Fatalf("accepted attest request with %d-byte key", len(at.TEEPubKey))
			}
			if at.CSR != nil && (len(at.CSR) == 0 || len(at.CSR) > MaxCSRSize) {
				t.Fatalf("accepted attest request with a %d-byte CSR", len(at.CSR))
			}
		}
		var c CertificateRequest
		if DecodeJSON(bytes.NewReader(data), &c) == nil && c.Validate() == nil && len(c.CSR) == 0 {
			t.Fatal("accepted empty CSR")
		}
		var r json.RawMessage
		_ = DecodeJSON(bytes.NewReader(data), &r)
	})
}
