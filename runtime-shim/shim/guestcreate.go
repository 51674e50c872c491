package shim

import (
	"context"
	"errors"
	"time"

	"github.com/containerd/containerd/errdefs"

	"github.com/sealpod/sealpod/agent/api"
)

// createInGuest asks the agent to create the sealed container req.Name. A Create the kubelet
// gave up on (its CRI deadline passed while the guest was pulling or a volume was being
// formatted) may still finish in the guest: ttrpc does not carry the cancellation. The
// kubelet then creates the container again, and the guest answers AlreadyExists for a
// container no task of this shim stands for. Such a leftover is removed and the create
// retried once; a create whose context ended is undone in the guest for the same reason.
func (s *Service) createInGuest(ctx context.Context, a api.AgentService, req *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	cr, err := a.CreateContainer(ctx, req)
	if err != nil && errdefs.IsAlreadyExists(errdefs.FromGRPC(err)) && !s.hasTaskNamed(req.Name) {
		s.log.Warn("removing a container the guest kept from an abandoned create", "container", req.Name)
		if _, rerr := a.RemoveContainer(ctx, &api.ContainerRequest{Name: req.Name}); rerr != nil {
			return nil, errors.Join(err, rerr)
		}
		cr, err = a.CreateContainer(ctx, req)
	}
	if err != nil && ctx.Err() != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, rerr := a.RemoveContainer(rctx, &api.ContainerRequest{Name: req.Name}); rerr != nil && !errdefs.IsNotFound(errdefs.FromGRPC(rerr)) {
			s.log.Warn("undo an abandoned create in the guest", "container", req.Name, "err", rerr)
		}
	}
	return cr, err
}

// hasTaskNamed reports whether a task of this shim is the container name.
func (s *Service) hasTaskNamed(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tasks {
		if !t.sandbox && t.name == name {
			return true
		}
	}
	return false
}
