package server

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestTokens(t *testing.T) {
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edk, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	for name, key := range map[string]crypto.Signer{"ecdsa": ek, "ed25519": edk} {
		t.Run(name, func(t *testing.T) {
			ts, err := newTokenSigner(key)
			if err != nil {
				t.Fatal(err)
			}
			c := Claims{SessionID: "s1", Workload: "w", TEE: "sim", PubKeyHash: PubKeyHash([]byte("k")), IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix()}
			tok, err := ts.sign(c)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ts.verify(tok, now)
			if err != nil || got.TEE != "sim" || got.SessionID != "s1" {
				t.Fatalf("verify: %+v %v", got, err)
			}
			if _, err := ts.verify(tok, now.Add(2*time.Minute)); !errors.Is(err, ErrTokenExpired) {
				t.Fatalf("expired token: %v", err)
			}
			// Change the claims, keep the signature.
			other, _ := ts.sign(Claims{SessionID: "s1", Workload: "other", ExpiresAt: c.ExpiresAt})
			forged := strings.Split(other, ".")[1]
			parts := strings.Split(tok, ".")
			if _, err := ts.verify(parts[0]+"."+forged+"."+parts[2], now); !errors.Is(err, ErrTokenSignature) {
				t.Fatalf("forged claims: %v", err)
			}
			ek2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			ts2, _ := newTokenSigner(ek2)
			if _, err := ts2.verify(tok, now); !errors.Is(err, ErrTokenSignature) {
				t.Fatalf("token verified under another key: %v", err)
			}
		})
	}
}

func FuzzTokenVerify(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ts, _ := newTokenSigner(k)
	tok, _ := ts.sign(Claims{SessionID: "s", Workload: "w", TEE: "snp", ExpiresAt: time.Now().Add(time.Hour).Unix()})
	f.Add(tok)
	f.Add("sp1..")
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
		s := newSessions(time.Minute, 10)
		sess, err := s.open("sim", "w", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.take(id, time.Now()); err == nil && id != sess.id {
			t.Fatalf("took session %q with id %q", sess.id, id)
		}
	})
}
