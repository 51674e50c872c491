package backend_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/boot"
	"github.com/sealpod/sealpod/agent/containers"
	"github.com/sealpod/sealpod/agent/internal/backend"
	"github.com/sealpod/sealpod/agent/internal/brokertest"
	"github.com/sealpod/sealpod/agent/internal/imagetest"
	"github.com/sealpod/sealpod/agent/server"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/internal/syncbuf"
	"github.com/sealpod/sealpod/internal/testdeps"
	"github.com/sealpod/sealpod/simtee/spserver"
)

func TestMain(m *testing.M) {
	containers.MaybeInit() // the test binary is the containers' init and the pod's pause
	os.Exit(m.Run())
}

// canary is put into every sealed field; it must never reach the console or the host.
const canary = "zq7canary"

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// TestConsoleCanary drives a full unseal and pulls that succeed (through a failing mirror),
// fail at an unreachable mirror and registry, fail the digest check and fail authentication,
// plus a command that does not exist, with a canary in every sealed field, and checks that
// neither the console (the production log handler at debug level) nor any answer or error
// the host receives carries the canary, while the host still learns each failure's kind.
func TestConsoleCanary(t *testing.T) {
	if os.Geteuid() != 0 {
		testdeps.Missing(t, "needs root (libcontainer creates namespaces, cgroups and mounts)")
	}
	if _, err := os.Stat(imagetest.BusyboxPath); err != nil {
		testdeps.Missing(t, "needs %s (Debian package busybox-static)", imagetest.BusyboxPath)
	}
	console := &syncbuf.Buffer{}
	log := boot.NewConsoleLogger(console, true) // production handler, sealpod.debug=1

	img := imagetest.BusyboxImage(t)
	good := imagetest.NewRegistry(t) // sealed credentials open it
	okRef := good.Push(t, canary+"/ok", img)
	badRef := good.Push(t, canary+"/bad", img)
	cmdRef := good.Push(t, canary+"/cmd", img)
	good.RequireAuth(canary+"-user", canary+"-pass")
	badDigest := badRef[strings.Index(badRef, "@")+1:]
	good.Rewrite(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/"+canary+"/bad/manifests/"+badDigest) {
			w.Header().Set("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
			fmt.Fprintf(w, `{"schemaVersion":2,"note":"tampered"}`)
			return true
		}
		return false
	})
	locked := imagetest.NewRegistry(t) // the sealed credentials are wrong for it
	authRef := locked.Push(t, canary+"/auth", img)
	locked.RequireAuth("someone", "else")
	dead := closedAddr(t)
	deadRef := dead + "/" + canary + "/dead@" + badDigest
	deadMirror := closedAddr(t)

	sans := []string{canary + ".web.default.svc"}
	script := "echo " + canary + "-arg; cat /sealed/" + canary + "-file; echo $SECRET"
	sp := &spec.Spec{
		Version: spec.Version, Workload: "web", Pod: "default/" + canary + "-pod",
		Containers: []spec.Container{
			{Name: "ok", Image: okRef, Command: []string{"sh", "-c"}, Args: []string{script},
				Env:    []spec.EnvVar{{Name: "SECRET", Value: canary + "-env"}, {Name: "POD", FromHost: "fieldRef:metadata.name"}},
				Mounts: []spec.Mount{{Volume: "sealed", Path: "/sealed", ReadOnly: true}}},
			{Name: "bad", Image: badRef, Command: []string{canary + "-cmd"}},
			{Name: "auth", Image: authRef, Command: []string{canary + "-cmd"}},
			{Name: "dead", Image: deadRef, Command: []string{canary + "-cmd"}},
			{Name: "nocmd", Image: cmdRef, Command: []string{"/" + canary + "-missing"}, Args: []string{canary + "-arg"}},
		},
		Volumes: []spec.Volume{{Name: "sealed", Kind: spec.VolumeSealed}},
		Files:   []spec.File{{Volume: "sealed", Path: canary + "-file", Mode: 0o444, Data: []byte(canary + "-data\n")}},
		Registries: []spec.RegistryCredential{
			{Registry: good.Host, Username: canary + "-user", Password: canary + "-pass"},
			{Registry: locked.Host, Username: canary + "-user2", Password: canary + "-wrong"},
		},
		Mirrors: []spec.RegistryMirror{
			{Registry: good.Host, Endpoint: canary + "-mirror.invalid:5000"}, // no such host: falls back
			{Registry: dead, Endpoint: deadMirror},                           // unreachable
		},
		Identity: spec.Identity{SANs: sans, TLSDir: spec.DefaultTLSDir},
		Policy:   spec.Policy{Logs: spec.LogsAllow, Exec: []spec.ExecRule{{Container: "ok", Argv: []string{canary + "-probe"}}}},
	}
	be := &backend.Containers{Options: containers.Options{
		StateDir:           filepath.Join(t.TempDir(), "state"),
		InsecureRegistries: []string{good.Host, locked.Host, dead, deadMirror},
		CgroupParent:       "sealpod-canary-test",
		Logger:             log,
	}}
	srv, sealed := startAgent(t, sp, be, log)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	prev := slog.Default()
	slog.SetDefault(log)
	t.Cleanup(func() { slog.SetDefault(prev) })

	// host collects everything the host receives: answers and error texts.
	var host strings.Builder
	seen := func(step string) func(any, error) error {
		return func(resp any, err error) error {
			fmt.Fprintf(&host, "%s: %v\n", step, resp)
			if err != nil {
				fmt.Fprintf(&host, "%s: error %s\n", step, status.Convert(err).Message())
			}
			return err
		}
	}
	if err := seen("unseal")(srv.Unseal(ctx, &api.UnsealRequest{Envelope: sealed.Envelope, HostValues: map[string]string{"fieldRef:metadata.name": "web-0"}})); err != nil {
		t.Fatalf("unseal: %v", err)
	}
	defer srv.Shutdown(context.Background(), &api.ShutdownRequest{})

	// ok: the mirror fails (no such host), the registry with the sealed credentials serves the image.
	if err := seen("create ok")(srv.CreateContainer(ctx, &api.CreateContainerRequest{Name: "ok"})); err != nil {
		t.Fatalf("create ok: %v", err)
	}
	if err := seen("start ok")(srv.StartContainer(ctx, &api.ContainerRequest{Name: "ok"})); err != nil {
		t.Fatalf("start ok: %v", err)
	}
	var stdout []byte
	for {
		r, err := srv.ReadStdout(ctx, &api.ReadStreamRequest{Name: "ok"})
		if err != nil {
			t.Fatalf("ok: read stdout: %v", err)
		}
		stdout = append(stdout, r.GetData()...)
		if r.GetEof() {
			break
		}
	}
	// The container's own output is the workload's (logs: allow), not the console.
	if want := canary + "-arg\n" + canary + "-data\n" + canary + "-env\n"; string(stdout) != want {
		t.Fatalf("ok: stdout %q, want %q: the sealed workload did not run as sealed", stdout, want)
	}
	if w, err := srv.WaitProcess(ctx, &api.ProcessRequest{Name: "ok"}); err != nil || w.GetExitStatus() != 0 {
		t.Fatalf("ok: exit %v, %v", w, err)
	}

	// Failures: each reaches the host as its kind, never its details.
	failures := map[string]string{
		"bad":   "digest mismatch",
		"auth":  "unauthorized",
		"dead":  "unreachable",
		"nocmd": "",
	}
	for name, kind := range failures {
		_, err := srv.CreateContainer(ctx, &api.CreateContainerRequest{Name: name})
		seen("create "+name)(nil, err)
		if err == nil {
			err = seen("start " + name)(srv.StartContainer(ctx, &api.ContainerRequest{Name: name}))
		}
		if err == nil {
			t.Errorf("%s: created and started, want a failure", name)
			continue
		}
		msg := status.Convert(err).Message()
		if !strings.Contains(msg, name) || !strings.Contains(msg, kind) {
			t.Errorf("%s: host sees %q, want the container name and the kind %q", name, msg, kind)
		}
	}

	logs := console.String()
	for where, text := range map[string]string{"console": logs, "host": host.String()} {
		for _, line := range strings.Split(text, "\n") {
			if strings.Contains(line, canary) {
				t.Errorf("sealed canary reached the %s: %s", where, line)
			}
		}
	}
	// The console still says what happened.
	for _, want := range []string{"unsealed", "container created", "mirror failed", "container=ok"} {
		if !strings.Contains(logs, want) {
			t.Errorf("console lacks %q:\n%s", want, logs)
		}
	}
	if t.Failed() {
		t.Logf("console:\n%s\nhost:\n%s", logs, host.String())
	}
}

// startAgent seals sp at an in-process broker and runs the agent server with the sim
// attester, backend be and log.
func startAgent(t *testing.T, sp *spec.Spec, be server.Backend, log *slog.Logger) (*server.Server, *brokertest.Sealed) {
	t.Helper()
	b := brokertest.Start(t)
	sealed := b.Seal(t, sp, sp.Identity.SANs)
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	guestSP, hostSP := os.NewFile(uintptr(fds[0]), "guest"), os.NewFile(uintptr(fds[1]), "host")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); guestSP.Close(); hostSP.Close() })
	launch := spserver.Launch{Measurement: b.Measurement, HostData: envelope.Sum(sealed.Envelope)}
	go spserver.Serve(ctx, hostSP, b.Signer, spserver.LaunchFunc(func() spserver.Launch { return launch }), nil)
	srv, err := server.New(server.Config{
		Attester: unseal.NewSimAttester(guestSP), Backend: be, TLSDir: filepath.Join(t.TempDir(), "tls"),
		Version: "test", Logger: log, Unseal: unseal.Options{Logger: log},
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv, sealed
}

// TestUnsealRefusalCanary: a sealed spec the guest refuses (here a mirror endpoint with a
// path) is refused with its kind; the parse error, which quotes the sealed value, stays in
// the guest.
func TestUnsealRefusalCanary(t *testing.T) {
	console := &syncbuf.Buffer{}
	log := boot.NewConsoleLogger(console, true)
	sp := &spec.Spec{
		Version: spec.Version, Workload: "web", Pod: "default/web",
		Containers: []spec.Container{{Name: "app", Image: "r.example/" + canary + "@sha256:" + strings.Repeat("a", 64)}},
		Mirrors:    []spec.RegistryMirror{{Registry: "r.example", Endpoint: "m.example/" + canary}},
		Identity:   spec.Identity{SANs: []string{"web.default.svc"}, TLSDir: spec.DefaultTLSDir},
		Policy:     spec.Policy{Logs: spec.LogsDeny},
	}
	srv, sealed := startAgent(t, sp, backendFunc(nil), log)
	_, err := srv.Unseal(context.Background(), &api.UnsealRequest{Envelope: sealed.Envelope})
	msg := status.Convert(err).Message()
	if err == nil || strings.Contains(msg, canary) || !strings.Contains(msg, "sealed spec invalid") {
		t.Errorf("unseal: host sees %v, want a refusal naming the kind without the sealed value", err)
	}
	if strings.Contains(console.String(), canary) {
		t.Errorf("console shows the sealed value:\n%s", console.String())
	}
}

// backendFunc is a backend that must not be reached.
type backendFunc func()

func (backendFunc) StartPod(context.Context, *spec.Spec, server.PodOptions) (server.Pod, error) {
	return nil, fmt.Errorf("not reached")
}
