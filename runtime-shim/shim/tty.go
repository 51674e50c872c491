package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	apitask "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/fifo"

	"github.com/sealpod/sealpod/agent/api"
)

// Interactive use (kubectl exec -it, attach, run -it): containerd hands the shim a stdin FIFO
// per process (at Create for a container with stdin: true, at Exec for an exec with stdin);
// the shim forwards what arrives there to the guest process (WriteStdin) and, at the FIFO's
// end, closes the guest stdin — CRI closes its end after a stdinOnce attach and at the end of
// an exec's input, as it does with runc. The terminal size goes to the agent
// (ResizeProcess), which owns the pty.

const (
	// stdinChunk bounds one WriteStdin (below api.MaxStdinWrite).
	stdinChunk = 32 << 10
	// closeIOWait bounds how long CloseIO waits for the forwarder to reach the FIFO's end
	// before it stops forwarding and closes the guest stdin itself.
	closeIOWait = 5 * time.Second
)

// stdinCopy forwards one process's stdin FIFO.
type stdinCopy struct {
	fifo io.ReadCloser
	done chan struct{} // closed once forwarding has ended
}

// startStdinLocked starts forwarding p's stdin FIFO to the guest once p runs (caller holds
// s.mu). Nothing happens for a process without stdin.
func (s *Service) startStdinLocked(t *task, p *proc, a api.AgentService) {
	if p.stdin == "" || p.stdinCopy != nil {
		return
	}
	f, err := fifo.OpenFifo(context.Background(), p.stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		s.log.Warn("open stdin fifo", "container", t.name, "exec", p.execID, "err", err)
		return
	}
	c := &stdinCopy{fifo: f, done: make(chan struct{})}
	p.stdinCopy = c
	go func() {
		defer close(c.done)
		defer f.Close()
		if err := forwardStdin(f, a, t.name, p.execID); !errors.Is(err, io.EOF) {
			s.log.Info("stdin forwarding ended", "container", t.name, "exec", p.execID, "err", err)
			return
		}
		if _, err := a.CloseStdin(context.Background(), &api.ProcessRequest{Name: t.name, ExecId: p.execID}); err != nil {
			s.log.Info("close stdin in the guest", "container", t.name, "exec", p.execID, "err", err)
		}
	}()
}

// forwardStdin copies r to the guest process until r ends (io.EOF) or fails; it never
// returns nil.
func forwardStdin(r io.Reader, a api.AgentService, name, execID string) error {
	buf := make([]byte, stdinChunk)
	for {
		n, err := r.Read(buf)
		for off := 0; off < n; {
			w, werr := a.WriteStdin(context.Background(), &api.WriteStdinRequest{Name: name, ExecId: execID, Data: buf[off:n]})
			if werr != nil {
				return fmt.Errorf("write stdin of %s exec %q in the guest: %w", name, execID, werr)
			}
			if w.Len == 0 {
				return fmt.Errorf("write stdin of %s exec %q in the guest: no progress", name, execID)
			}
			off += int(w.Len)
		}
		if err != nil {
			return err // io.EOF at the FIFO's end
		}
	}
}

// stop ends forwarding (the process exited, or CloseIO gave up waiting): closing the
// FIFO ends the blocked read.
func (c *stdinCopy) stop() {
	if c != nil {
		c.fifo.Close()
	}
}

// CloseIO closes the stdin of a process in the guest: once the forwarder has passed on
// everything up to the FIFO's end (CRI closes its end first), or at once if nothing is
// forwarded.
func (s *Service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	t, p, err := s.taskProc(r.ID, r.ExecID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if t.sandbox || s.vm == nil || s.vm.gone || !r.Stdin {
		s.mu.Unlock()
		return &ptypes.Empty{}, nil
	}
	a, c := s.vm.agent, p.stdinCopy
	s.mu.Unlock()
	if c != nil {
		select {
		case <-c.done:
			return &ptypes.Empty{}, nil // the forwarder reached EOF and closed the guest stdin
		case <-time.After(closeIOWait):
			c.stop() // a write still blocked in the guest ends with the stdin closed below
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if _, err := a.CloseStdin(ctx, &api.ProcessRequest{Name: t.name, ExecId: r.ExecID}); err != nil {
		return nil, grpcErr(fmt.Errorf("close stdin of %s exec %q: %w", t.name, r.ExecID, err))
	}
	return &ptypes.Empty{}, nil
}

// ResizePty sets the terminal size of a process with a tty. A size that arrives before the
// process runs (CRI resizes right after Start) is kept and applied once it does.
func (s *Service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	if r.Width < 1 || r.Width > api.MaxTermSize || r.Height < 1 || r.Height > api.MaxTermSize {
		return nil, grpcErr(fmt.Errorf("resize pty of %s exec %q to %dx%d: %w: want 1..%d columns and rows", r.ID, r.ExecID, r.Width, r.Height, errdefs.ErrInvalidArgument, api.MaxTermSize))
	}
	s.mu.Lock()
	t, p, err := s.taskProc(r.ID, r.ExecID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if !p.terminal {
		s.mu.Unlock()
		return nil, grpcErr(fmt.Errorf("resize pty of %s exec %q: %w: no terminal", t.name, r.ExecID, errdefs.ErrFailedPrecondition))
	}
	if p.status == apitask.Status_CREATED {
		p.size = &termSize{cols: r.Width, rows: r.Height}
		s.mu.Unlock()
		return &ptypes.Empty{}, nil
	}
	if p.status != apitask.Status_RUNNING || s.vm == nil || s.vm.gone {
		s.mu.Unlock()
		return nil, grpcErr(fmt.Errorf("resize pty of %s exec %q: %w: not running", t.name, r.ExecID, errdefs.ErrFailedPrecondition))
	}
	a := s.vm.agent
	s.mu.Unlock()
	if _, err := a.ResizeProcess(ctx, &api.ResizeProcessRequest{Name: t.name, ExecId: r.ExecID, Rows: r.Height, Cols: r.Width}); err != nil {
		return nil, grpcErr(fmt.Errorf("resize pty of %s exec %q in the guest: %w", t.name, r.ExecID, err))
	}
	return &ptypes.Empty{}, nil
}

// termSize is a terminal size waiting for its process to start.
type termSize struct{ cols, rows uint32 }

// startIOLocked begins a started process's interactive I/O (caller holds s.mu): stdin
// forwarding and the terminal size asked for before the start.
func (s *Service) startIOLocked(t *task, p *proc, a api.AgentService) {
	s.startStdinLocked(t, p, a)
	if sz := p.size; sz != nil {
		p.size = nil
		go func() {
			if _, err := a.ResizeProcess(context.Background(), &api.ResizeProcessRequest{Name: t.name, ExecId: p.execID, Rows: sz.rows, Cols: sz.cols}); err != nil {
				s.log.Info("resize pty in the guest", "container", t.name, "exec", p.execID, "err", err)
			}
		}()
	}
}
