// Package brokertest starts a real Sealpod key broker in-process for the agent's tests: a
// state directory from setup.Init, a bbolt store, the real HTTPS server on 127.0.0.1 with the
// real SNP verifier behind --insecure-sim-roots semantics (a fresh sim chain), and helpers to
// seal a spec and register its workload the way sealctl does.
package brokertest

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-sev-guest/kds"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/kbs/admin"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/server"
	"github.com/sealpod/sealpod/kbs/setup"
	"github.com/sealpod/sealpod/kbs/simtee"
	"github.com/sealpod/sealpod/kbs/verify"
	"github.com/sealpod/sealpod/kbs/verify/sim"
)

var (
	chainOnce sync.Once
	chain     *simtee.Chain
	chainErr  error
)

// Chain returns one sim chain per test binary (RSA key generation is slow).
func Chain(t testing.TB) *simtee.Chain {
	chainOnce.Do(func() {
		chain, chainErr = simtee.NewChain(simtee.Options{RSABits: 2048, TCB: kds.TCBParts{BlSpl: 3, SnpSpl: 8, UcodeSpl: 115}})
	})
	if chainErr != nil {
		t.Fatal(chainErr)
	}
	return chain
}

// Broker is a running key broker.
type Broker struct {
	URL      string
	State    *setup.State
	Registry *registry.Registry
	Signer   *simtee.Signer
	CASHA256 string
	// Measurement is the sim launch measurement registered by Seal.
	Measurement [48]byte
}

// Start runs a broker until the test ends.
func Start(t testing.TB) *Broker {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "kbs")
	if err := setup.Init(dir, []string{"127.0.0.1"}, "https://127.0.0.1:8443"); err != nil {
		t.Fatalf("kbs setup: %v", err)
	}
	st, err := setup.Load(dir)
	if err != nil {
		t.Fatalf("kbs load: %v", err)
	}
	kv, err := setup.OpenStore("bolt://"+filepath.Join(dir, "kbs.db"), st.StoreKey)
	if err != nil {
		t.Fatalf("kbs store: %v", err)
	}
	c := Chain(t)
	signer, err := simtee.NewSigner(c)
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(kv, st.Signer)
	au := audit.New(kv)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(server.Config{
		Registry: reg, Audit: au, MeshCA: st.MeshCA, TokenSigner: st.Signer,
		Verifiers: map[string]verify.Verifier{api.TEESim: sim.New(&simtee.Roots{ProductLine: simtee.ProductLine, ARK: c.ARK, ASK: c.ASK})},
		Admin:     admin.NewHandler(reg, au, st.MeshCA, logger),
		Ready:     func(ctx context.Context) error { _, err := reg.Head(ctx); return err },
		Logger:    logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := server.TLSConfig(st.TLSCert, st.TLSCAPEM, st.AdminCAPool)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, tlsCfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("kbs serve: %v", err)
		}
		if err := au.Flush(context.Background()); err != nil {
			t.Errorf("flush audit log: %v", err)
		}
		kv.Close()
	})
	sum, err := st.TLSCASHA256()
	if err != nil {
		t.Fatal(err)
	}
	return &Broker{
		URL: "https://" + ln.Addr().String(), State: st, Registry: reg, Signer: signer, CASHA256: sum,
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
		EnvelopeDigest: envelope.Digest(env),
		SANs:           sans,
		DataKey:        key,
	}
	if _, err := b.Registry.Put(context.Background(), w, "test"); err != nil {
		t.Fatalf("register %s: %v", sp.Workload, err)
	}
	return &Sealed{Envelope: env, DataKey: key, Workload: w}
}
