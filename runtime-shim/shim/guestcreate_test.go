package shim

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/agent/api"
)

// guestContainers is an agent whose containers outlive the caller's context, as in the guest:
// a create finishes even when the shim has stopped waiting for it.
type guestContainers struct {
	api.AgentService
	mu      sync.Mutex
	names   map[string]bool
	delay   time.Duration
	removed []string
}

func (a *guestContainers) CreateContainer(ctx context.Context, r *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	a.mu.Lock()
	if a.names[r.Name] {
		a.mu.Unlock()
		return nil, status.Errorf(codes.AlreadyExists, "container %s: already created", r.Name)
	}
	a.names[r.Name] = true
	d := a.delay
	a.mu.Unlock()
	select {
	case <-time.After(d):
		return &api.CreateContainerResponse{}, nil
	case <-ctx.Done(): // the caller gave up; the container exists all the same
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func (a *guestContainers) RemoveContainer(_ context.Context, r *api.ContainerRequest) (*api.Empty, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.names[r.Name] {
		return nil, status.Errorf(codes.NotFound, "container %s", r.Name)
	}
	delete(a.names, r.Name)
	a.removed = append(a.removed, r.Name)
	return &api.Empty{}, nil
}

// TestCreateInGuestAbandoned: a create the kubelet abandoned leaves nothing that makes its retry
// fail, and a live task's container is never removed to make room.
func TestCreateInGuestAbandoned(t *testing.T) {
	for _, tc := range []struct {
		name        string
		existing    bool // the guest already has container "app"
		liveTask    bool // a task of the shim is "app"
		cancelFirst bool // the first create's context ends while the guest creates
		wantErr     codes.Code
		wantRemoved int
	}{
		{name: "leftover of an abandoned create is removed, the retry succeeds", existing: true, wantRemoved: 1},
		{name: "a live task's container stays", existing: true, liveTask: true, wantErr: codes.AlreadyExists},
		{name: "a create whose context ended is undone", cancelFirst: true, wantErr: codes.DeadlineExceeded, wantRemoved: 1},
		{name: "plain create", wantRemoved: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &guestContainers{names: map[string]bool{"app": tc.existing}}
			s := &Service{log: slog.New(slog.NewTextHandler(io.Discard, nil)), tasks: map[string]*task{}}
			if tc.liveTask {
				s.tasks["c1"] = &task{id: "c1", name: "app"}
			}
			ctx := context.Background()
			if tc.cancelFirst {
				a.delay = time.Minute
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
				defer cancel()
			}
			_, err := s.createInGuest(ctx, a, &api.CreateContainerRequest{Name: "app"})
			if got := status.Code(err); got != tc.wantErr {
				t.Fatalf("err %v (code %v), want code %v", err, got, tc.wantErr)
			}
			if len(a.removed) != tc.wantRemoved {
				t.Errorf("removed %v, want %d removal(s)", a.removed, tc.wantRemoved)
			}
			if tc.cancelFirst {
				// The kubelet's next attempt finds a clean guest.
				a.delay = 0
				if _, err := s.createInGuest(context.Background(), a, &api.CreateContainerRequest{Name: "app"}); err != nil {
					t.Fatalf("retry: %v", err)
				}
			}
			if tc.liveTask && !a.names["app"] {
				t.Error("the live task's container was removed")
			}
		})
	}
}
