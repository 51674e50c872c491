package brokertest

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/kbs/registry"
)

// SealPEF seals sp with dataKey for teeName (pef or sim-pef) and registers it as sealctl does
// for PEF: no measurement, the broker credential's public key cred as pefCredential.
func (b *Broker) SealPEF(t testing.TB, sp *spec.Spec, sans []string, teeName string, dataKey []byte, cred ed25519.PublicKey) *Sealed {
	t.Helper()
	plain, err := sp.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	env, err := envelope.Seal(plain, dataKey, envelope.Header{
		Workload: sp.Workload, TEEs: []string{teeName},
		KBS: envelope.KBS{URL: b.URL, CASHA256: b.CASHA256},
	})
	if err != nil {
		t.Fatal(err)
	}
	w := registry.Workload{
		ID: sp.Workload, TEEs: []string{teeName},
		EnvelopeDigest: envelope.Sum(env).String(),
		SANs:           sans,
		DataKey:        dataKey,
		PEFCredential:  hex.EncodeToString(cred),
	}
	if _, err := b.Registry.Put(context.Background(), w, "test"); err != nil {
		t.Fatalf("register %s: %v", sp.Workload, err)
	}
	return &Sealed{Envelope: env, DataKey: dataKey, Workload: w}
}
