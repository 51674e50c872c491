package guest_test

// The end-to-end stack of the agent suite: real binaries built from this tree (agent, key
// broker, mkguest, devregistry, the workload image), a real sealpod-kbs with sim roots, a
// devregistry, a guest bundle built by mkguest around the agent, and the host's half of each
// VM (the agent API client and the simulated AMD-SP) — the part the shim plays in production.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealpod/sealpod/tests/internal/proc"

	"github.com/sealpod/sealpod/internal/repopath"

	"github.com/containerd/ttrpc"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/kbs/admin"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/setup"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
	"github.com/sealpod/sealpod/simtee/amdsp"
	"github.com/sealpod/sealpod/simtee/spserver"
	"github.com/sealpod/sealpod/tests/qemuvm"
)

// slirpHost is how the guest reaches the host's loopback under QEMU user networking.
const slirpHost = "10.0.2.2"

type e2eStack struct {
	root, bin, work string
	regPort         int
	kbsPort         int
	kbsState        string
	caSHA256        string
	meshRoots       *x509.CertPool
	admin           *admin.Client
	signer          *amdsp.Signer
	imageRef        string // as the guest pulls it
	guestDir        string
	bundle          *bundle.Bundle
}

// newE2EStack builds everything and starts the registry and the key broker.
func newE2EStack(t *testing.T) *e2eStack {
	t.Helper()
	s := &e2eStack{root: repopath.Root(t), work: t.TempDir()}
	s.bin = filepath.Join(s.work, "bin")
	t0 := time.Now()
	s.buildHostTools(t, nil)
	proc.Run(t, s.root, []string{"CGO_ENABLED=1", "GOFLAGS=-buildvcs=false"}, "go", "build", "-trimpath", "-tags", "netgo,osusergo,seccomp",
		"-ldflags", "-s -w -extldflags -static", "-o", filepath.Join(s.bin, "sealpod-agent"), "./agent/cmd/sealpod-agent")
	t.Logf("built agent, sealpod-kbs, mkguest, devregistry, workload in %v", time.Since(t0).Round(time.Millisecond))
	s.startServices(t, "amd64", true)

	// The measured guest: mkguest around the agent. The command line (measured) lets this
	// test guest pull from the plain-HTTP devregistry.
	t0 = time.Now()
	s.guestDir = filepath.Join(s.work, "guest")
	cmdline := fmt.Sprintf("console=ttyS0 quiet panic=-1 sealpod.insecure_registries=%s:%d", slirpHost, s.regPort)
	proc.Run(t, s.root, nil, filepath.Join(s.bin, "mkguest"), "--init", filepath.Join(s.bin, "sealpod-agent"), "--out", s.guestDir, "--cmdline", cmdline)
	var err error
	if s.bundle, err = bundle.Load(s.guestDir); err != nil {
		t.Fatal(err)
	}
	t.Logf("guest bundle built in %v (initrd %d bytes, sim measurement %s)", time.Since(t0).Round(time.Millisecond), len(s.bundle.Initrd), s.bundle.Config.Measurements.Sim)
	return s
}

// buildHostTools builds sealpod-kbs, devregistry and mkguest for the host, and the workload
// binary with workloadEnv (e.g. GOARCH=ppc64le; static, no cgo).
func (s *e2eStack) buildHostTools(t *testing.T, workloadEnv []string) {
	t.Helper()
	noCgo := []string{"CGO_ENABLED=0", "GOFLAGS=-buildvcs=false"}
	proc.Run(t, s.root, noCgo, "go", "build", "-o", s.bin+"/", "./kbs/cmd/sealpod-kbs", "./hack/cmd/devregistry", "./guest-image/cmd/mkguest")
	proc.Run(t, s.root, append(noCgo, workloadEnv...), "go", "build", "-o", filepath.Join(s.bin, "workload"), "./tests/guest/internal/workload")
}

// startServices starts the registry with the workload image (of architecture arch) and the
// key broker, with sim roots when sim is set, and extra serve flags (e.g. --insecure-sim-pef).
func (s *e2eStack) startServices(t *testing.T, arch string, sim bool, kbsFlags ...string) {
	t.Helper()
	// Registry + the workload image.
	s.regPort = proc.FreePort(t)
	reg := fmt.Sprintf("127.0.0.1:%d", s.regPort)
	proc.Daemon(t, filepath.Join(s.work, "registry.log"), nil, filepath.Join(s.bin, "devregistry"), "serve", "--listen", reg)
	proc.WaitFor(t, "tcp "+reg, 30*time.Second, func() bool { return proc.CanDial("tcp", reg) })
	out := proc.Run(t, s.root, nil, filepath.Join(s.bin, "devregistry"), "push-binary", "--binary", filepath.Join(s.bin, "workload"),
		"--ref", reg+"/sealpod/workload:e2e", "--path", "/workload", "--arch", arch)
	pushed := strings.TrimSpace(out)
	if !strings.HasPrefix(pushed, reg+"/sealpod/workload@sha256:") {
		t.Fatalf("push-binary printed %q", pushed)
	}
	s.imageRef = strings.Replace(pushed, "127.0.0.1:", slirpHost+":", 1)

	// Key broker (with sim roots if sim); its certificate names 10.0.2.2 (the guest) and
	// 127.0.0.1.
	kbs := filepath.Join(s.bin, "sealpod-kbs")
	var err error
	if sim {
		roots, key := filepath.Join(s.work, "sim-roots.pem"), filepath.Join(s.work, "sim-vcek.pem")
		proc.Run(t, s.root, nil, kbs, "sim-roots", "--out", roots, "--key-out", key, "--rsa-bits", "2048")
		kbsFlags = append(kbsFlags, "--insecure-sim-roots", roots)
		if s.signer, err = amdsp.LoadSigner(key); err != nil {
			t.Fatal(err)
		}
	}
	s.kbsPort = proc.FreePort(t)
	s.kbsState = filepath.Join(s.work, "kbs")
	proc.Run(t, s.root, nil, kbs, "init", "--dir", s.kbsState, "--host", slirpHost, "--host", "127.0.0.1",
		"--url", fmt.Sprintf("https://%s:%d", slirpHost, s.kbsPort))
	proc.Daemon(t, filepath.Join(s.work, "kbs.log"), nil, kbs, append([]string{"serve", "--dir", s.kbsState, "--listen", fmt.Sprintf("127.0.0.1:%d", s.kbsPort),
		"--log-format", "text"}, kbsFlags...)...)
	kbsAddr := fmt.Sprintf("127.0.0.1:%d", s.kbsPort)
	proc.WaitFor(t, "tcp "+kbsAddr, 30*time.Second, func() bool { return proc.CanDial("tcp", kbsAddr) })
	caPEM, err := os.ReadFile(filepath.Join(s.kbsState, setup.TLSCACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if s.caSHA256, err = setup.CertPEMSHA256(caPEM); err != nil {
		t.Fatal(err)
	}
	meshPEM, err := os.ReadFile(filepath.Join(s.kbsState, setup.MeshRootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	s.meshRoots = x509.NewCertPool()
	if !s.meshRoots.AppendCertsFromPEM(meshPEM) {
		t.Fatal("no mesh root certificate")
	}
	cfg, err := admin.ReadClientConfig(filepath.Join(s.kbsState, setup.AdminClientConfig))
	if err != nil {
		t.Fatal(err)
	}
	adminCA, _ := os.ReadFile(cfg.CAFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(adminCA)
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	// The config names the guest-facing URL; the host reaches the same broker on loopback.
	if s.admin, err = admin.NewClient(fmt.Sprintf("https://127.0.0.1:%d", s.kbsPort),
		&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}); err != nil {
		t.Fatal(err)
	}
}

// seal seals sp for sim and registers it at the broker with the bundle's measurement.
func (s *e2eStack) seal(t *testing.T, sp *spec.Spec, sans []string) []byte {
	t.Helper()
	env, key := s.sealEnvelope(t, sp, "sim")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.admin.PutWorkload(ctx, registry.Workload{
		ID: sp.Workload, TEEs: []string{"sim"},
		Measurements:   map[string][]string{"sim": {s.bundle.Config.Measurements.Sim}},
		EnvelopeDigest: envelope.Sum(env).String(), SANs: sans, DataKey: key,
	}); err != nil {
		t.Fatalf("register workload %s: %v", sp.Workload, err)
	}
	return env
}

// sealEnvelope seals sp under a fresh data key for the one TEE teeName, naming the stack's
// broker as the guest reaches it; it returns the envelope and the data key.
func (s *e2eStack) sealEnvelope(t *testing.T, sp *spec.Spec, teeName string) (env, key []byte) {
	t.Helper()
	key, err := envelope.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	plain, err := sp.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	env, err = envelope.Seal(plain, key, envelope.Header{Workload: sp.Workload, TEEs: []string{teeName},
		KBS: envelope.KBS{URL: fmt.Sprintf("https://%s:%d", slirpHost, s.kbsPort), CASHA256: s.caSHA256}})
	if err != nil {
		t.Fatal(err)
	}
	return env, key
}

// guestVM is one booted guest with the host's half of its channels.
type guestVM struct {
	vm     *qemuvm.VM
	agent  api.AgentService
	client *ttrpc.Client
	sock   string
	mu     sync.Mutex
	launch spserver.Launch
	ready  time.Duration // QEMU start → first Ping answered
}

func (g *guestVM) setLaunch(l spserver.Launch) { g.mu.Lock(); g.launch = l; g.mu.Unlock() }
func (g *guestVM) getLaunch() spserver.Launch  { g.mu.Lock(); defer g.mu.Unlock(); return g.launch }

func e2eDialUnix(ctx context.Context, path string) (net.Conn, error) {
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial %s: %w (%v)", path, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// boot starts QEMU on the bundle (initrd may be replaced), serves the simulated AMD-SP with
// launch values from launch, and waits until the agent answers Ping.
func (s *e2eStack) boot(t *testing.T, initrd string, launch spserver.Launch) *guestVM {
	t.Helper()
	dir, cleanup, err := qemuvm.ShortTempDir()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	cfg := qemuvm.SimConfig(s.bundle, dir) // the shim's sim command line, on user networking
	if initrd != "" {
		cfg.Guest.Initrd = initrd
	}
	g := &guestVM{launch: launch}
	g.start(t, cfg, 30*time.Second, 120*time.Second, "agent", func(ctx context.Context, spConn net.Conn) {
		if err := spserver.Serve(ctx, spConn, s.signer, spserver.LaunchFunc(g.getLaunch), nil); err != nil {
			t.Logf("simulated AMD-SP: %v", err)
		}
	})
	return g
}

// start starts QEMU on cfg until the test ends, runs serveSP on the host's end of the sim-sp
// port, connects to the agent port and waits until the agent answers Ping in the sealed
// state. dial bounds the wait for the two sockets, ping the wait for the answer; who names
// the agent when it does not answer.
func (g *guestVM) start(t *testing.T, cfg qemu.Config, dial, ping time.Duration, who string, serveSP func(ctx context.Context, spConn net.Conn)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	g.vm = qemuvm.StartT(t, ctx, cfg)
	dctx, dcancel := context.WithTimeout(ctx, dial)
	defer dcancel()
	spConn, err := e2eDialUnix(dctx, cfg.SimSPSocket)
	if err != nil {
		t.Fatal(err)
	}
	go serveSP(ctx, spConn)
	conn, err := e2eDialUnix(dctx, cfg.AgentSocket)
	if err != nil {
		t.Fatal(err)
	}
	g.sock = cfg.AgentSocket
	g.connect(t, conn)
	pctx, pcancel := context.WithTimeout(ctx, ping)
	defer pcancel()
	p, err := g.agent.Ping(pctx, &api.PingRequest{})
	if err != nil {
		t.Fatalf("%s did not answer Ping: %v\nconsole:\n%s", who, err, g.vm.Console())
	}
	g.ready = time.Since(g.vm.Started())
	if p.State != api.StateSealed {
		t.Fatalf("fresh agent state %q, want %q", p.State, api.StateSealed)
	}
}

func (g *guestVM) connect(t *testing.T, conn net.Conn) {
	c := ttrpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	g.client, g.agent = c, api.NewAgentClient(c)
}

// reconnect drops the host's connection to the agent port and dials again (a shim restart).
func (g *guestVM) reconnect(t *testing.T) {
	t.Helper()
	g.client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := e2eDialUnix(ctx, g.sock)
	if err != nil {
		t.Fatal(err)
	}
	g.connect(t, conn)
}

// slirpNetwork is the guest network under QEMU user networking.
func slirpNetwork() *api.NetworkConfig {
	return &api.NetworkConfig{
		Interfaces: []*api.Interface{{Mac: qemu.UserNetMAC().String(), Name: "eth0", Addresses: []string{"10.0.2.15/24"}}},
		Routes:     []*api.Route{{Destination: "default", Gateway: slirpHost}},
		DnsServers: []string{"10.0.2.3"}, Hostname: "web-0",
	}
}

// readStream reads a stream until EOF; denied reports a `logs: deny` answer.
func readStream(t *testing.T, a api.AgentService, name, execID string, stderr bool) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var out bytes.Buffer
	denied, err := api.CopyStream(ctx, a, name, execID, stderr, 0, &out)
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), denied
}

var pemBlockRe = regexp.MustCompile(`(?s)-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----`)

// launchFor returns the launch values the shim would use: the bundle's sim measurement and
// the envelope digest.
func (s *e2eStack) launchFor(t *testing.T, b *bundle.Bundle, env []byte) spserver.Launch {
	t.Helper()
	l, err := spserver.LaunchFromBundle(b, env)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
