package shim

import (
	"context"
	"os"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	apitask "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/containerd/runtime"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/runtime-shim/netns"
)

// watchVM ends every process when QEMU exits.
func (s *Service) watchVM(vm *podVM) {
	<-vm.qemu.Exited()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !vm.gone {
		s.log.Error("pod VM exited", "err", vm.qemu.ExitError())
	}
	vm.gone = true
	if s.vm != vm && s.vm != nil {
		return // the processes recorded now run in another VM
	}
	for _, t := range s.tasks {
		if t.sandbox {
			continue
		}
		for _, p := range append([]*proc{t.main}, mapValues(t.execs)...) {
			if p.status == apitask.Status_RUNNING {
				s.setExitedLocked(t, p, exitVMGone, time.Now())
			}
		}
	}
}

func mapValues(m map[string]*proc) []*proc {
	out := make([]*proc, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func (s *Service) setExitedLocked(t *task, p *proc, status uint32, at time.Time) {
	if p.status == apitask.Status_STOPPED {
		return
	}
	p.status, p.exitStatus, p.exitedAt = apitask.Status_STOPPED, status, at
	close(p.exited)
	s.publish(runtime.TaskExitEventTopic, &eventstypes.TaskExit{ContainerID: t.id, ID: pidID(t, p), Pid: s.pid(),
		ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)})
}

func pidID(t *task, p *proc) string {
	if p.execID != "" {
		return p.execID
	}
	return t.id
}

// vmBoot is a boot of the pod VM in progress: the Create that runs it holds no lock; other
// Creates wait on done; stopping the pod (detachVMLocked) abandons it through cancel.
type vmBoot struct {
	done    chan struct{} // closed once the boot ended and, if abandoned, its VM is stopped
	cancel  context.CancelFunc
	aborted string // why the boot was abandoned ("" = it was not)
}

// detachVMLocked takes the pod VM out of the service and abandons a boot in progress; the
// caller stops the returned VM (stopVM) once it has released s.mu.
func (s *Service) detachVMLocked(why string) *podVM {
	if b := s.booting; b != nil && b.aborted == "" {
		b.aborted = why
		b.cancel()
	}
	vm := s.vm
	if vm == nil {
		return nil
	}
	s.vm = nil
	vm.gone = true
	vm.stopped = make(chan struct{})
	s.stopping = vm.stopped
	return vm
}

// stopVM shuts the guest down (agent Shutdown, then SIGTERM/SIGKILL) and removes its state;
// it takes seconds, so the caller does not hold s.mu.
func (s *Service) stopVM(vm *podVM, why string) {
	if vm == nil {
		return
	}
	s.mu.Lock()
	vm.gone = true
	s.mu.Unlock()
	if vm.stopped != nil {
		defer func() {
			s.mu.Lock()
			if s.stopping == vm.stopped {
				s.stopping = nil
			}
			s.mu.Unlock()
			close(vm.stopped)
		}()
	}
	if !vmExited(vm.qemu) && vm.answered {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _ = vm.agent.Shutdown(ctx, &api.ShutdownRequest{})
		cancel()
	}
	if err := vm.qemu.Stop(5 * time.Second); err != nil {
		s.log.Error("stop pod VM", "err", err)
	}
	vm.spec.Cgroup.remove()
	if vm.client != nil {
		vm.client.Close()
	}
	vm.cancel()
	if vm.netns != "" {
		if err := netns.Teardown(netns.Options{NetNSPath: vm.netns, Logger: s.log}); err != nil {
			s.log.Warn("remove the pod's tap", "netns", vm.netns, "err", err)
		}
	}
	if err := os.RemoveAll(vm.spec.Dir); err != nil {
		s.log.Warn("remove VM state", "dir", vm.spec.Dir, "err", err)
	}
	s.log.Info("pod VM stopped", "reason", why)
}
