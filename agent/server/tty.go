package server

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/agent/api"
)

// Resizer is a process with a terminal (agent/containers: a container or exec started with
// a tty); processes without one (probe and hook runs) do not implement it.
type Resizer interface {
	Resize(cols, rows uint16) error
}

// ResizeProcess sets the terminal size of a process with a tty. The size is the host's
// (kubectl's window): checked to be 1..api.MaxTermSize in each dimension, and nothing else
// depends on it.
func (s *Server) ResizeProcess(_ context.Context, req *api.ResizeProcessRequest) (*api.Empty, error) {
	rows, cols := req.GetRows(), req.GetCols()
	if rows < 1 || rows > api.MaxTermSize || cols < 1 || cols > api.MaxTermSize {
		return nil, invalid("resize: %dx%d (rows x cols): want 1..%d each", rows, cols, api.MaxTermSize)
	}
	c, p, err := s.startedProcess(req.GetName(), req.GetExecId(), "resize")
	if err != nil {
		return nil, err
	}
	r, ok := p.p.(Resizer)
	if !ok {
		return nil, status.Errorf(codes.FailedPrecondition, "resize %s exec %q: no terminal", c.name, req.GetExecId())
	}
	if err := r.Resize(uint16(cols), uint16(rows)); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "resize %s exec %q: %v", c.name, req.GetExecId(), err)
	}
	return &api.Empty{}, nil
}
