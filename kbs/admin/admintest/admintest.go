// Package admintest starts a real key broker admin API for tests: a state directory created
// by setup.Init, a bolt store, and an httptest TLS server on 127.0.0.1 configured like the
// broker's (VerifyClientCertIfGiven with the admin CA pool) with the admin handler mounted at
// /kbs/v1/admin/.
package admintest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/sealpod/sealpod/kbs/admin"
	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/setup"
	"github.com/sealpod/sealpod/kbs/store"
)

// Server is a running admin API.
type Server struct {
	Dir        string // state directory
	ConfigPath string // sealctl-kbs.json pointing at this server
	URL        string
	State      *setup.State
	Store      store.Store
	Registry   *registry.Registry
	Audit      *audit.Log
	HTTP       *httptest.Server
}

// TLSConfig is the server TLS configuration the broker uses for its single listener.
func TLSConfig(st *setup.State) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{st.TLSCert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    st.AdminCAPool,
		MinVersion:   tls.VersionTLS12,
	}
}

// Start creates a state directory under t.TempDir() and serves the admin API; everything is
// closed when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "kbs")
	if err := setup.Init(dir, []string{"127.0.0.1", "localhost"}, ""); err != nil {
		t.Fatal(err)
	}
	st, err := setup.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := setup.OpenStore(st.StoreURL, st.StoreKey)
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(s, st.Signer)
	log := audit.New(s)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	mux := http.NewServeMux()
	mux.Handle(admin.PathPrefix, admin.NewHandler(reg, log, st.MeshCA, logger, admin.WithAdminCAs(st.AdminCAPool), admin.WithDenyList(admin.NewDenyList(s))))
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = TLSConfig(st)
	srv.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		s.Close()
	})
	// Point the generated sealctl config at this server.
	cfgPath := filepath.Join(dir, setup.AdminClientConfig)
	pointConfigAt(t, cfgPath, srv.URL)
	return &Server{Dir: dir, ConfigPath: cfgPath, URL: srv.URL, State: st, Store: s, Registry: reg, Audit: log, HTTP: srv}
}

// IssueAdmin issues another admin identity named name (setup.IssueAdminClient, default
// lifetime) and returns its certificate and a client using it.
func (s *Server) IssueAdmin(t testing.TB, name string) (*x509.Certificate, *admin.Client) {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	cert, err := setup.IssueAdminClient(s.Dir, name, 0, out)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(out, filepath.Base(setup.AdminClientConfig))
	pointConfigAt(t, cfgPath, s.URL)
	c, err := admin.NewClientFromConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	return cert, c
}

// pointConfigAt rewrites the sealctl admin client config at cfgPath to reach url.
func pointConfigAt(t testing.TB, cfgPath, url string) {
	t.Helper()
	var cfg admin.ClientConfig
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.URL = url
	if b, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Client returns an admin client for the server.
func (s *Server) Client(t testing.TB) *admin.Client {
	t.Helper()
	c, err := admin.NewClientFromConfig(s.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
