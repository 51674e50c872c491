package api

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestKeysEncoding(t *testing.T) {
	dk := bytes.Repeat([]byte{1}, DataKeySize)
	vs := bytes.Repeat([]byte{2}, VolumeSecretSize)
	tests := []struct {
		name string
		keys Keys
		ok   bool
	}{
		{"data key only", Keys{DataKey: dk}, true},
		{"data key and volume secret", Keys{DataKey: dk, VolumeSecret: vs}, true},
		{"short data key", Keys{DataKey: dk[:31]}, false},
		{"no data key", Keys{VolumeSecret: vs}, false},
		{"short volume secret", Keys{DataKey: dk, VolumeSecret: vs[:5]}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.keys.Marshal()
			if (err == nil) != tc.ok {
				t.Fatalf("Marshal: %v, want ok=%v", err, tc.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrKeys) {
					t.Fatalf("Marshal error %v is not ErrKeys", err)
				}
				return
			}
			// Through the box, as the broker and the guest use it.
			priv, _ := ecdh.X25519().GenerateKey(rand.Reader)
			sealed, err := SealKey(b, priv.PublicKey().Bytes())
			if err != nil {
				t.Fatal(err)
			}
			plain, err := OpenKeyWith(sealed, priv.PublicKey().Bytes(), priv)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseKeys(plain)
			if err != nil || !bytes.Equal(got.DataKey, tc.keys.DataKey) || !bytes.Equal(got.VolumeSecret, tc.keys.VolumeSecret) || (got.VolumeSecret == nil) != (tc.keys.VolumeSecret == nil) {
				t.Fatalf("ParseKeys = %+v, %v; want %+v", got, err, tc.keys)
			}
		})
	}
	for _, n := range []int{0, 1, 31, 33, 63, 65, 96} {
		if _, err := ParseKeys(make([]byte, n)); !errors.Is(err, ErrKeys) {
			t.Errorf("ParseKeys(%d bytes): %v, want ErrKeys", n, err)
		}
	}
}

func FuzzParseKeys(f *testing.F) {
	f.Add(make([]byte, 32))
	f.Add(make([]byte, 64))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseKeys(b)
		if err != nil {
			return
		}
		out, err := k.Marshal()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("ParseKeys accepted %x but re-encodes to %x (%v)", b, out, err)
		}
	})
}

func TestCSRBinding(t *testing.T) {
	nonce := bytes.Repeat([]byte{1}, NonceSize)
	pub := bytes.Repeat([]byte{2}, TEEPubKeySize)
	rd := ReportData(nonce, pub)
	good := CSRBindingURI(rd)
	if !strings.HasPrefix(good, CSRBindingPrefix) || len(good) != len(CSRBindingPrefix)+2*ReportDataSize {
		t.Fatalf("binding URI %q", good)
	}
	other := CSRBindingURI(ReportData(nonce, bytes.Repeat([]byte{3}, TEEPubKeySize)))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		uris []string
		ok   bool
	}{
		{"bound", []string{good}, true},
		{"bound, other URIs beside", []string{"spiffe://cluster/ns/default/sa/web", good}, true},
		{"no URI", nil, false},
		{"other URI only", []string{"spiffe://cluster/ns/default/sa/web"}, false},
		{"bound to another TEE key", []string{other}, false},
		{"two bindings", []string{good, other}, false},
		{"the same binding twice", []string{good, good}, false},
		{"upper-case hex", []string{CSRBindingPrefix + strings.ToUpper(good[len(CSRBindingPrefix):])}, false},
		{"truncated", []string{good[:len(good)-2]}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := &x509.CertificateRequest{}
			for _, s := range tc.uris {
				u, err := url.Parse(s)
				if err != nil {
					t.Fatal(err)
				}
				tmpl.URIs = append(tmpl.URIs, u)
			}
			der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
			if err != nil {
				t.Fatal(err)
			}
			csr, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			err = CheckCSRBinding(csr, rd)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrCSRBinding)) {
				t.Fatalf("CheckCSRBinding: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
