// Package kbstest starts a complete Sealpod key broker in-process for tests of other
// components: a state directory from setup.Init, a bbolt store, the real protocol server
// (kbs/server) with the admin API over HTTPS on 127.0.0.1, the real SNP verifier behind
// --insecure-sim-roots semantics (a fresh sim chain), and a sealctl admin config pointing at it.
package kbstest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-sev-guest/kds"

	"github.com/sealpod/sealpod/kbs/admin"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/server"
	"github.com/sealpod/sealpod/kbs/setup"
	"github.com/sealpod/sealpod/kbs/store"
	"github.com/sealpod/sealpod/kbs/verify"
	"github.com/sealpod/sealpod/kbs/verify/pef"
	"github.com/sealpod/sealpod/kbs/verify/sim"
	"github.com/sealpod/sealpod/simtee/amdsp"
)

var (
	chainOnce sync.Once
	chain     *amdsp.Chain
	chainErr  error
)

// Chain returns one sim chain per test binary (RSA key generation is slow).
func Chain(t testing.TB) *amdsp.Chain {
	t.Helper()
	chainOnce.Do(func() {
		chain, chainErr = amdsp.NewChain(amdsp.Options{RSABits: 2048, TCB: kds.TCBParts{BlSpl: 3, SnpSpl: 8, UcodeSpl: 115}})
	})
	if chainErr != nil {
		t.Fatal(chainErr)
	}
	return chain
}

// Broker is a running key broker.
type Broker struct {
	URL        string // https://127.0.0.1:PORT
	Dir        string // state directory (setup.Init)
	ConfigPath string // DIR/admin/sealctl-kbs.json, pointing at URL
	State      *setup.State
	Store      store.Store
	Registry   *registry.Registry
	Audit      *audit.Log
	Server     *server.Server
	CASHA256   string // hex SHA-256 of the TLS CA (what envelopes pin)
}

// Start runs a broker until the test ends.
func Start(t testing.TB) *Broker {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "kbs")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + ln.Addr().String()
	if err := setup.Init(dir, []string{"127.0.0.1"}, url); err != nil {
		ln.Close()
		t.Fatalf("kbs setup: %v", err)
	}
	st, err := setup.Load(dir)
	if err != nil {
		ln.Close()
		t.Fatalf("kbs load: %v", err)
	}
	kv, err := setup.OpenStore("bolt://"+filepath.Join(dir, "kbs.db"), st.StoreKey)
	if err != nil {
		ln.Close()
		t.Fatalf("kbs store: %v", err)
	}
	c := Chain(t)
	reg := registry.New(kv, st.Signer)
	au := audit.New(kv)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(server.Config{
		Registry: reg, Audit: au, MeshCA: st.MeshCA, TokenSigner: st.Signer,
		Verifiers: map[string]verify.Verifier{api.TEESim: sim.New(c.Roots()), api.TEEPEF: pef.Verifier{}, api.TEESimPEF: pef.NewSim()},
		Admin:     admin.NewHandler(reg, au, st.MeshCA, logger, admin.WithAdminCAs(st.AdminCAPool), admin.WithDenyList(admin.NewDenyList(kv))),
		Ready:     func(ctx context.Context) error { _, err := reg.Head(ctx); return err },
		Logger:    logger,
	})
	if err != nil {
		ln.Close()
		kv.Close()
		t.Fatal(err)
	}
	tlsCfg, err := server.TLSConfig(st.TLSCert, st.TLSCAPEM, st.AdminCAPool)
	if err != nil {
		ln.Close()
		kv.Close()
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
	cfgPath := filepath.Join(dir, setup.AdminClientConfig)
	if err := pointConfig(cfgPath, url); err != nil {
		t.Fatal(err)
	}
	return &Broker{
		URL: url, Dir: dir, ConfigPath: cfgPath, State: st, Store: kv, Registry: reg, Audit: au,
		Server: srv, CASHA256: sum,
	}
}

// pointConfig makes sure the generated sealctl admin config names url.
func pointConfig(path, url string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg admin.ClientConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return err
	}
	if cfg.URL == url {
		return nil
	}
	cfg.URL = url
	b, err = json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// SigningPubPath is the broker's manifest signing public key (PEM), as a verifier would
// receive it out of band.
func (b *Broker) SigningPubPath() string { return filepath.Join(b.Dir, setup.SigningPubFile) }

// TLSCAPath is the broker's TLS CA certificate (PEM).
func (b *Broker) TLSCAPath() string { return filepath.Join(b.Dir, setup.TLSCACertFile) }
