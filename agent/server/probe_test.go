package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/internal/brokertest"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Sealed probes: the host execs only spec.ProbeStub(container, kind); the agent runs the
// sealed probe (an argv in the container, or an HTTP request with sealed headers to
// 127.0.0.1) and answers 0/1 with no output. The sealed argv itself is not exec-able.
func TestSealedProbeStub(t *testing.T) {
	const token = "Bearer probe-token-5e1f"
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/live" || r.Header.Get("Authorization") != token {
			http.Error(w, "no", http.StatusUnauthorized)
		}
	}))
	defer web.Close()
	u, _ := url.Parse(web.URL)
	port, _ := strconv.Atoi(u.Port())
	httpProbe := func(kind, path, header string) spec.Probe {
		return spec.Probe{Kind: kind, HTTPGet: &spec.HTTPGetAction{Path: path, Port: int32(port), Headers: []spec.HTTPHeader{{Name: "Authorization", Value: header}}}}
	}
	sp := sealedSpec(spec.LogsAllow)
	sp.Containers[2].Probes = []spec.Probe{ // sleeper
		{Kind: spec.ProbeLiveness, Exec: []string{"sh", "-c", "echo sealed-output; exit 0"}},
		{Kind: spec.ProbeReadiness, Exec: []string{"sh", "-c", "exit 3"}},
		{Kind: spec.ProbeStartup, Exec: []string{"sleep", "10"}, TimeoutSeconds: 1},
	}
	sp.Containers[1].Probes = []spec.Probe{ // cat
		httpProbe(spec.ProbeLiveness, "/live", token),
		httpProbe(spec.ProbeReadiness, "/live", "Bearer wrong"),
		{Kind: spec.ProbeStartup, HTTPGet: &spec.HTTPGetAction{Path: "/live", Port: 1, Headers: []spec.HTTPHeader{{Name: "Authorization", Value: token}}}},
	}
	b := brokertest.Start(t)
	sealed := b.Seal(t, sp, []string{"web.default.svc"})
	h := start(t, b, launchFor(b, sealed.Envelope))
	ctx := context.Background()
	a := h.agent
	if _, err := a.Unseal(ctx, &api.UnsealRequest{Envelope: sealed.Envelope, HostValues: map[string]string{"fieldRef:metadata.name": "w"}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sleeper", "cat"} {
		if _, err := a.CreateContainer(ctx, &api.CreateContainerRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.StartContainer(ctx, &api.ContainerRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for _, tc := range []struct {
		name, container string
		argv            []string
		want            int32
		wantErr         codes.Code
		maxTime         time.Duration
	}{
		{name: "exec probe passes", container: "sleeper", argv: spec.ProbeStub("sleeper", spec.ProbeLiveness), want: 0},
		{name: "exec probe fails", container: "sleeper", argv: spec.ProbeStub("sleeper", spec.ProbeReadiness), want: 1},
		{name: "exec probe times out", container: "sleeper", argv: spec.ProbeStub("sleeper", spec.ProbeStartup), want: 1, maxTime: 5 * time.Second},
		{name: "http probe with the sealed header", container: "cat", argv: spec.ProbeStub("cat", spec.ProbeLiveness), want: 0},
		{name: "http probe refused by the app", container: "cat", argv: spec.ProbeStub("cat", spec.ProbeReadiness), want: 1},
		{name: "http probe to a closed port", container: "cat", argv: spec.ProbeStub("cat", spec.ProbeStartup), want: 1},
		{name: "sealed argv is not exec-able", container: "sleeper", argv: []string{"sh", "-c", "echo sealed-output; exit 0"}, wantErr: codes.PermissionDenied},
		{name: "stub of another container", container: "sleeper", argv: spec.ProbeStub("cat", spec.ProbeLiveness), wantErr: codes.PermissionDenied},
		{name: "stub of a probe the container lacks", container: "app", argv: spec.ProbeStub("app", spec.ProbeLiveness), wantErr: codes.NotFound},
		{name: "stub with an extra argument", container: "sleeper", argv: append(spec.ProbeStub("sleeper", spec.ProbeLiveness), "x"), wantErr: codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n++
			id := "probe-" + strconv.Itoa(n)
			t0 := time.Now()
			if !runStub(ctx, t, a, tc.container, id, tc.argv, tc.wantErr, tc.want) {
				return
			}
			if tc.maxTime > 0 && time.Since(t0) > tc.maxTime {
				t.Errorf("took %v, the probe's timeout is 1s", time.Since(t0))
			}
		})
	}
}

// runStub execs argv in container as the kubelet execs a probe or hook stub and checks the
// answer: the refusal wantErr, or the exit status want with no output at all reaching the
// host. It reports whether the stub ran (false after an expected refusal).
func runStub(ctx context.Context, t *testing.T, a api.AgentService, container, id string, argv []string, wantErr codes.Code, want int32) bool {
	t.Helper()
	_, err := a.ExecProcess(ctx, &api.ExecProcessRequest{Name: container, ExecId: id, Argv: argv})
	if wantErr != 0 {
		wantCode(t, err, wantErr, "")
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	out, _ := readAll(t, a, container, id, false)
	errOut, _ := readAll(t, a, container, id, true)
	w, err := a.WaitProcess(ctx, &api.ProcessRequest{Name: container, ExecId: id})
	if err != nil || w.ExitStatus != want {
		t.Fatalf("wait: %v %v, want exit %d", w, err, want)
	}
	if out+errOut != "" {
		t.Errorf("the stub's output reaches the host: %q %q", out, errOut)
	}
	return true
}
