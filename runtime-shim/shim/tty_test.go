package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sealpod/sealpod/agent/api"
)

// ttyAgent is a guest whose processes run until the test ends them; it records what the
// shim forwards: stdin, its closing and terminal sizes, in order.
type ttyAgent struct {
	api.AgentService
	mu     sync.Mutex
	events []string
	exit   chan struct{}
}

func (a *ttyAgent) record(format string, args ...any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, fmt.Sprintf(format, args...))
}

func (a *ttyAgent) log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.events, " ")
}

func (a *ttyAgent) StartContainer(context.Context, *api.ContainerRequest) (*api.Empty, error) {
	return &api.Empty{}, nil
}
func (a *ttyAgent) ExecProcess(_ context.Context, r *api.ExecProcessRequest) (*api.Empty, error) {
	a.record("exec:%s:tty=%v:stdin=%v", strings.Join(r.Argv, ","), r.Tty, r.Stdin)
	return &api.Empty{}, nil
}
func (a *ttyAgent) WaitProcess(ctx context.Context, _ *api.ProcessRequest) (*api.WaitProcessResponse, error) {
	<-a.exit
	return &api.WaitProcessResponse{}, nil
}
func (a *ttyAgent) ReadStdout(context.Context, *api.ReadStreamRequest) (*api.ReadStreamResponse, error) {
	return &api.ReadStreamResponse{Eof: true}, nil
}
func (a *ttyAgent) ReadStderr(context.Context, *api.ReadStreamRequest) (*api.ReadStreamResponse, error) {
	return &api.ReadStreamResponse{Eof: true}, nil
}
func (a *ttyAgent) WriteStdin(_ context.Context, r *api.WriteStdinRequest) (*api.WriteStdinResponse, error) {
	a.record("stdin[%s]:%q", r.ExecId, r.Data)
	return &api.WriteStdinResponse{Len: uint32(len(r.Data))}, nil
}
func (a *ttyAgent) CloseStdin(_ context.Context, r *api.ProcessRequest) (*api.Empty, error) {
	a.record("close[%s]", r.ExecId)
	return &api.Empty{}, nil
}
func (a *ttyAgent) ResizeProcess(_ context.Context, r *api.ResizeProcessRequest) (*api.Empty, error) {
	a.record("resize[%s]:%dx%d", r.ExecId, r.Rows, r.Cols)
	return &api.Empty{}, nil
}

// fifos makes containerd's stdio FIFOs of one process (stdout drained by the test).
func fifos(t *testing.T, name string) (stdin, stdout string) {
	t.Helper()
	dir := t.TempDir()
	stdin, stdout = filepath.Join(dir, name+"-stdin"), filepath.Join(dir, name+"-stdout")
	for _, p := range []string{stdin, stdout} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		f, err := os.OpenFile(stdout, os.O_RDONLY, 0)
		if err == nil {
			_, _ = f.Read(make([]byte, 1))
			f.Close()
		}
	}()
	return stdin, stdout
}

// waitFor polls the agent's log until it contains want.
func waitFor(t *testing.T, a *ttyAgent, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(a.log(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("agent saw %q, want %q in it", a.log(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestInteractiveIO: what containerd's CRI plugin does for kubectl attach, run -it and exec
// -it reaches the guest process: stdin written to the FIFO (WriteStdin), the FIFO's end as
// the end of stdin (stdinOnce, the end of an exec's input), CloseIO, and terminal sizes,
// including one sent before the process started.
func TestInteractiveIO(t *testing.T) {
	s, _, _ := newTestService(t)
	ctx := context.Background()
	a := &ttyAgent{exit: make(chan struct{})}
	t.Cleanup(func() { close(a.exit) })
	s.vm = &podVM{agent: a}
	in, out := fifos(t, "main")
	s.tasks["c1"] = &task{id: "c1", name: "app", main: newProc("", in, out, "", true), execs: map[string]*proc{}}

	// A resize before the start is applied after it; the start opens the stdin FIFO.
	if _, err := s.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "c1", Width: 100, Height: 30}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, a, "resize[]:30x100")
	w, err := os.OpenFile(in, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString("hello\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, a, `stdin[]:"hello\n"`)
	if _, err := s.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "c1", Width: 132, Height: 43}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, a, "resize[]:43x132")
	// stdinOnce: CRI closes its end of the FIFO, then calls CloseIO; the guest stdin is
	// closed once, after the data.
	w.Close()
	if _, err := s.CloseIO(ctx, &taskAPI.CloseIORequest{ID: "c1", Stdin: true}); err != nil {
		t.Fatal(err)
	}
	if got := a.log(); !strings.HasSuffix(got, `stdin[]:"hello\n" resize[]:43x132 close[]`) || strings.Count(got, "close[]") != 1 {
		t.Errorf("agent saw %q", got)
	}

	// exec -it: argv, tty and stdin reach the agent; input then EOF.
	ein, eout := fifos(t, "exec")
	spec, err := typeurl.MarshalAny(&specs.Process{Args: []string{"/bin/sh"}, Terminal: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c1", ExecID: "e1", Terminal: true, Stdin: ein, Stdout: eout, Spec: protobuf.FromAny(spec)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c1", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	ew, err := os.OpenFile(ein, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ew.WriteString("exit\n"); err != nil {
		t.Fatal(err)
	}
	ew.Close()
	waitFor(t, a, `exec:/bin/sh:tty=true:stdin=true stdin[e1]:"exit\n" close[e1]`)

	// Refusals: sizes out of range, a process without a terminal, an unknown exec.
	s.tasks["c2"] = &task{id: "c2", name: "plain", main: newProc("", "", "", "", false), execs: map[string]*proc{}}
	for _, tc := range []struct {
		r    *taskAPI.ResizePtyRequest
		want error
	}{
		{&taskAPI.ResizePtyRequest{ID: "c1", Width: 0, Height: 30}, errdefs.ErrInvalidArgument},
		{&taskAPI.ResizePtyRequest{ID: "c1", Width: 80, Height: api.MaxTermSize + 1}, errdefs.ErrInvalidArgument},
		{&taskAPI.ResizePtyRequest{ID: "c2", Width: 80, Height: 24}, errdefs.ErrFailedPrecondition},
		{&taskAPI.ResizePtyRequest{ID: "c1", ExecID: "nope", Width: 80, Height: 24}, errdefs.ErrNotFound},
	} {
		if _, err := s.ResizePty(ctx, tc.r); !errorsIs(err, tc.want) {
			t.Errorf("ResizePty %+v: %v, want %v", tc.r, err, tc.want)
		}
	}
}

func errorsIs(err, want error) bool { return errors.Is(errdefs.FromGRPC(err), want) }
