// Package brokertest starts a real Sealpod key broker in-process for the agent's tests (through
// kbs/kbstest: state from setup.Init, a bbolt store, the real HTTPS server on 127.0.0.1 with the
// real SNP verifier behind --insecure-sim-roots semantics) and helpers to seal a spec and
// register its workload the way sealctl does.
package brokertest

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/kbstest"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/setup"
	"github.com/sealpod/sealpod/simtee/amdsp"
)

// Chain returns one sim chain per test binary (RSA key generation is slow).
func Chain(t testing.TB) *amdsp.Chain { return kbstest.Chain(t) }

// Broker is a running key broker.
type Broker struct {
	URL      string
	State    *setup.State
	Registry *registry.Registry
	Signer   *amdsp.Signer
	CASHA256 string
	// Measurement is the sim launch measurement registered by Seal.
	Measurement [48]byte
}

// Start runs a broker (kbs/kbstest) until the test ends.
func Start(t testing.TB) *Broker {
	t.Helper()
	kb := kbstest.Start(t)
	signer, err := amdsp.NewSigner(kbstest.Chain(t))
	if err != nil {
		t.Fatal(err)
	}
	return &Broker{
		URL: kb.URL, State: kb.State, Registry: kb.Registry, Signer: signer, CASHA256: kb.CASHA256,
		Measurement: sha512.Sum384([]byte("sealpod agent test guest")),
	}
}

// Sealed is a sealed and registered workload.
type Sealed struct {
	Envelope []byte
	DataKey  []byte
	Workload registry.Workload
}

// Seal seals sp for sim, registers it with the broker's measurement and sans, and returns
// the envelope.
func (b *Broker) Seal(t testing.TB, sp *spec.Spec, sans []string) *Sealed {
	t.Helper()
	key, err := envelope.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	plain, err := sp.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	env, err := envelope.Seal(plain, key, envelope.Header{
		Workload: sp.Workload, TEEs: []string{api.TEESim},
		KBS: envelope.KBS{URL: b.URL, CASHA256: b.CASHA256},
	})
	if err != nil {
		t.Fatal(err)
	}
	w := registry.Workload{
		ID: sp.Workload, TEEs: []string{api.TEESim},
		Measurements:   map[string][]string{api.TEESim: {hex.EncodeToString(b.Measurement[:])}},
		EnvelopeDigest: envelope.Sum(env).String(),
		SANs:           sans,
		DataKey:        key,
	}
	if _, err := b.Registry.Put(context.Background(), w, "test"); err != nil {
		t.Fatalf("register %s: %v", sp.Workload, err)
	}
	return &Sealed{Envelope: env, DataKey: key, Workload: w}
}
