package server

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// The sealed order (docs/security.md, promise 2) for the whole life of the pod:
//   - an init container starts only after every earlier init container exited 0 (a
//     restartable sidecar only needs to have been started), an app container only after all
//     init containers;
//   - a non-restartable init container that exited 0 never runs again, and none runs (is
//     created or started) once an app container has started; one that failed is retried
//     before the app containers start, as the kubelet does;
//   - restartable sidecars (restartPolicy: Always init containers) and app containers may be
//     restarted at any time: the sealed spec does not carry the pod's restartPolicy, so the
//     kubelet's restart decisions are taken as they come.

// initContainer returns the sealed init container name, or nil for an app container.
func (s *Server) initContainer(name string) *spec.Container {
	for i := range s.res.Spec.InitContainers {
		if s.res.Spec.InitContainers[i].Name == name {
			return &s.res.Spec.InitContainers[i]
		}
	}
	return nil
}

// completed reports whether a container's main process exited 0 (caller holds s.mu).
func (s *Server) completed(c *ctr) bool {
	if c == nil || !c.started {
		return false
	}
	select {
	case <-c.main.done:
		return c.main.waitErr == nil && c.main.code == 0
	default:
		return false
	}
}

// checkRerun refuses to create or start a non-restartable init container that already
// completed, or any once an app container has started (caller holds s.mu).
func (s *Server) checkRerun(name string) error {
	ic := s.initContainer(name)
	if ic == nil || ic.RestartAlways {
		return nil
	}
	switch {
	case s.appStarted:
		return status.Errorf(codes.FailedPrecondition, "run init container %s: app containers have started (sealed order)", name)
	case s.initDone[name] || s.completed(s.ctrs[name]):
		return status.Errorf(codes.FailedPrecondition, "run init container %s: init container %s already completed; it runs once (sealed order)", name, name)
	}
	return nil
}

// checkOrder enforces the sealed order at start (caller holds s.mu): the host may start an
// init container only after every earlier init container completed successfully (or, for a
// restartable sidecar, was started), and never one that checkRerun refuses; an app
// container only after all init containers. So the host cannot skip, reorder,
// short-circuit or replay init containers.
func (s *Server) checkOrder(name string) error {
	if err := s.checkRerun(name); err != nil {
		return err
	}
	for _, ic := range s.res.Spec.InitContainers {
		if ic.Name == name {
			return nil
		}
		c := s.ctrs[ic.Name]
		if ic.RestartAlways {
			if c == nil || !c.started {
				return status.Errorf(codes.FailedPrecondition, "start %s: sidecar init container %s is not running yet (sealed order)", name, ic.Name)
			}
			continue
		}
		if !s.initDone[ic.Name] && !s.completed(c) {
			return status.Errorf(codes.FailedPrecondition, "start %s: init container %s has not completed successfully (sealed order)", name, ic.Name)
		}
	}
	return nil
}

// markStarted records a successful start (caller holds s.mu): the first app container ends the
// init phase for good.
func (s *Server) markStarted(c *ctr) {
	c.started = true
	if s.initContainer(c.name) == nil {
		s.appStarted = true
	}
}
