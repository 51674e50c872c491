package server

import (
	"context"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/agent/api"
)

// The exec table of a container holds its live execs: running, or exited and not yet
// released. Exec probes run every few seconds for the life of the pod, so an entry is
// released as soon as the host has nothing more to get from it, and the table is capped.
const (
	// DefaultMaxExecs bounds the live execs of one container (Config.MaxExecs).
	DefaultMaxExecs = 128
	// DefaultExecGrace is how long an exited exec stays when the host neither waited for it
	// nor read its output to the end (Config.ExecGrace).
	DefaultExecGrace = 30 * time.Second
	// removeWaitLimit bounds how long RemoveContainer waits for the exit of a process the
	// backend has already reaped.
	removeWaitLimit = 10 * time.Second
)

// ExecProcess runs an allowed argv in a running container.
func (s *Server) ExecProcess(ctx context.Context, req *api.ExecProcessRequest) (*api.Empty, error) {
	argv := req.GetArgv()
	if len(argv) == 0 || len(argv) > api.MaxArgv {
		return nil, invalid("exec: argv: %d elements (want 1..%d)", len(argv), api.MaxArgv)
	}
	for i, a := range argv {
		if len(a) > api.MaxArgLen || strings.ContainsRune(a, 0) {
			return nil, invalid("exec: argv[%d]: too long or contains NUL", i)
		}
	}
	id := req.GetExecId()
	if !api.ValidExecID(id) {
		return nil, invalid("exec id %.80q: malformed", id)
	}
	s.mu.Lock()
	c, err := s.lookup(req.GetName())
	if err == nil {
		err = s.authorizeExec(c, argv)
	}
	if err == nil {
		err = s.reserveExec(c, id)
	}
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	denied := s.logsDenied()
	s.mu.Unlock()
	p, err := s.startExec(ctx, c, id, slices.Clone(argv), req.GetTty(), req.GetStdin()) // probe.go
	if err != nil {
		s.mu.Lock()
		if pr, ok := c.execs[id]; ok && pr == nil {
			delete(c.execs, id)
		}
		s.mu.Unlock()
		return nil, status.Errorf(codes.Internal, "exec in container %s: %v", c.name, err)
	}
	// Until pr is in the table, its callbacks find no entry and do nothing; the host's
	// WaitProcess, which comes later, releases it then.
	release := func(pr *proc) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.releaseExec(c, pr)
	}
	pr := newProc(p, denied, id, release)
	pr.onExit = func() { s.exited(c, pr) }
	s.mu.Lock()
	c.execs[id] = pr
	s.mu.Unlock()
	pr.watch()
	return &api.Empty{}, nil
}

// authorizeExec is the one place that decides whether the host may run argv in c (caller
// holds s.mu): only an argv the sealed policy lists for that container, and only while the
// container runs.
func (s *Server) authorizeExec(c *ctr, argv []string) error {
	if !s.res.Spec.Policy.AllowsExec(c.name, argv) && sealedStub(s.res.Spec, c.name, argv) == nil { // probe and hook stubs: probe.go
		s.log.Warn("exec refused by the sealed policy", "container", c.name)
		return status.Errorf(codes.PermissionDenied, "exec in container %s: argv not allowed by the sealed policy", c.name)
	}
	if !c.started {
		return status.Errorf(codes.FailedPrecondition, "exec in container %s: not started", c.name)
	}
	return nil
}

// reserveExec takes a slot in c's exec table for id (caller holds s.mu); the slot holds nil
// until the process runs, so concurrent requests cannot pass the cap together.
func (s *Server) reserveExec(c *ctr, id string) error {
	if _, dup := c.execs[id]; dup {
		return status.Errorf(codes.AlreadyExists, "exec %s in container %s: id in use", id, c.name)
	}
	if len(c.execs) >= s.cfg.MaxExecs {
		s.log.Warn("exec refused: too many live execs", "container", c.name, "limit", s.cfg.MaxExecs)
		return status.Errorf(codes.ResourceExhausted, "exec in container %s: %d live execs, the limit (wait for earlier execs, or end them)", c.name, s.cfg.MaxExecs)
	}
	c.execs[id] = nil
	return nil
}

// exited starts the grace period of an exec that has just exited: at its end the entry is
// released even if the host never waited for it or never read its output.
func (s *Server) exited(c *ctr, p *proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.execs[p.id] != p {
		return // already released, or the container was removed
	}
	p.grace = time.AfterFunc(s.cfg.ExecGrace, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.dropExec(c, p)
	})
	s.releaseExec(c, p)
}

// releaseExec frees p's entry once the host has waited for it and both outputs have ended
// and were read (or, with logs: deny, discarded) to the end (caller holds s.mu). It runs on
// each of these events; the last one frees the entry.
func (s *Server) releaseExec(c *ctr, p *proc) {
	if c.execs[p.id] == p && p.waited && p.stdout.drained() && p.stderr.drained() {
		s.dropExec(c, p)
	}
}

// dropExec removes p from c's exec table (caller holds s.mu).
func (s *Server) dropExec(c *ctr, p *proc) {
	if p.grace != nil {
		p.grace.Stop()
	}
	if c.execs[p.id] == p {
		delete(c.execs, p.id)
	}
}

// dropExecs empties c's exec table when c is removed (caller holds s.mu).
func (s *Server) dropExecs(c *ctr) {
	for _, p := range c.execs {
		if p != nil {
			s.dropExec(c, p)
		}
	}
}
