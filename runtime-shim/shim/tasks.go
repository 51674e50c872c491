package shim

import (
	"context"
	"fmt"
	"os"
	"time"

	cgroupsv1 "github.com/containerd/cgroups/stats/v1"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	apitask "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/protobuf"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/containerd/runtime"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
)

// releaseCodeDelay is how long after a pod's first container starts the shim pages QEMU's
// code out (qemu.VM.ReleaseCode). At once, the pod's first exec probe (kubelet: right after the
// start) read QEMU's pages back from the disk: Running → Ready p50 587 → 672 ms, slowest 1.6 s
// (kept bench cluster, 2026-12-06).
const releaseCodeDelay = 5 * time.Second

// Start starts the sandbox (a record), a sealed container or an exec. The guest call runs
// without s.mu; p.starting keeps a second Start of the same process out meanwhile.
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	s.mu.Lock()
	t, p, err := s.taskProc(r.ID, r.ExecID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if p.status != apitask.Status_CREATED || p.starting {
		s.mu.Unlock()
		return nil, grpcErr(fmt.Errorf("task %s exec %q: %w: status %s", r.ID, r.ExecID, errdefs.ErrFailedPrecondition, p.status))
	}
	if t.sandbox {
		defer s.mu.Unlock()
		p.status = apitask.Status_RUNNING
		s.publish(runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: t.id, Pid: s.pid()})
		return &taskAPI.StartResponse{Pid: s.pid()}, nil
	}
	if s.vm == nil || s.vm.gone {
		s.mu.Unlock()
		return nil, grpcErr(fmt.Errorf("container %s: %w: the pod VM is not running", t.name, errdefs.ErrFailedPrecondition))
	}
	a := s.vm.agent
	p.starting = true
	s.mu.Unlock()
	ts := time.Now()
	if r.ExecID == "" {
		_, err = a.StartContainer(ctx, &api.ContainerRequest{Name: t.name})
	} else {
		_, err = a.ExecProcess(ctx, &api.ExecProcessRequest{Name: t.name, ExecId: r.ExecID, Argv: p.argv, Tty: p.terminal, Stdin: p.stdin != ""})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p.starting = false
	if err != nil {
		return nil, grpcErr(fmt.Errorf("start %s exec %q in the guest: %w", t.name, r.ExecID, err))
	}
	s.log.Info("sealpod phase", "phase", "start", "container", t.name, "exec", r.ExecID, "ms", ms(time.Since(ts)))
	if p.status != apitask.Status_CREATED {
		// Killed (or its VM gone) while starting: the exit is recorded; stop what started.
		go func() {
			_, _ = a.SignalProcess(context.Background(), &api.SignalProcessRequest{Name: t.name, ExecId: r.ExecID, Signal: 9})
		}()
		return nil, grpcErr(fmt.Errorf("task %s exec %q: %w: status %s after start", r.ID, r.ExecID, errdefs.ErrFailedPrecondition, p.status))
	}
	p.status = apitask.Status_RUNNING
	if vm := s.vm; r.ExecID == "" && vm != nil && !vm.gone && !vm.codeReleased && vm.qemu != nil && vm.pollCtx != nil {
		// The pod runs: QEMU's set-up code will not run again (qemu.VM.ReleaseCode). Not at
		// once: the pod's first exec probes run now, and what they need would be read back from
		// the file. Best effort; nothing when the VM stops first.
		vm.codeReleased = true
		go func(q *qemu.VM, ctx context.Context) {
			select {
			case <-time.After(releaseCodeDelay):
			case <-ctx.Done():
				return
			}
			n, err := q.ReleaseCode()
			s.log.Debug("QEMU code paged out", "bytes", n, "err", err)
		}(vm.qemu, vm.pollCtx)
	}
	s.copyStreams(t, p, a)
	s.startIOLocked(t, p, a) // tty.go
	go s.waitProc(t, p, a)
	if r.ExecID == "" {
		s.publish(runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: t.id, Pid: s.pid()})
	} else {
		s.publish(runtime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{ContainerID: t.id, ExecID: r.ExecID, Pid: s.pid()})
	}
	return &taskAPI.StartResponse{Pid: s.pid()}, nil
}

func (s *Service) waitProc(t *task, p *proc, a api.AgentService) {
	w, err := a.WaitProcess(context.Background(), &api.ProcessRequest{Name: t.name, ExecId: p.execID})
	status, at := uint32(exitVMGone), time.Now()
	if err == nil {
		status = uint32(w.ExitStatus)
		if w.ExitedAtUnixNano > 0 {
			at = time.Unix(0, w.ExitedAtUnixNano)
		}
	} else {
		s.log.Warn("wait in the guest", "container", t.name, "exec", p.execID, "err", err)
	}
	// Let the output reach containerd's FIFOs before the exit is published.
	done := make(chan struct{})
	go func() { p.copying.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.log.Warn("stdio still copying after exit", "container", t.name)
	}
	s.mu.Lock()
	s.setExitedLocked(t, p, status, at)
	stdin := p.stdinCopy
	s.mu.Unlock()
	stdin.stop() // nobody is left to read it
}

// Wait blocks until the process exits.
func (s *Service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	s.mu.Lock()
	t, err := s.getTask(r.ID)
	var p *proc
	if err == nil {
		p, err = t.proc(r.ExecID)
	}
	s.mu.Unlock()
	if err != nil {
		return nil, grpcErr(err)
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &taskAPI.WaitResponse{ExitStatus: p.exitStatus, ExitedAt: protobuf.ToTimestamp(p.exitedAt)}, nil
}

// Kill signals a process in the guest (or ends the sandbox record); the guest call runs
// without s.mu.
func (s *Service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	t, p, err := s.taskProc(r.ID, r.ExecID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if p.status == apitask.Status_STOPPED {
		s.mu.Unlock()
		return nil, grpcErr(fmt.Errorf("task %s exec %q: process already finished: %w", r.ID, r.ExecID, errdefs.ErrNotFound))
	}
	if t.sandbox || p.status == apitask.Status_CREATED || s.vm == nil || s.vm.gone {
		s.setExitedLocked(t, p, 128+r.Signal, time.Now())
		s.mu.Unlock()
		return &ptypes.Empty{}, nil
	}
	a := s.vm.agent
	s.mu.Unlock()
	if _, err := a.SignalProcess(ctx, &api.SignalProcessRequest{Name: t.name, ExecId: r.ExecID, Signal: r.Signal}); err != nil {
		return nil, grpcErr(fmt.Errorf("signal %d to %s exec %q in the guest: %w", r.Signal, t.name, r.ExecID, err))
	}
	return &ptypes.Empty{}, nil
}

// Delete removes a process, a container (in the guest too) or the sandbox; the VM stops with
// the last of them.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	s.mu.Lock()
	resp, remove, vm, err := s.deleteLocked(r)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if remove != nil {
		remove(ctx)
	}
	s.stopVM(vm, "last task deleted")
	return resp, nil
}

// deleteLocked forgets a process or a task; it returns the guest call that removes the
// container and the VM to stop, both to run once s.mu is released (caller holds s.mu).
func (s *Service) deleteLocked(r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, func(context.Context), *podVM, error) {
	t, p, err := s.taskProc(r.ID, r.ExecID)
	if err != nil {
		return nil, nil, nil, err
	}
	if p.status == apitask.Status_RUNNING || p.starting {
		return nil, nil, nil, grpcErr(fmt.Errorf("task %s exec %q: %w: still running", r.ID, r.ExecID, errdefs.ErrFailedPrecondition))
	}
	if p.status == apitask.Status_CREATED {
		p.status, p.exitStatus, p.exitedAt = apitask.Status_STOPPED, 0, time.Now()
		close(p.exited)
	}
	resp := &taskAPI.DeleteResponse{Pid: s.pid(), ExitStatus: p.exitStatus, ExitedAt: protobuf.ToTimestamp(p.exitedAt)}
	if r.ExecID != "" {
		delete(t.execs, r.ExecID)
		return resp, nil, nil, nil
	}
	var remove func(context.Context)
	if !t.sandbox && s.vm != nil && !s.vm.gone {
		a := s.vm.agent
		remove = func(ctx context.Context) {
			if _, err := a.RemoveContainer(ctx, &api.ContainerRequest{Name: t.name}); err != nil {
				s.log.Warn("remove container in the guest", "container", t.name, "err", err)
			}
		}
	}
	delete(s.tasks, r.ID)
	if t.sandbox {
		s.sandboxID = ""
	}
	s.publish(runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{ContainerID: t.id, Pid: resp.Pid, ExitStatus: resp.ExitStatus, ExitedAt: resp.ExitedAt})
	var vm *podVM
	if len(s.tasks) == 0 {
		vm = s.detachVMLocked("last task deleted")
	}
	return resp, remove, vm, nil
}

// Exec records an exec; the agent decides at Start whether the sealed policy allows it.
func (s *Service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.getTask(r.ID)
	if err != nil {
		return nil, grpcErr(err)
	}
	if t.sandbox {
		return nil, grpcErr(fmt.Errorf("exec in sandbox %s: %w", r.ID, errdefs.ErrNotImplemented))
	}
	if _, ok := t.execs[r.ExecID]; ok || !api.ValidExecID(r.ExecID) {
		return nil, grpcErr(fmt.Errorf("exec %q in %s: %w: repeated or invalid id", r.ExecID, t.name, errdefs.ErrInvalidArgument))
	}
	v, err := typeurl.UnmarshalAny(r.Spec)
	if err != nil {
		return nil, grpcErr(fmt.Errorf("exec %s spec: %w", r.ExecID, err))
	}
	ps, ok := v.(*specs.Process)
	if !ok {
		return nil, grpcErr(fmt.Errorf("exec %s spec: %T is not a process: %w", r.ExecID, v, errdefs.ErrInvalidArgument))
	}
	p := newProc(r.ExecID, r.Stdin, r.Stdout, r.Stderr, r.Terminal)
	p.argv = ps.Args
	t.execs[r.ExecID] = p
	s.publish(runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: t.id, ExecID: r.ExecID})
	return &ptypes.Empty{}, nil
}

// State reports a process.
func (s *Service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, p, err := s.taskProc(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	return &taskAPI.StateResponse{ID: r.ID, Bundle: t.bundle, Pid: s.pid(), Status: p.status, Stdin: p.stdin, Stdout: p.stdout,
		Stderr: p.stderr, Terminal: p.terminal, ExitStatus: p.exitStatus, ExitedAt: protobuf.ToTimestamp(p.exitedAt), ExecID: r.ExecID}, nil
}

// Pids lists the one host-visible process of a task: QEMU (or the shim before the VM exists).
func (s *Service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.getTask(r.ID); err != nil {
		return nil, grpcErr(err)
	}
	return &taskAPI.PidsResponse{Processes: []*apitask.ProcessInfo{{Pid: s.pid()}}}, nil
}

// Connect reports the shim's and the task's pids.
func (s *Service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: s.pid()}, nil
}

// Shutdown ends the shim once no task is left.
func (s *Service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	n := len(s.tasks)
	s.mu.Unlock()
	if n > 0 && !r.Now {
		return &ptypes.Empty{}, nil
	}
	s.sd.Shutdown()
	return &ptypes.Empty{}, nil
}

// Stats maps the agent's container statistics (measured inside the guest) to cgroup v1
// metrics, the type containerd 1.6/1.7's CRI plugin decodes.
func (s *Service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	s.mu.Lock()
	t, err := s.getTask(r.ID)
	var a api.AgentService
	if s.vm != nil && !s.vm.gone {
		a = s.vm.agent
	}
	s.mu.Unlock()
	if err != nil {
		return nil, grpcErr(err)
	}
	m := &cgroupsv1.Metrics{}
	if !t.sandbox {
		if a == nil {
			return nil, grpcErr(fmt.Errorf("stats of %s: %w: the pod VM is not running", t.name, errdefs.ErrFailedPrecondition))
		}
		st, err := a.StatsContainer(ctx, &api.ContainerRequest{Name: t.name})
		if err != nil {
			return nil, grpcErr(fmt.Errorf("stats of %s in the guest: %w", t.name, err))
		}
		m.Pids = &cgroupsv1.PidsStat{Current: st.Pids}
		m.CPU = &cgroupsv1.CPUStat{Usage: &cgroupsv1.CPUUsage{Total: st.CpuUsageNs}}
		m.Memory = &cgroupsv1.MemoryStat{Usage: &cgroupsv1.MemoryEntry{Usage: st.MemoryUsageBytes, Limit: st.MemoryLimitBytes}}
	}
	data, err := typeurl.MarshalAny(m)
	if err != nil {
		return nil, grpcErr(fmt.Errorf("stats of %s: %w", r.ID, err))
	}
	return &taskAPI.StatsResponse{Stats: protobuf.FromAny(data)}, nil
}

// Pause is not supported for confidential VMs.
func (s *Service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	return nil, grpcErr(fmt.Errorf("pause %s: %w", r.ID, errdefs.ErrNotImplemented))
}

// Resume is not supported.
func (s *Service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	return nil, grpcErr(fmt.Errorf("resume %s: %w", r.ID, errdefs.ErrNotImplemented))
}

// Checkpoint is refused: guest memory is confidential.
func (s *Service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, grpcErr(fmt.Errorf("checkpoint %s: %w", r.ID, errdefs.ErrNotImplemented))
}

// Update is refused: resources are fixed by the VM size.
func (s *Service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	return nil, grpcErr(fmt.Errorf("update %s: %w", r.ID, errdefs.ErrNotImplemented))
}
