package shim

// Tests of issue 13 item 6: Create boots the pod VM and unseals outside the service lock, so
// containerd's State/Kill/Connect/... answer while a VM boots, and a pod deleted during its boot
// leaves no QEMU behind.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sealpod/sealpod/runtime-shim/config"
)

// answerWithin is how long a task API call may take while another Create boots the VM: the
// calls below only read or change the shim's records.
const answerWithin = 2 * time.Second

// bootingPod is a pod whose first container's Create is booting a VM: a stand-in QEMU that
// never serves the agent port, so the boot waits for Ping until bootTimeout.
type bootingPod struct {
	s       *Service
	out     string     // the stand-in QEMU's records
	creates chan error // one result per placeholder Create started
	pending int        // Creates whose result was not received yet
}

// created returns the result of the next placeholder Create to return, or fails the test if
// none returns within d.
func (p *bootingPod) created(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-p.creates:
		p.pending--
		return err
	case <-time.After(d):
		t.Fatalf("no Create returned within %v", d)
		return nil
	}
}

// startBootingPod creates and starts the sandbox sb1, then starts the Create of the
// placeholders ids (in this order, each in its own goroutine) and returns once the stand-in
// QEMU runs.
func startBootingPod(t *testing.T, bootTimeout time.Duration, ids ...string) *bootingPod {
	t.Helper()
	requireRoot(t)
	bin, out := fakeQEMU(t)
	s, _, _ := newTestService(t)
	s.cfg.QEMU, s.cfg.Network, s.cfg.SimKey = bin, config.NetworkUser, simKey(t)
	s.cfg.BootTimeout = config.Duration(bootTimeout)
	s.cfg.StateDir = shortStateDir(t)
	parent := fmt.Sprintf("/sealpod-test-%d", os.Getpid())
	t.Cleanup(func() { removeTestCgroup(parent) })
	ctx := context.Background()
	sb := sandboxBundle(t, "sb1", parent+"/sb1", map[string]string{AnnotationSandboxMemory: strconv.Itoa(gib)})
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "sb1", Bundle: sb}); err != nil {
		t.Fatalf("create sandbox: %v", err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "sb1"}); err != nil {
		t.Fatalf("start sandbox: %v", err)
	}
	p := &bootingPod{s: s, out: out, creates: make(chan error, len(ids)), pending: len(ids)}
	// Whatever the test's outcome, wait for the Creates (and so for the QEMU they own).
	t.Cleanup(func() {
		for ; p.pending > 0; p.pending-- {
			select {
			case <-p.creates:
			case <-time.After(bootTimeout + 30*time.Second):
				t.Error("a Create did not return after the boot timeout")
				return
			}
		}
	})
	for i, id := range ids {
		secure := secureRootfs(t, testWorkload, sealedEnvelope(t, "sim"))
		writeSpec(t, secure, specs.Spec{Version: "1.0.2", Annotations: map[string]string{AnnotationContainerType: "container",
			AnnotationSandboxID: "sb1", AnnotationContainerName: "app" + strconv.Itoa(i)}})
		go func() {
			_, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: id, Bundle: secure})
			p.creates <- err
		}()
		if i == 0 {
			p.waitQEMU(t)
		}
	}
	// Every Create has its id reserved: the first boots, the others wait for its boot.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s.mu.Lock()
		n := len(s.creating)
		s.mu.Unlock()
		if n == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d Creates under way", n, len(ids))
		}
	}
	return p
}

// waitQEMU waits until the stand-in QEMU has started and returns its pid.
func (p *bootingPod) waitQEMU(t *testing.T) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(p.out, "status")); err == nil {
			b, err := os.ReadFile(filepath.Join(p.out, "pid"))
			pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || perr != nil {
				t.Fatalf("stand-in QEMU pid: %v %v", err, perr)
			}
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatal("the stand-in QEMU did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTaskAPIAnswersWhileBooting: while a Create boots the pod VM (seconds to minutes under
// TCG), containerd's other calls on the pod answer at once; a second Create waits for the
// boot without blocking them.
func TestTaskAPIAnswersWhileBooting(t *testing.T) {
	p := startBootingPod(t, 60*time.Second, "c1", "c2")
	s, ctx := p.s, context.Background()
	calls := []struct {
		name string
		call func() error
		want func(error) bool // nil: no error
	}{
		{"State of the sandbox", func() error {
			st, err := s.State(ctx, &taskAPI.StateRequest{ID: "sb1"})
			if err == nil && st.Status.String() != "RUNNING" {
				return fmt.Errorf("sandbox status %s", st.Status)
			}
			return err
		}, nil},
		{"State of the booting container", func() error {
			_, err := s.State(ctx, &taskAPI.StateRequest{ID: "c1"})
			return err
		}, func(err error) bool { return errdefs.IsNotFound(errdefs.FromGRPC(err)) }},
		{"Connect", func() error {
			c, err := s.Connect(ctx, &taskAPI.ConnectRequest{ID: "sb1"})
			if err == nil && c.ShimPid != uint32(os.Getpid()) {
				return fmt.Errorf("shim pid %d", c.ShimPid)
			}
			return err
		}, nil},
		{"Pids of the sandbox", func() error {
			_, err := s.Pids(ctx, &taskAPI.PidsRequest{ID: "sb1"})
			return err
		}, nil},
		{"Stats of the sandbox", func() error {
			_, err := s.Stats(ctx, &taskAPI.StatsRequest{ID: "sb1"})
			return err
		}, nil},
		{"Create of the same id", func() error {
			_, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: t.TempDir()})
			return err
		}, func(err error) bool { return errdefs.IsAlreadyExists(errdefs.FromGRPC(err)) }},
		{"Kill of another container (the sandbox)", func() error {
			_, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "sb1", Signal: 9})
			return err
		}, nil},
	}
	for _, c := range calls {
		err := withTimeout(t, answerWithin, c.name+" while a Create boots the VM", c.call)
		if c.want == nil && err != nil || c.want != nil && !c.want(err) {
			t.Errorf("%s while booting: unexpected result %v", c.name, err)
		}
	}
	select {
	case err := <-p.creates:
		t.Fatalf("a Create returned while the VM boots: %v", err)
	default:
	}
	// End the boot (the sandbox was killed above): both Creates fail, well before the boot
	// timeout (stopping the VM may take seconds: QEMU's grace, cgroup v1 removal).
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "sb1"}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := p.created(t, 30*time.Second); !errdefs.IsFailedPrecondition(errdefs.FromGRPC(err)) || !strings.Contains(err.Error(), "boot") {
			t.Errorf("Create of a pod deleted during its boot: %v, want FailedPrecondition naming the boot", err)
		}
	}
}

// TestDeleteDuringBootLeavesNoQEMU: when containerd deletes the pod's last task while its VM
// boots, the boot is abandoned: the waiting Creates fail naming why, no task is recorded, and
// the QEMU process and the pod's state directory are gone.
func TestDeleteDuringBootLeavesNoQEMU(t *testing.T) {
	p := startBootingPod(t, 60*time.Second, "c1", "c2")
	s, ctx := p.s, context.Background()
	pid := p.waitQEMU(t)
	start := time.Now()
	if err := withTimeout(t, answerWithin, "Kill of the sandbox", func() error {
		_, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "sb1", Signal: 9})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := withTimeout(t, answerWithin, "Delete of the sandbox", func() error {
		_, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "sb1"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		// Well before the boot timeout (60 s).
		if err := p.created(t, 30*time.Second); err == nil || !strings.Contains(err.Error(), "boot") {
			t.Errorf("Create after the pod was deleted during the boot: %v, want a boot error", err)
		}
	}
	if d := time.Since(start); d > 40*time.Second {
		t.Errorf("boot abandoned after %v", d)
	}
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the stand-in QEMU (pid %d) still runs after the pod was deleted", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill -0 %d: %v, want ESRCH", pid, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tasks) != 0 || s.vm != nil {
		t.Errorf("after the abandoned boot: tasks %v, vm %v", s.tasks, s.vm)
	}
	if _, err := os.Stat(filepath.Join(s.cfg.StateDir, "sb1")); !os.IsNotExist(err) {
		t.Errorf("the pod's state directory is left: %v", err)
	}
}
