package server

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/api"
)

func TestTokens(t *testing.T) {
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edk, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	for name, key := range map[string]crypto.Signer{"ecdsa": ek, "ed25519": edk} {
		t.Run(name, func(t *testing.T) {
			k, err := DeriveTokenKey(key)
			if err != nil {
				t.Fatal(err)
			}
			// Replicas loading the same state derive the same key.
			if k2, _ := DeriveTokenKey(key); string(k) != string(k2) {
				t.Fatal("DeriveTokenKey is not deterministic")
			}
			ts, err := newTokenSigner(k)
			if err != nil {
				t.Fatal(err)
			}
			c := Claims{SessionID: "s1", Workload: "w", TEE: "sim", PubKeyHash: PubKeyHash([]byte("k")), IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix()}
			tok, err := ts.sign(c)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(tok, "sp2.") {
				t.Fatalf("token %q: want prefix sp2.", tok)
			}
			got, err := ts.verify(tok, now)
			if err != nil || got.TEE != "sim" || got.SessionID != "s1" || got.Version != claimsVersion {
				t.Fatalf("verify: %+v %v", got, err)
			}
			if _, err := ts.verify(tok, now.Add(2*time.Minute)); !errors.Is(err, ErrTokenExpired) {
				t.Fatalf("expired token: %v", err)
			}
			// Change the claims, keep the MAC.
			other, _ := ts.sign(Claims{SessionID: "s1", Workload: "other", ExpiresAt: c.ExpiresAt})
			forged := strings.Split(other, ".")[1]
			parts := strings.Split(tok, ".")
			if _, err := ts.verify(parts[0]+"."+forged+"."+parts[2], now); !errors.Is(err, ErrTokenSignature) {
				t.Fatalf("forged claims: %v", err)
			}
			// Flip one bit of the MAC.
			mac, _ := base64.RawURLEncoding.DecodeString(parts[2])
			mac[0] ^= 1
			if _, err := ts.verify(parts[0]+"."+parts[1]+"."+base64.RawURLEncoding.EncodeToString(mac), now); !errors.Is(err, ErrTokenSignature) {
				t.Fatalf("flipped MAC: %v", err)
			}
			// A truncated MAC is malformed.
			if _, err := ts.verify(parts[0]+"."+parts[1]+"."+base64.RawURLEncoding.EncodeToString(mac[:16]), now); !errors.Is(err, ErrTokenMalformed) {
				t.Fatalf("truncated MAC: %v", err)
			}
			// Another state key does not verify it.
			ek2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			k2, _ := DeriveTokenKey(ek2)
			ts2, _ := newTokenSigner(k2)
			if _, err := ts2.verify(tok, now); !errors.Is(err, ErrTokenSignature) {
				t.Fatalf("token verified under another key: %v", err)
			}
			// A version-1 token (old format) is refused.
			if _, err := ts.verify("sp1."+parts[1]+"."+parts[2], now); !errors.Is(err, ErrTokenMalformed) {
				t.Fatalf("sp1 token: %v", err)
			}
		})
	}
}

func TestTokenKeyErrors(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DeriveTokenKey(rk); err == nil {
		t.Fatal("DeriveTokenKey accepted an RSA signer")
	}
	for _, n := range []int{0, 16, 31, 33} {
		if _, err := newTokenSigner(make([]byte, n)); err == nil {
			t.Fatalf("newTokenSigner accepted a %d-byte key", n)
		}
	}
}

// The token MAC must distinguish states: two state keys give different token keys, and the
// derived key is not the signing key's own bytes.
func TestDeriveTokenKeyDistinct(t *testing.T) {
	a, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ka, _ := DeriveTokenKey(a)
	kb, _ := DeriveTokenKey(b)
	raw, _ := a.Bytes()
	if string(ka) == string(kb) || string(ka) == string(raw) || len(ka) != tokenKeySize {
		t.Fatalf("derived keys: %x %x (raw %x)", ka, kb, raw)
	}
}

func FuzzTokenVerify(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key, _ := DeriveTokenKey(k)
	ts, _ := newTokenSigner(key)
	tok, _ := ts.sign(Claims{SessionID: "s", Workload: "w", TEE: "snp", ExpiresAt: time.Now().Add(time.Hour).Unix()})
	f.Add(tok)
	f.Add("sp2..")
	f.Add("sp2.e30.AAAA")
	f.Add("sp1.e30.AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ts.verify(s, time.Now())
		if err == nil && s != tok {
			t.Fatalf("verified a token the broker did not sign: %q -> %+v", s, c)
		}
	})
}

func FuzzSessionTake(f *testing.F) {
	f.Add("abc")
	f.Add("")
	f.Fuzz(func(t *testing.T, id string) {
		s := newSessions(time.Minute, 10, 10)
		sess, err := s.open("sim", "w", "192.0.2.1", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.take(id, time.Now()); err == nil && id != sess.id {
			t.Fatalf("took session %q with id %q", sess.id, id)
		}
	})
}

// TestTokenNotReplayableAcrossReRegistration: a token from an attestation against a
// registration that was removed must not release the data key or a certificate of a later
// registration of the same workload id (new key, new SANs), within the token's lifetime.
func TestTokenNotReplayableAcrossReRegistration(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	s, err := e.client.Auth(ctx, api.TEESim, e.workload.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Attest(ctx, e.evidence(t, s, nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Remove(ctx, e.workload.ID, "admin:test"); err != nil {
		t.Fatal(err)
	}
	again := e.workload
	again.DataKey = make([]byte, 32)
	rand.Read(again.DataKey)
	again.SANs = []string{"payments.prod.svc.cluster.local"}
	if _, err := e.reg.Put(ctx, again, "admin:test"); err != nil {
		t.Fatal(err)
	}
	if key, err := s.Key(ctx); err == nil {
		t.Fatalf("token of the removed registration released the new data key (new key: %v)", bytes.Equal(key, again.DataKey))
	} else {
		wantAPIError(t, err, http.StatusUnauthorized, api.ReasonToken, "")
	}
	csr, _ := makeCSR(t, nil)
	if _, err := s.Certificate(ctx, csr); err == nil {
		t.Fatal("token of the removed registration got a certificate for the new SANs")
	} else {
		wantAPIError(t, err, http.StatusUnauthorized, api.ReasonToken, "")
	}
}
