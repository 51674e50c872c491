package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/admin"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/client"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/setup"
	"github.com/sealpod/sealpod/simtee/amdsp"
	"github.com/sealpod/sealpod/simtee/simroots"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := NewRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestInitSimRootsServe(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if _, err := run(t, "init", "--dir", state, "--host", "localhost", "--host", "127.0.0.1", "--url", "https://127.0.0.1:8443"); err != nil {
		t.Fatalf("init: %v", err)
	}
	if _, err := run(t, "init", "--dir", state, "--url", "https://127.0.0.1:8443"); err == nil {
		t.Fatal("init overwrote an existing state directory")
	}
	roots, key := filepath.Join(dir, "roots.pem"), filepath.Join(dir, "vcek.pem")
	if _, err := run(t, "sim-roots", "--out", roots, "--key-out", key, "--rsa-bits", "2048"); err != nil {
		t.Fatalf("sim-roots: %v", err)
	}
	if _, err := simroots.Load(roots); err != nil {
		t.Fatal(err)
	}
	if _, err := amdsp.LoadSigner(key); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "serve", "--dir", state, "--insecure-sim-roots", filepath.Join(dir, "missing.pem")); err == nil {
		t.Fatal("serve accepted a missing sim roots file")
	}

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ServeFlags{Dir: state, Listen: "127.0.0.1:0", InsecureSimRoots: roots, LogFormat: "text",
			TokenTTL: time.Minute, NonceTTL: time.Minute, CertValidity: time.Hour}, ready)
	}()
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not start")
	}
	st, err := setup.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New("https://"+addr.String(), client.Options{CAPEM: st.TLSCAPEM})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := c.CA(ctx)
	if err != nil || !strings.Contains(ca.MeshRootPEM, "CERTIFICATE") {
		t.Fatalf("CA over HTTPS: %v", err)
	}

	// The owner registers a sim workload through the admin API (mutual TLS on the same
	// listener), then a "guest" runs the protocol with evidence from the sim key file.
	acfg, err := admin.ReadClientConfig(filepath.Join(state, "admin", "sealctl-kbs.json"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(acfg.CertFile, acfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(st.TLSCAPEM)
	ac, err := admin.NewClient("https://"+addr.String(), &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	meas := sha512.Sum384([]byte("guest"))
	digest := sha256.Sum256([]byte("envelope"))
	dataKey := make([]byte, 32)
	rand.Read(dataKey)
	if _, err := ac.PutWorkload(ctx, registry.Workload{ID: "demo", TEEs: []string{"sim"},
		Measurements: map[string][]string{"sim": {hex.EncodeToString(meas[:])}}, EnvelopeDigest: hex.EncodeToString(digest[:]),
		SANs: []string{"demo.default.svc"}, DataKey: dataKey}); err != nil {
		t.Fatalf("admin put workload: %v", err)
	}
	signer, err := amdsp.LoadSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := c.Auth(ctx, "sim", "demo")
	if err != nil {
		t.Fatal(err)
	}
	rep, table, err := signer.Report(amdsp.ReportOptions{ReportData: api.ReportData(sess.Nonce, sess.PublicKey()), Measurement: meas, HostData: digest})
	if err != nil {
		t.Fatal(err)
	}
	ev := &api.Evidence{SNP: &api.SNPEvidence{Report: rep, CertTable: table}}
	if err := sess.Attest(ctx, ev); err != nil {
		t.Fatalf("attest: %v", err)
	}
	got, err := sess.Key(ctx)
	if err != nil || !bytes.Equal(got, dataKey) {
		t.Fatalf("key: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve after shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not shut down")
	}
}
