package server

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/internal/brokertest"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/simtee/spserver"
)

type harness struct {
	agent   api.AgentService
	srv     *Server
	backend *fakeBackend
	tlsDir  string
	launch  *spserver.Launch
}

func socketpair(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "guest"), os.NewFile(uintptr(fds[1]), "host")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// oneConnListener hands out one connection, then blocks until closed.
type oneConnListener struct {
	c    chan net.Conn
	done chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *oneConnListener) Close() error {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return nil
}
func (l *oneConnListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe", Net: "unix"} }

// start runs a real agent server with the real sim attester talking to a real spserver.Serve
// over a socketpair, and a ttrpc client over net.Pipe.
func start(t *testing.T, b *brokertest.Broker, launch spserver.Launch) *harness {
	t.Helper()
	guestSP, hostSP := socketpair(t)
	h := &harness{backend: &fakeBackend{}, tlsDir: filepath.Join(t.TempDir(), "tls"), launch: &launch}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go spserver.Serve(ctx, hostSP, b.Signer, spserver.LaunchFunc(func() spserver.Launch { return *h.launch }), nil)
	srv, err := New(Config{Attester: unseal.NewSimAttester(guestSP), Backend: h.backend, TLSDir: h.tlsDir, Version: "test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	hostEnd, guestEnd := net.Pipe()
	ln := &oneConnListener{c: make(chan net.Conn, 1), done: make(chan struct{})}
	ln.c <- guestEnd
	go srv.Serve(ctx, ln)
	c := ttrpc.NewClient(hostEnd)
	t.Cleanup(func() { c.Close(); ln.Close() })
	h.agent = api.NewAgentClient(c)
	return h
}

func wantCode(t *testing.T, err error, code codes.Code, inMsg string) {
	t.Helper()
	st, _ := status.FromError(err)
	if err == nil || st.Code() != code || !strings.Contains(st.Message(), inMsg) {
		t.Fatalf("error %v, want %s containing %q", err, code, inMsg)
	}
}

func sealedSpec(logs string) *spec.Spec {
	return &spec.Spec{
		Version: spec.Version, Workload: "web", Pod: "default/web",
		Containers: []spec.Container{
			{Name: "app", Image: "r.example/app@sha256:" + strings.Repeat("a", 64), Command: []string{"sh", "-c"}, Args: []string{"echo hello from app; echo oops >&2; exit 3"}, Env: []spec.EnvVar{{Name: "POD", FromHost: "fieldRef:metadata.name"}}},
			{Name: "cat", Image: "r.example/cat@sha256:" + strings.Repeat("b", 64), Command: []string{"cat"}, Stdin: true},
			{Name: "sleeper", Image: "r.example/s@sha256:" + strings.Repeat("c", 64), Command: []string{"sleep", "30"}},
		},
		Identity: spec.Identity{SANs: []string{"web.default.svc"}, TLSDir: spec.DefaultTLSDir},
		Policy:   spec.Policy{Logs: logs, Exec: []spec.ExecRule{{Container: "sleeper", Argv: []string{"sh", "-c", "echo probe ok"}}}},
	}
}

func launchFor(b *brokertest.Broker, env []byte) spserver.Launch {
	return spserver.Launch{Measurement: b.Measurement, HostData: envelope.Sum(env)}
}

func readAll(t *testing.T, a api.AgentService, name, exec string, stderr bool) (string, bool) {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Small reads (7 bytes) exercise the agent's partial-read path.
	denied, err := api.CopyStream(ctx, a, name, exec, stderr, 7, &out)
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), denied
}

func TestAgentLifecycle(t *testing.T) {
	b := brokertest.Start(t)
	sealed := b.Seal(t, sealedSpec(spec.LogsAllow), []string{"web.default.svc"})
	h := start(t, b, launchFor(b, sealed.Envelope))
	ctx := context.Background()
	a := h.agent

	p, err := a.Ping(ctx, &api.PingRequest{})
	if err != nil || p.State != api.StateSealed {
		t.Fatalf("Ping before Unseal: %v %v", p, err)
	}
	_, err = a.CreateContainer(ctx, &api.CreateContainerRequest{Name: "app"})
	wantCode(t, err, codes.FailedPrecondition, "sealed")

	// A tampered envelope first (the agent refuses: HOST_DATA), then the good one.
	bad := bytes.Clone(sealed.Envelope)
	i := bytes.Index(bad, []byte(`"body":"`)) + 20
	if bad[i] == 'A' {
		bad[i] = 'B'
	} else {
		bad[i] = 'A'
	}
	_, err = a.Unseal(ctx, &api.UnsealRequest{Envelope: bad})
	wantCode(t, err, codes.PermissionDenied, "HOST_DATA")
	_, err = a.Unseal(ctx, &api.UnsealRequest{})
	wantCode(t, err, codes.InvalidArgument, "envelope")

	// The host offers every downward-API value it knows; only referenced ones reach the pod.
	u, err := a.Unseal(ctx, &api.UnsealRequest{Envelope: sealed.Envelope, HostValues: map[string]string{"fieldRef:metadata.name": "web-0", "fieldRef:status.podIP": "10.0.0.9"}})
	if err != nil {
		t.Fatalf("Unseal: %v", err)
	}
	if u.Workload != "web" || strings.Join(u.Containers, ",") != "app,cat,sleeper" || u.Times.TotalUs <= 0 || u.Times.AttestUs <= 0 {
		t.Fatalf("Unseal answer %+v", u)
	}
	if hv := h.backend.lastOpt.HostValues; hv["fieldRef:metadata.name"] != "web-0" || len(hv) != 1 || h.backend.lastOpt.TLSDir != h.tlsDir {
		t.Fatalf("pod options %+v", h.backend.lastOpt)
	}
	for _, f := range []string{unseal.CertFile, unseal.KeyFile, unseal.CAFile} {
		if _, err := os.Stat(filepath.Join(h.tlsDir, f)); err != nil {
			t.Fatalf("identity file: %v", err)
		}
	}
	_, err = a.Unseal(ctx, &api.UnsealRequest{Envelope: sealed.Envelope})
	wantCode(t, err, codes.FailedPrecondition, "already unsealed")
	if p, _ := a.Ping(ctx, &api.PingRequest{}); p.State != api.StateUnsealed || p.Workload != "web" {
		t.Fatalf("Ping after Unseal: %v", p)
	}

	// Names the sealed spec does not have, malformed names, stdio escalation.
	_, err = a.CreateContainer(ctx, &api.CreateContainerRequest{Name: "evil"})
	wantCode(t, err, codes.NotFound, "not in the sealed spec")
	_, err = a.CreateContainer(ctx, &api.CreateContainerRequest{Name: "../app"})
	wantCode(t, err, codes.InvalidArgument, "DNS-1123")
	_, err = a.CreateContainer(ctx, &api.CreateContainerRequest{Name: "app", Tty: true})
	wantCode(t, err, codes.PermissionDenied, "sealed spec has tty=false")
	_, err = a.StartContainer(ctx, &api.ContainerRequest{Name: "app"})
	wantCode(t, err, codes.NotFound, "not created")

	// app: output and exit code.
	if _, err := a.CreateContainer(ctx, &api.CreateContainerRequest{Name: "app"}); err != nil {
		t.Fatal(err)
	}
	_, err = a.CreateContainer(ctx, &api.CreateContainerRequest{Name: "app"})
	wantCode(t, err, codes.AlreadyExists, "already created")
	if _, err := a.StartContainer(ctx, &api.ContainerRequest{Name: "app"}); err != nil {
		t.Fatal(err)
	}
	if out, denied := readAll(t, a, "app", "", false); out != "hello from app\n" || denied {
		t.Fatalf("stdout %q denied=%v", out, denied)
	}
	if out, _ := readAll(t, a, "app", "", true); out != "oops\n" {
		t.Fatalf("stderr %q", out)
	}
	w, err := a.WaitProcess(ctx, &api.ProcessRequest{Name: "app"})
	if err != nil || w.ExitStatus != 3 {
		t.Fatalf("WaitProcess: %v %v, want exit 3", w, err)
	}

	// cat: stdin round trip.
	if _, err := a.CreateContainer(ctx, &api.CreateContainerRequest{Name: "cat", Stdin: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.StartContainer(ctx, &api.ContainerRequest{Name: "cat"}); err != nil {
		t.Fatal(err)
	}
	if r, err := a.WriteStdin(ctx, &api.WriteStdinRequest{Name: "cat", Data: []byte("ping\n")}); err != nil || r.Len != 5 {
		t.Fatalf("WriteStdin: %v %v", r, err)
	}
	if _, err := a.CloseStdin(ctx, &api.ProcessRequest{Name: "cat"}); err != nil {
		t.Fatal(err)
	}
	if out, _ := readAll(t, a, "cat", "", false); out != "ping\n" {
		t.Fatalf("cat stdout %q", out)
	}
	_, err = a.WriteStdin(ctx, &api.WriteStdinRequest{Name: "app", Data: []byte("x")})
	wantCode(t, err, codes.FailedPrecondition, "no stdin")

	// sleeper: exec policy, signal, stats, remove.
	if _, err := a.CreateContainer(ctx, &api.CreateContainerRequest{Name: "sleeper"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.StartContainer(ctx, &api.ContainerRequest{Name: "sleeper"}); err != nil {
		t.Fatal(err)
	}
	_, err = a.ExecProcess(ctx, &api.ExecProcessRequest{Name: "sleeper", ExecId: "e1", Argv: []string{"sh", "-c", "cat /etc/passwd"}})
	wantCode(t, err, codes.PermissionDenied, "not allowed by the sealed policy")
	_, err = a.ExecProcess(ctx, &api.ExecProcessRequest{Name: "app", ExecId: "e1", Argv: []string{"sh", "-c", "echo probe ok"}})
	wantCode(t, err, codes.PermissionDenied, "not allowed")
	_, err = a.ExecProcess(ctx, &api.ExecProcessRequest{Name: "sleeper", ExecId: "bad id!", Argv: []string{"sh", "-c", "echo probe ok"}})
	wantCode(t, err, codes.InvalidArgument, "exec id")
	if _, err := a.ExecProcess(ctx, &api.ExecProcessRequest{Name: "sleeper", ExecId: "probe-1", Argv: []string{"sh", "-c", "echo probe ok"}}); err != nil {
		t.Fatal(err)
	}
	if out, _ := readAll(t, a, "sleeper", "probe-1", false); out != "probe ok\n" {
		t.Fatalf("exec stdout %q", out)
	}
	if w, err := a.WaitProcess(ctx, &api.ProcessRequest{Name: "sleeper", ExecId: "probe-1"}); err != nil || w.ExitStatus != 0 {
		t.Fatalf("exec wait: %v %v", w, err)
	}
	_, err = a.WaitProcess(ctx, &api.ProcessRequest{Name: "sleeper", ExecId: "nope"})
	wantCode(t, err, codes.NotFound, "unknown")
	if st, err := a.StatsContainer(ctx, &api.ContainerRequest{Name: "sleeper"}); err != nil || st.Pids != 1 {
		t.Fatalf("stats: %v %v", st, err)
	}
	_, err = a.SignalProcess(ctx, &api.SignalProcessRequest{Name: "sleeper", Signal: 99})
	wantCode(t, err, codes.InvalidArgument, "signal")
	if _, err := a.SignalProcess(ctx, &api.SignalProcessRequest{Name: "sleeper", Signal: uint32(syscall.SIGTERM)}); err != nil {
		t.Fatal(err)
	}
	if w, err := a.WaitProcess(ctx, &api.ProcessRequest{Name: "sleeper"}); err != nil || w.ExitStatus != 128+int32(syscall.SIGTERM) {
		t.Fatalf("wait after SIGTERM: %v %v", w, err)
	}
	if _, err := a.RemoveContainer(ctx, &api.ContainerRequest{Name: "sleeper"}); err != nil {
		t.Fatal(err)
	}
	_, err = a.StatsContainer(ctx, &api.ContainerRequest{Name: "sleeper"})
	wantCode(t, err, codes.NotFound, "not created")
	if _, err := a.Shutdown(ctx, &api.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	_, err = a.CreateContainer(ctx, &api.CreateContainerRequest{Name: "app"})
	wantCode(t, err, codes.FailedPrecondition, "shutting down")
}

func TestLogsDeny(t *testing.T) {
	b := brokertest.Start(t)
	sealed := b.Seal(t, sealedSpec(spec.LogsDeny), []string{"web.default.svc"})
	h := start(t, b, launchFor(b, sealed.Envelope))
	ctx := context.Background()
	a := h.agent
	if _, err := a.Unseal(ctx, &api.UnsealRequest{Envelope: sealed.Envelope, HostValues: map[string]string{"fieldRef:metadata.name": "w"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateContainer(ctx, &api.CreateContainerRequest{Name: "app"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.StartContainer(ctx, &api.ContainerRequest{Name: "app"}); err != nil {
		t.Fatal(err)
	}
	if w, err := a.WaitProcess(ctx, &api.ProcessRequest{Name: "app"}); err != nil || w.ExitStatus != 3 {
		t.Fatalf("wait: %v %v", w, err)
	}
	for _, stderr := range []bool{false, true} {
		if out, denied := readAll(t, a, "app", "", stderr); out != "" || !denied {
			t.Fatalf("logs: deny: output %q denied=%v", out, denied)
		}
	}
}

func TestHostDataChanged(t *testing.T) {
	b := brokertest.Start(t)
	sealed := b.Seal(t, sealedSpec(spec.LogsAllow), []string{"web.default.svc"})
	l := launchFor(b, sealed.Envelope)
	l.HostData[5] ^= 1
	h := start(t, b, l)
	_, err := h.agent.Unseal(context.Background(), &api.UnsealRequest{Envelope: sealed.Envelope})
	wantCode(t, err, codes.PermissionDenied, "HOST_DATA")
	// The host launched with other values: also when it keeps them consistent with a
	// changed measurement, the broker refuses and the reason reaches the host.
	*h.launch = launchFor(b, sealed.Envelope)
	h.launch.Measurement[0] ^= 1
	_, err = h.agent.Unseal(context.Background(), &api.UnsealRequest{Envelope: sealed.Envelope})
	wantCode(t, err, codes.PermissionDenied, "measurement")
}

// The host cannot skip or reorder init containers: app containers start only after every
// init container exited 0, each init container only after the earlier ones, and a
// completed init container still counts after the host removed it.
func TestInitContainerOrder(t *testing.T) {
	b := brokertest.Start(t)
	sp := sealedSpec(spec.LogsAllow)
	sp.InitContainers = []spec.Container{
		{Name: "first", Image: "r.example/i@sha256:" + strings.Repeat("d", 64), Command: []string{"sh", "-c", "exit 0"}},
		{Name: "second", Image: "r.example/i@sha256:" + strings.Repeat("e", 64), Command: []string{"sh", "-c", "exit 4"}},
	}
	sealed := b.Seal(t, sp, []string{"web.default.svc"})
	h := start(t, b, launchFor(b, sealed.Envelope))
	ctx := context.Background()
	a := h.agent
	if _, err := a.Unseal(ctx, &api.UnsealRequest{Envelope: sealed.Envelope, HostValues: map[string]string{"fieldRef:metadata.name": "web-0"}}); err != nil {
		t.Fatal(err)
	}
	create := func(name string) {
		t.Helper()
		if _, err := a.CreateContainer(ctx, &api.CreateContainerRequest{Name: name}); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	run := func(name string) int32 {
		t.Helper()
		if _, err := a.StartContainer(ctx, &api.ContainerRequest{Name: name}); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		w, err := a.WaitProcess(ctx, &api.ProcessRequest{Name: name})
		if err != nil {
			t.Fatalf("wait %s: %v", name, err)
		}
		return w.ExitStatus
	}
	// Skipping all init containers.
	create("app")
	_, err := a.StartContainer(ctx, &api.ContainerRequest{Name: "app"})
	wantCode(t, err, codes.FailedPrecondition, "init container first has not completed successfully")
	// Reordering: second before first.
	create("second")
	_, err = a.StartContainer(ctx, &api.ContainerRequest{Name: "second"})
	wantCode(t, err, codes.FailedPrecondition, "init container first has not completed successfully")
	// In order: first completes, and still counts after its removal.
	create("first")
	if code := run("first"); code != 0 {
		t.Fatalf("first exited %d", code)
	}
	if _, err := a.RemoveContainer(ctx, &api.ContainerRequest{Name: "first"}); err != nil {
		t.Fatal(err)
	}
	if code := run("second"); code != 4 {
		t.Fatalf("second exited %d", code)
	}
	// A failed init container blocks the app containers.
	_, err = a.StartContainer(ctx, &api.ContainerRequest{Name: "app"})
	wantCode(t, err, codes.FailedPrecondition, "init container second has not completed successfully")
}
