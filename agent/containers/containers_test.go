package containers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// podFixture is a started pod with the busybox image in a loopback registry.
type podFixture struct {
	m     *Manager
	reg   *testRegistry
	state string
	tls   string
}

func newPod(t *testing.T, containers ...spec.Container) *podFixture {
	t.Helper()
	return newPodHV(t, map[string]string{"fieldRef:metadata.name": "test-pod"}, containers...)
}

// newPodHV is newPod with the given host (downward-API) values.
func newPodHV(t *testing.T, hostValues map[string]string, containers ...spec.Container) *podFixture {
	t.Helper()
	requireRoot(t)
	return newPodWith(t, newTestRegistry(t), hostValues, containers...)
}

// newPodWith starts a pod whose containers all run reg's busybox image (a test may install
// reg's Rewrite hook first: the pod's images are pulled from StartPod on).
func newPodWith(t *testing.T, reg *testRegistry, hostValues map[string]string, containers ...spec.Container) *podFixture {
	t.Helper()
	for i := range containers {
		containers[i].Image = reg.ref
	}
	f := startSpec(t, &spec.Spec{Containers: containers}, hostValues, Options{InsecureRegistries: []string{reg.Host}})
	f.reg = reg
	return f
}

// startSpec starts a pod of s's containers (s's other fields are filled in: two more volumes, a
// sealed file, the TLS dir, logs allowed) with a fresh state dir and cgroup parent, and
// closes it when the test ends. opts gives the registries and any other option.
func startSpec(t testing.TB, s *spec.Spec, hostValues map[string]string, opts Options) *podFixture {
	t.Helper()
	requireRoot(t)
	state := t.TempDir()
	tls := t.TempDir()
	if err := os.WriteFile(filepath.Join(tls, "cert.pem"), []byte("CERT\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Version, s.Workload, s.Pod = spec.Version, "wl", "default/test-pod"
	s.Volumes = append([]spec.Volume{
		{Name: "scratch", Kind: spec.VolumeTmpfs, SizeLimit: 1 << 20},
		{Name: "config", Kind: spec.VolumeSealed},
	}, s.Volumes...) // and the test's own
	s.Files = []spec.File{
		{Volume: "config", Path: "app/config.txt", Mode: 0o640, Data: []byte("sealed-content\n")},
	}
	s.Identity = spec.Identity{TLSDir: "/tls"}
	s.Policy = spec.Policy{Logs: spec.LogsAllow}
	opts.StateDir = state
	opts.CgroupParent = fmt.Sprintf("sealpod-test-%d", time.Now().UnixNano())
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.StartPod(s, PodOptions{TLSSource: tls, HostValues: hostValues}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return &podFixture{m: m, state: state, tls: tls}
}

// output collects a reader until EOF.
type output struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
}

func collect(r io.Reader) *output {
	o := &output{done: make(chan struct{})}
	go func() {
		defer close(o.done)
		b := make([]byte, 4096)
		for {
			n, err := r.Read(b)
			o.mu.Lock()
			o.buf.Write(b[:n])
			o.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return o
}

func (o *output) wait(t *testing.T) string {
	t.Helper()
	select {
	case <-o.done:
	case <-time.After(30 * time.Second):
		t.Fatal("output did not reach EOF")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// run creates, starts and waits for one container; returns stdout, stderr and exit code.
func (f *podFixture) run(t *testing.T, name string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := f.m.Create(ctx, name)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	stdout, stderr := collect(c.Stdout()), collect(c.Stderr())
	if err := c.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	code, err := c.Wait(ctx)
	if err != nil {
		t.Fatalf("wait %s: %v", name, err)
	}
	return stdout.wait(t), stderr.wait(t), code
}

func TestRunEchoAndExitCodes(t *testing.T) {
	f := newPod(t,
		spec.Container{Name: "echo", Command: []string{"echo", "hello from the guest"}},
		spec.Container{Name: "exit3", Command: []string{"sh", "-c", "echo to-stderr >&2; exit 3"}},
		spec.Container{Name: "image-cmd", Args: []string{"-c", "echo args-to-image-entrypoint"}, Command: []string{"sh"}},
		spec.Container{Name: "missing", Command: []string{"/bin/does-not-exist"}},
	)
	tests := []struct {
		name       string
		wantOut    string
		wantErr    string
		wantCode   int
		wantCreate bool
	}{
		{name: "echo", wantOut: "hello from the guest\n", wantCode: 0},
		{name: "exit3", wantErr: "to-stderr\n", wantCode: 3},
		{name: "image-cmd", wantOut: "args-to-image-entrypoint\n", wantCode: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := f.run(t, tc.name)
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tc.wantCode, errOut)
			}
			if out != tc.wantOut {
				t.Errorf("stdout %q, want %q", out, tc.wantOut)
			}
			if tc.wantErr != "" && errOut != tc.wantErr {
				t.Errorf("stderr %q, want %q", errOut, tc.wantErr)
			}
		})
	}
	// A command that does not exist fails at Start (exec), not silently.
	ctx := context.Background()
	c, err := f.m.Create(ctx, "missing")
	if err == nil {
		_ = collect(c.Stdout())
		err = c.Start()
	}
	if err == nil {
		t.Fatal("missing binary: no error")
	}
	if _, err := f.m.Create(ctx, "not-in-spec"); !errors.Is(err, ErrUnknownContainer) {
		t.Errorf("unknown container: %v, want ErrUnknownContainer", err)
	}
	if _, err := f.m.Create(ctx, "echo"); !errors.Is(err, ErrExists) {
		t.Errorf("second create: %v, want ErrExists", err)
	}
}

func TestEnvFilesVolumesHostname(t *testing.T) {
	script := strings.Join([]string{
		`echo "FOO=$FOO"`,
		`echo "POD=$POD_NAME"`,
		`echo "EXPANDED=$EXPANDED"`,
		`echo "IMAGE_VAR=$IMAGE_VAR"`,
		`cat /etc/sealed/app/config.txt`,
		`echo scratch-data > /scratch/x && cat /scratch/x`,
		`cat /tls/cert.pem`,
		`touch /tls/new 2>/dev/null || echo tls-read-only`,
		`touch /etc/sealed/new 2>/dev/null || echo sealed-read-only`,
		`hostname`,
		`id -u`,
		`pwd`,
	}, "; ")
	f := newPod(t, spec.Container{
		Name:       "env",
		Command:    []string{"sh", "-c", script},
		WorkingDir: "/tmp",
		Env: []spec.EnvVar{
			{Name: "FOO", Value: "bar"},
			{Name: "POD_NAME", FromHost: "fieldRef:metadata.name"},
			{Name: "EXPANDED", Value: "$(FOO)-$(POD_NAME)-$$(FOO)"},
		},
		Mounts: []spec.Mount{
			{Volume: "scratch", Path: "/scratch"},
			{Volume: "config", Path: "/etc/sealed"},
		},
	})
	out, errOut, code := f.run(t, "env")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q, stdout %q", code, errOut, out)
	}
	want := strings.Join([]string{
		"FOO=bar", "POD=test-pod", "EXPANDED=bar-test-pod-$(FOO)", "IMAGE_VAR=from-image",
		"sealed-content", "scratch-data", "CERT", "tls-read-only", "sealed-read-only",
		"test-pod", "0", "/tmp",
	}, "\n") + "\n"
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
}

func TestSignalTerm(t *testing.T) {
	f := newPod(t, spec.Container{Name: "sleeper", Command: []string{"sleep", "1000"}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := f.m.Create(ctx, "sleeper")
	if err != nil {
		t.Fatal(err)
	}
	_ = collect(c.Stdout())
	_ = collect(c.Stderr())
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
		t.Fatal("sleep exited early")
	case <-time.After(200 * time.Millisecond):
	}
	if err := c.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := c.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code != 128+int(unix.SIGTERM) {
		t.Errorf("exit code %d, want %d (killed by SIGTERM)", code, 128+int(unix.SIGTERM))
	}
}

func TestExecStatsAndTTY(t *testing.T) {
	f := newPod(t,
		spec.Container{Name: "main", Command: []string{"sleep", "1000"}, Env: []spec.EnvVar{{Name: "MAIN_VAR", Value: "v1"}}},
		spec.Container{Name: "term", Command: []string{"sh", "-c", "tty; read line; echo got:$line"}, TTY: true, Stdin: true},
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := f.m.Create(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	_ = collect(c.Stdout())
	_ = collect(c.Stderr())
	if _, err := c.Exec(ctx, []string{"true"}, ExecOptions{}); !errors.Is(err, ErrNotStarted) {
		t.Errorf("exec before start: %v, want ErrNotStarted", err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	p, err := c.Exec(ctx, []string{"sh", "-c", "echo exec:$MAIN_VAR:$(hostname); cat; exit 7"}, ExecOptions{Stdin: true})
	if err != nil {
		t.Fatal(err)
	}
	out := collect(p.Stdout())
	if _, err := io.WriteString(p.Stdin(), "from-stdin\n"); err != nil {
		t.Fatal(err)
	}
	p.Stdin().Close()
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.wait(t); got != "exec:v1:test-pod\nfrom-stdin\n" {
		t.Errorf("exec stdout %q", got)
	}
	if code != 7 {
		t.Errorf("exec exit code %d, want 7", code)
	}
	p.Close()

	// PID 1 of the pod (the pause process) exposes nothing: no root, no fds, no capabilities.
	hp, err := c.Exec(ctx, []string{"sh", "-c", "ls /proc/1/root/ 2>&1 | head -1; cat /proc/1/environ 2>&1; grep CapEff /proc/1/status"}, ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hout := collect(hp.Stdout())
	_ = collect(hp.Stderr())
	if _, err := hp.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	got := hout.wait(t)
	if strings.Count(got, "Permission denied") != 2 || !strings.Contains(got, "CapEff:\t0000000000000000") || strings.Contains(got, "bin") {
		t.Errorf("the pause process is exposed to containers:\n%s", got)
	}

	// Exec probes are frequent: each exec's pipes are released once it exited and its
	// output was read, so the agent's descriptors do not grow.
	before := openFDs(t)
	for i := 0; i < 10; i++ {
		p, err := c.Exec(ctx, []string{"echo", "probe"}, ExecOptions{})
		if err != nil {
			t.Fatal(err)
		}
		o, e := collect(p.Stdout()), collect(p.Stderr())
		if code, err := p.Wait(ctx); err != nil || code != 0 {
			t.Fatalf("probe: %d %v", code, err)
		}
		if got := o.wait(t); got != "probe\n" {
			t.Fatalf("probe output %q", got)
		}
		e.wait(t)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.execMu.Lock()
		n := len(c.execs)
		c.execMu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d exec processes still tracked", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if after := openFDs(t); after > before+2 {
		t.Errorf("open descriptors grew from %d to %d over 10 execs", before, after)
	}

	// Burn some CPU in the container, then read its cgroup.
	burn, err := c.Exec(ctx, []string{"sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"}, ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if code, err := burn.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("burn: %d %v", code, err)
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.CPUUsageNanos == 0 || st.MemoryUsageBytes == 0 || st.Pids == 0 {
		t.Errorf("stats look empty: %+v", st)
	}
	t.Logf("stats: %+v", st)

	// TTY container: stdout is a terminal, stdin reaches it.
	tc, err := f.m.Create(ctx, "term")
	if err != nil {
		t.Fatal(err)
	}
	if tc.Stderr() != nil {
		t.Error("tty container has a separate stderr")
	}
	tout := collect(tc.Stdout())
	if err := tc.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(tc.Stdin(), "typed\n"); err != nil {
		t.Fatal(err)
	}
	if code, err := tc.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("tty container: %d %v", code, err)
	}
	got = strings.ReplaceAll(tout.wait(t), "\r\n", "\n")
	if !strings.Contains(got, "/dev/pts/") || !strings.Contains(got, "got:typed") {
		t.Errorf("tty output %q", got)
	}
}

func TestDeleteLeavesNothing(t *testing.T) {
	f := newPod(t, spec.Container{Name: "busy", Command: []string{"sh", "-c", "sleep 1000 & sleep 1000 & wait"}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := f.m.Create(ctx, "busy")
	if err != nil {
		t.Fatal(err)
	}
	_ = collect(c.Stdout())
	_ = collect(c.Stderr())
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	// An exec'd process that outlives its shell (daemonised).
	p, err := c.Exec(ctx, []string{"sh", "-c", "sleep 999 >/dev/null 2>&1 & echo started"}, ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := collect(p.Stdout()).wait(t); got != "started\n" {
		t.Fatalf("exec output %q", got)
	}
	var pids []int
	deadline := time.Now().Add(10 * time.Second)
	for len(pids) < 4 && time.Now().Before(deadline) { // sh + 2 sleeps + daemonised sleep
		pids, err = c.lc.Processes()
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(pids) < 4 {
		t.Fatalf("processes in the container: %v, want at least 4", pids)
	}
	cgroups := c.CgroupPaths()
	if len(cgroups) == 0 {
		t.Fatal("no cgroup paths")
	}
	dir := c.StateDir()
	if err := f.m.Delete(ctx, "busy"); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d still alive after delete", pid)
		}
	}
	for ctl, p := range cgroups {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s (%s) left behind: %v", p, ctl, err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("container dir %s left behind: %v", dir, err)
	}
	if _, err := os.Stat(filepath.Join(f.m.runcRoot(), "busy")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("libcontainer state left behind: %v", err)
	}
	if _, err := f.m.Get("busy"); !errors.Is(err, ErrUnknownContainer) {
		t.Errorf("get after delete: %v", err)
	}
	// Close: pause gone, volumes unmounted, cgroup parent removed, state emptied.
	pausePid := f.m.pod.pause.Process.Pid
	if err := f.m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if alive(pausePid) {
		t.Error("pause process alive after close")
	}
	runtime.LockOSThread() // /proc/self may be a wedged thread's view: see unmountUnder
	mi, err := os.ReadFile("/proc/thread-self/mountinfo")
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), f.state) {
		t.Errorf("mounts left under %s:\n%s", f.state, mi)
	}
	for _, p := range cgroups {
		if _, err := os.Stat(filepath.Dir(p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup parent %s left behind: %v", filepath.Dir(p), err)
		}
	}
	left, _ := filepath.Glob(filepath.Join(f.state, "*"))
	if len(left) != 0 {
		t.Errorf("state dir not empty: %v", left)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
