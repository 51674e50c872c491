package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-sev-guest/kds"
	"github.com/sealpod/sealpod/kbs/admin"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/client"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/setup"
	"github.com/sealpod/sealpod/kbs/store"
	"github.com/sealpod/sealpod/kbs/verify"
	"github.com/sealpod/sealpod/kbs/verify/sim"
	"github.com/sealpod/sealpod/kbs/verify/snp"
	"github.com/sealpod/sealpod/simtee/amdsp"
)

// clock is a test clock: real time plus an adjustable offset.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration) { c.off.Add(int64(d)) }

var (
	chainOnce sync.Once
	simChain  *amdsp.Chain
	chainErr  error
)

// testChain is one sim chain per test binary (RSA key generation is slow).
func testChain(t testing.TB) *amdsp.Chain {
	chainOnce.Do(func() {
		simChain, chainErr = amdsp.NewChain(amdsp.Options{RSABits: 2048, TCB: kds.TCBParts{BlSpl: 3, SnpSpl: 8, UcodeSpl: 115}})
	})
	if chainErr != nil {
		t.Fatal(chainErr)
	}
	return simChain
}

// env is a real broker: state from setup.Init, a bbolt store in a temp dir, HTTPS on
// 127.0.0.1, and a real client.
type env struct {
	state    *setup.State
	store    store.Store
	reg      *registry.Registry
	audit    *audit.Log
	srv      *Server
	url      string
	client   *client.Client
	signer   *amdsp.Signer
	clock    *clock
	workload registry.Workload
	meas     [48]byte
	digest   [32]byte
	cancel   context.CancelFunc
	done     chan error
	dir      string // state directory
	opts     envOptions
}

type envOptions struct {
	noSim    bool
	tokenTTL time.Duration
	logger   *slog.Logger
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if err := setup.Init(dir, []string{"localhost", "127.0.0.1"}, "https://127.0.0.1:8443"); err != nil {
		t.Fatalf("setup.Init: %v", err)
	}
	st, err := setup.Load(dir)
	if err != nil {
		t.Fatalf("setup.Load: %v", err)
	}
	kv, err := setup.OpenStore("bolt://"+filepath.Join(dir, "kbs.db"), st.StoreKey)
	if err != nil {
		t.Fatalf("open bolt store: %v", err)
	}
	e := &env{state: st, store: kv, reg: registry.New(kv, st.Signer), audit: audit.New(kv), clock: &clock{}, dir: dir, opts: o}
	t.Cleanup(func() {
		e.stop(t)
		e.audit.Flush(context.Background()) // queued auth/refusal events, before the store closes
		e.store.Close()
	})
	chain := testChain(t)
	e.signer, err = amdsp.NewSigner(chain)
	if err != nil {
		t.Fatal(err)
	}
	e.meas = sha512.Sum384([]byte("sealpod guest kernel+initrd+cmdline"))
	e.digest = sha256.Sum256([]byte("sealed envelope bytes"))
	key := make([]byte, 32)
	rand.Read(key)
	e.workload = registry.Workload{
		ID:             "web-frontend",
		TEEs:           []string{"sim", "snp"},
		Measurements:   map[string][]string{"sim": {hex.EncodeToString(e.meas[:])}, "snp": {hex.EncodeToString(e.meas[:])}},
		EnvelopeDigest: hex.EncodeToString(e.digest[:]),
		MinTCB:         registry.TCB{SNP: &registry.SNPTCB{Bootloader: 3, SNP: 8, Microcode: 115}},
		SANs:           []string{"web.default.svc.cluster.local", "10.0.0.7"},
		DataKey:        key,
	}
	if _, err := e.reg.Put(context.Background(), e.workload, "test"); err != nil {
		t.Fatalf("registry put: %v", err)
	}
	e.start(t)
	return e
}

// start serves the env's registry and audit log on a new listener with a new client.
func (e *env) start(t testing.TB) {
	t.Helper()
	o, st := e.opts, e.state
	verifiers := map[string]verify.Verifier{api.TEESNP: snp.New(snp.Config{})}
	if !o.noSim {
		verifiers[api.TEESim] = sim.New(testChain(t).Roots())
	}
	var err error
	logger := o.logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e.srv, err = New(Config{
		Registry: e.reg, Audit: e.audit, MeshCA: st.MeshCA, TokenSigner: st.Signer, Verifiers: verifiers,
		Admin:    admin.NewHandler(e.reg, e.audit, st.MeshCA, logger),
		Ready:    func(ctx context.Context) error { _, err := e.reg.Head(ctx); return err },
		TokenTTL: o.tokenTTL, Logger: logger, Now: e.clock.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := TLSConfig(st.TLSCert, st.TLSCAPEM, st.AdminCAPool)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.url = "https://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- e.srv.Serve(ctx, ln, tlsCfg) }()
	e.client, err = client.New(e.url, client.Options{CAPEM: st.TLSCAPEM})
	if err != nil {
		t.Fatal(err)
	}
}

// restart stops the server, closes the store and opens everything again from the state
// directory (a broker restart: only what the store holds survives).
func (e *env) restart(t testing.TB) {
	t.Helper()
	e.stop(t)
	if err := e.audit.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	kv, err := setup.OpenStore("bolt://"+filepath.Join(e.dir, "kbs.db"), e.state.StoreKey)
	if err != nil {
		t.Fatalf("reopen bolt store: %v", err)
	}
	e.store, e.reg, e.audit = kv, registry.New(kv, e.state.Signer), audit.New(kv)
	e.start(t)
}

func (e *env) stop(t testing.TB) {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	if err := <-e.done; err != nil && !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve returned %v", err)
	}
}

// evidence returns sim evidence for the session with the env's measurement and digest.
func (e *env) evidence(t testing.TB, s *client.Session, mutate func(o *amdsp.ReportOptions)) *api.Evidence {
	t.Helper()
	o := amdsp.ReportOptions{ReportData: s.ReportData(), Measurement: e.meas, HostData: e.digest}
	if mutate != nil {
		mutate(&o)
	}
	rep, table, err := e.signer.Report(o)
	if err != nil {
		t.Fatal(err)
	}
	return &api.Evidence{SNP: &api.SNPEvidence{Report: rep, CertTable: table}}
}
