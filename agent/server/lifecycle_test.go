package server

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/internal/brokertest"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// unsealedHarness seals sp, starts an agent over the fake backend, lets tune change its
// configuration (nil: defaults) and unseals it.
func unsealedHarness(t *testing.T, sp *spec.Spec, tune func(*Config)) *harness {
	t.Helper()
	b := brokertest.Start(t)
	sealed := b.Seal(t, sp, []string{"web.default.svc"})
	h := start(t, b, launchFor(b, sealed.Envelope))
	if tune != nil {
		tune(&h.srv.cfg) // before the first request reaches the server
	}
	if _, err := h.agent.Unseal(context.Background(), &api.UnsealRequest{Envelope: sealed.Envelope, HostValues: map[string]string{"fieldRef:metadata.name": "web-0"}}); err != nil {
		t.Fatal(err)
	}
	return h
}

// podOps drives containers by name the way the shim does and fails the test on any error.
type podOps struct {
	t *testing.T
	a api.AgentService
}

func (o podOps) create(name string) {
	o.t.Helper()
	if _, err := o.a.CreateContainer(context.Background(), &api.CreateContainerRequest{Name: name}); err != nil {
		o.t.Fatalf("create %s: %v", name, err)
	}
}

func (o podOps) start(name string) {
	o.t.Helper()
	if _, err := o.a.StartContainer(context.Background(), &api.ContainerRequest{Name: name}); err != nil {
		o.t.Fatalf("start %s: %v", name, err)
	}
}

// up creates and starts each container in turn.
func (o podOps) up(names ...string) {
	o.t.Helper()
	for _, name := range names {
		o.create(name)
		o.start(name)
	}
}

// run creates, starts and waits for name, and checks its exit status.
func (o podOps) run(name string, want int32) {
	o.t.Helper()
	o.up(name)
	o.wait(name, want)
}

func (o podOps) wait(name string, want int32) {
	o.t.Helper()
	w, err := o.a.WaitProcess(context.Background(), &api.ProcessRequest{Name: name})
	if err != nil || w.ExitStatus != want {
		o.t.Fatalf("wait %s: %v %v, want exit %d", name, w, err, want)
	}
}

func (o podOps) kill(name string) {
	o.t.Helper()
	if _, err := o.a.SignalProcess(context.Background(), &api.SignalProcessRequest{Name: name, Signal: uint32(syscall.SIGKILL)}); err != nil {
		o.t.Fatalf("kill %s: %v", name, err)
	}
	o.wait(name, 128+int32(syscall.SIGKILL))
}

func (o podOps) remove(name string) {
	o.t.Helper()
	if _, err := o.a.RemoveContainer(context.Background(), &api.ContainerRequest{Name: name}); err != nil {
		o.t.Fatalf("remove %s: %v", name, err)
	}
}

func orderSpec(inits ...spec.Container) *spec.Spec {
	sp := sealedSpec(spec.LogsAllow)
	sp.InitContainers = inits
	return sp
}

func initCtr(name, script string, restartAlways bool) spec.Container {
	return spec.Container{Name: name, Image: "r.example/" + name + "@sha256:" + strings.Repeat("d", 64), Command: []string{"sh", "-c", script}, RestartAlways: restartAlways}
}

// The sealed order holds for the whole pod life: once an init container completed, or once
// an app container started, the host cannot run a (non-restartable) init container again;
// failed init containers are retried before the app containers start, and restartable
// sidecars and app containers restart as under Kubernetes.
func TestInitOrderWholePodLife(t *testing.T) {
	first := initCtr("first", "exit 0", false)
	side := initCtr("side", "sleep 30", true)
	bad := initCtr("bad", "exit 4", false)
	for _, tc := range []struct {
		name  string
		sp    *spec.Spec
		setup func(o podOps)
		last  string     // the container created and started at the end
		code  codes.Code // OK: allowed
		msg   string     // in the refusal
	}{
		{name: "completed init container runs once", sp: orderSpec(first, side),
			setup: func(o podOps) { o.run("first", 0); o.remove("first") },
			last:  "first", code: codes.FailedPrecondition, msg: "init container first already completed"},
		{name: "no init container after the app containers started", sp: orderSpec(first, side),
			setup: func(o podOps) { o.run("first", 0); o.up("side", "sleeper"); o.remove("first") },
			last:  "first", code: codes.FailedPrecondition, msg: "app containers have started"},
		{name: "sidecar restarts after the app containers started", sp: orderSpec(first, side),
			setup: func(o podOps) { o.run("first", 0); o.up("side", "sleeper"); o.kill("side"); o.remove("side") },
			last:  "side", code: codes.OK},
		{name: "failed init container is retried", sp: orderSpec(bad),
			setup: func(o podOps) { o.run("bad", 4); o.remove("bad") },
			last:  "bad", code: codes.OK},
		{name: "app container restarts", sp: orderSpec(first),
			setup: func(o podOps) { o.run("first", 0); o.up("sleeper"); o.kill("sleeper"); o.remove("sleeper") },
			last:  "sleeper", code: codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := unsealedHarness(t, tc.sp, nil)
			o := podOps{t: t, a: h.agent}
			tc.setup(o)
			ctx := context.Background()
			_, err := h.agent.CreateContainer(ctx, &api.CreateContainerRequest{Name: tc.last})
			if err == nil {
				_, err = h.agent.StartContainer(ctx, &api.ContainerRequest{Name: tc.last})
			}
			if tc.code == codes.OK {
				if err != nil {
					t.Fatalf("run %s again: %v", tc.last, err)
				}
				return
			}
			wantCode(t, err, tc.code, tc.msg)
		})
	}
}

// execCount is the size of a container's exec table.
func (s *Server) execCount(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.ctrs[name]; c != nil {
		return len(c.execs)
	}
	return 0
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func execSpec(logs string) *spec.Spec {
	sp := sealedSpec(logs)
	sp.Policy.Exec = append(sp.Policy.Exec,
		spec.ExecRule{Container: "sleeper", Argv: []string{"true"}},
		spec.ExecRule{Container: "sleeper", Argv: []string{"sleep", "30"}})
	return sp
}

// execHarness unseals execSpec(logs) (tune as for unsealedHarness) and starts sleeper.
func execHarness(t *testing.T, logs string, tune func(*Config)) *harness {
	t.Helper()
	h := unsealedHarness(t, execSpec(logs), tune)
	podOps{t: t, a: h.agent}.up("sleeper")
	return h
}

// readExec reads the stdout and stderr of sleeper's exec id to EOF.
func readExec(t *testing.T, a api.AgentService, id string) {
	t.Helper()
	readAll(t, a, "sleeper", id, false)
	readAll(t, a, "sleeper", id, true)
}

// execOnce runs one exec as the shim does: ExecProcess, stdout and stderr to EOF, WaitProcess.
func execOnce(t *testing.T, a api.AgentService, id string, argv ...string) {
	t.Helper()
	ctx := context.Background()
	if _, err := a.ExecProcess(ctx, &api.ExecProcessRequest{Name: "sleeper", ExecId: id, Argv: argv}); err != nil {
		t.Fatalf("exec %s: %v", id, err)
	}
	readExec(t, a, id)
	if w, err := a.WaitProcess(ctx, &api.ProcessRequest{Name: "sleeper", ExecId: id}); err != nil || w.ExitStatus != 0 {
		t.Fatalf("wait exec %s: %v %v", id, w, err)
	}
}

// Exec probes run every few seconds for the life of the pod: an exec the host waited for
// and whose output it read (or, with logs: deny, that the agent discarded) leaves no trace,
// so 10,000 of them keep the exec table empty and the agent's memory flat.
func TestExecTableStaysFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 execs")
	}
	for _, tc := range []struct {
		logs    string
		n       int
		argv    []string
		maxLive int // table size seen right after an exec returned
	}{
		{logs: spec.LogsAllow, n: 10000, argv: []string{"true"}},
		// With logs: deny the agent drains the output itself, a little after the exit: a few
		// entries may be in flight (a leak would be hundreds).
		{logs: spec.LogsDeny, n: 1000, argv: []string{"sh", "-c", "echo probe ok"}, maxLive: 32},
	} {
		t.Run(tc.logs, func(t *testing.T) {
			h := execHarness(t, tc.logs, nil)
			warm := tc.n / 20
			var base uint64
			maxTable := 0
			for i := range tc.n {
				execOnce(t, h.agent, fmt.Sprintf("probe-%d", i), tc.argv...)
				maxTable = max(maxTable, h.srv.execCount("sleeper"))
				if i == warm {
					base = heapInUse()
				}
			}
			deadline := time.Now().Add(5 * time.Second)
			for h.srv.execCount("sleeper") != 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if got := h.srv.execCount("sleeper"); got != 0 || maxTable > tc.maxLive {
				t.Errorf("exec table after %d waited execs: %d entries (max %d during the run), want 0 (max %d)", tc.n, got, maxTable, tc.maxLive)
			}
			// A leaked entry holds a proc, two streams and the backend process (a few
			// KiB): thousands of them would be MiBs.
			grown := int64(heapInUse()) - int64(base)
			t.Logf("%d execs: table max %d, heap %+d KiB after the first %d", tc.n, maxTable, grown>>10, warm)
			if limit := int64(tc.n) * 400; grown > limit {
				t.Errorf("heap grew by %d KiB over %d execs (limit %d KiB)", grown>>10, tc.n-warm, limit>>10)
			}
		})
	}
}

// The host cannot fill the agent with execs it never waits for: a container has at most
// DefaultMaxExecs live execs, the next is refused with ResourceExhausted, and a slot frees
// once an exec exited and was waited for.
func TestExecCap(t *testing.T) {
	const limit = DefaultMaxExecs
	h := execHarness(t, spec.LogsAllow, nil)
	ctx := context.Background()
	for i := range limit {
		if _, err := h.agent.ExecProcess(ctx, &api.ExecProcessRequest{Name: "sleeper", ExecId: fmt.Sprintf("s-%d", i), Argv: []string{"sleep", "30"}}); err != nil {
			t.Fatalf("exec %d: %v", i, err)
		}
	}
	_, err := h.agent.ExecProcess(ctx, &api.ExecProcessRequest{Name: "sleeper", ExecId: "one-more", Argv: []string{"true"}})
	wantCode(t, err, codes.ResourceExhausted, fmt.Sprintf("container sleeper: %d live execs", limit))
	if _, err := h.agent.SignalProcess(ctx, &api.SignalProcessRequest{Name: "sleeper", ExecId: "s-0", Signal: uint32(syscall.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	readExec(t, h.agent, "s-0")
	if _, err := h.agent.WaitProcess(ctx, &api.ProcessRequest{Name: "sleeper", ExecId: "s-0"}); err != nil {
		t.Fatal(err)
	}
	execOnce(t, h.agent, "one-more", "true")
	if got := h.srv.execCount("sleeper"); got != limit-1 {
		t.Errorf("exec table: %d entries, want %d", got, limit-1)
	}
}

// An exec the host never waits for, or whose output it never reads, is released after
// Config.ExecGrace; a running exec is never released.
func TestExecGrace(t *testing.T) {
	const grace = 300 * time.Millisecond
	h := execHarness(t, spec.LogsAllow, func(c *Config) { c.ExecGrace = grace })
	ctx := context.Background()
	for _, id := range []string{"never-waited", "never-read", "running"} {
		argv := []string{"sh", "-c", "echo probe ok"}
		if id == "running" {
			argv = []string{"sleep", "30"}
		}
		if _, err := h.agent.ExecProcess(ctx, &api.ExecProcessRequest{Name: "sleeper", ExecId: id, Argv: argv}); err != nil {
			t.Fatal(err)
		}
	}
	readExec(t, h.agent, "never-waited")
	if _, err := h.agent.WaitProcess(ctx, &api.ProcessRequest{Name: "sleeper", ExecId: "never-read"}); err != nil {
		t.Fatal(err)
	}
	if got := h.srv.execCount("sleeper"); got != 3 {
		t.Fatalf("exec table right after the execs: %d entries, want 3", got)
	}
	deadline := time.Now().Add(grace + 10*time.Second)
	for h.srv.execCount("sleeper") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("exec table %s after the grace period: %d entries, want 1 (the running exec)", grace, h.srv.execCount("sleeper"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, err := h.agent.WaitProcess(ctx, &api.ProcessRequest{Name: "sleeper", ExecId: "never-waited"})
	wantCode(t, err, codes.NotFound, "unknown")
	if _, err := h.agent.SignalProcess(ctx, &api.SignalProcessRequest{Name: "sleeper", ExecId: "running", Signal: uint32(syscall.SIGTERM)}); err != nil {
		t.Errorf("the running exec was released: %v", err)
	}
}
