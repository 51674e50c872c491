package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// fakeBackend is a test double of agent/containers: each sealed container runs its command
// and args as a plain host process (no image, no isolation), which is enough to exercise the
// server's validation, policy and stdio plumbing.
type fakeBackend struct {
	mu      sync.Mutex
	pods    int
	lastOpt PodOptions
	lastPod *fakePod
}

func (b *fakeBackend) StartPod(_ context.Context, s *spec.Spec, o PodOptions) (Pod, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pods++
	b.lastOpt = o
	b.lastPod = &fakePod{spec: s, ctrs: map[string]*fakeProc{}}
	return b.lastPod, nil
}

type fakePod struct {
	mu   sync.Mutex
	spec *spec.Spec
	ctrs map[string]*fakeProc
	// volumes records AttachVolume; attachErr, if set, fails it.
	volumes   map[string]AttachedVolume
	attachErr error
	// hostFiles records UpdateHostFiles; hostEnv the host env each Create got.
	hostFiles map[string][]HostFile
	hostEnv   map[string]map[string]string
}

func (p *fakePod) AttachVolume(_ context.Context, name string, v AttachedVolume) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.attachErr != nil {
		return p.attachErr
	}
	if p.volumes == nil {
		p.volumes = map[string]AttachedVolume{}
	}
	if _, dup := p.volumes[name]; dup {
		return fmt.Errorf("fake: volume %s attached twice", name)
	}
	p.volumes[name] = v
	return nil
}

type fakeProc struct {
	cmd            *exec.Cmd
	stdout, stderr io.ReadCloser
	outW, errW     *os.File
	stdin          io.WriteCloser
	tty, openStdin bool
	started        bool
	exited         atomic.Bool
	mu             sync.Mutex
	size           [2]uint16 // cols, rows of the last Resize
}

func newFakeProc(argv []string, stdin bool) (*fakeProc, error) {
	if len(argv) == 0 {
		return nil, errors.New("fake: empty argv")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	p := &fakeProc{cmd: cmd, openStdin: stdin}
	or, ow, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	er, ew, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p.stdout, p.outW, p.stderr, p.errW = closeAtEOF{or}, ow, closeAtEOF{er}, ew
	cmd.Stdout, cmd.Stderr = ow, ew
	if stdin {
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// closeAtEOF closes a pipe's read end once it is drained (agent/containers releases an
// exec's pipes itself; without this the fake would leak two descriptors per exec).
type closeAtEOF struct{ *os.File }

func (r closeAtEOF) Read(b []byte) (int, error) {
	n, err := r.File.Read(b)
	if err != nil {
		r.File.Close()
	}
	return n, err
}

func (p *fakePod) UpdateHostFiles(_ context.Context, volume string, files []HostFile) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hostFiles == nil {
		p.hostFiles = map[string][]HostFile{}
	}
	p.hostFiles[volume] = files
	return nil
}

func (p *fakePod) Create(_ context.Context, name string, hostEnv map[string]string) (Container, error) {
	sc, ok := p.spec.Container(name)
	if !ok {
		return nil, fmt.Errorf("fake: no container %s", name)
	}
	fp, err := newFakeProc(append(append([]string(nil), sc.Command...), sc.Args...), sc.Stdin)
	if err != nil {
		return nil, err
	}
	fp.tty = sc.TTY
	p.mu.Lock()
	if p.hostEnv == nil {
		p.hostEnv = map[string]map[string]string{}
	}
	p.hostEnv[name] = hostEnv
	p.ctrs[name] = fp
	p.mu.Unlock()
	return fp, nil
}

func (p *fakePod) Delete(_ context.Context, name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	fp := p.ctrs[name]
	if fp == nil {
		return fmt.Errorf("fake: no container %s", name)
	}
	if fp.started && !fp.exited.Load() {
		_ = fp.cmd.Process.Kill()
	}
	delete(p.ctrs, name)
	return nil
}

func (p *fakePod) Close(ctx context.Context) error {
	p.mu.Lock()
	names := make([]string, 0, len(p.ctrs))
	for n := range p.ctrs {
		names = append(names, n)
	}
	p.mu.Unlock()
	for _, n := range names {
		_ = p.Delete(ctx, n)
	}
	return nil
}

func (p *fakeProc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.started = true
	err := p.cmd.Start()
	p.outW.Close()
	p.errW.Close()
	return err
}

func (p *fakeProc) Wait(context.Context) (int, error) {
	err := p.cmd.Wait()
	p.exited.Store(true)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return -1, err
	}
	ws := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

func (p *fakeProc) Signal(sig syscall.Signal) error {
	if p.cmd.Process == nil {
		return errors.New("fake: not started")
	}
	return p.cmd.Process.Signal(sig)
}

func (p *fakeProc) Stdout() io.Reader     { return p.stdout }
func (p *fakeProc) Stderr() io.Reader     { return p.stderr }
func (p *fakeProc) Stdin() io.WriteCloser { return p.stdin }
func (p *fakeProc) TTY() bool             { return p.tty }
func (p *fakeProc) OpenStdin() bool       { return p.openStdin }

func (p *fakeProc) Exec(_ context.Context, _ string, argv []string, tty, stdin bool) (Process, error) {
	fp, err := newFakeProc(argv, stdin)
	if err != nil {
		return nil, err
	}
	fp.tty = tty
	return fp, fp.Start()
}

// Resize records the size; like agent/containers, only a process with a tty has one.
func (p *fakeProc) Resize(cols, rows uint16) error {
	if !p.tty {
		return errors.New("fake: resize: not a terminal")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.size = [2]uint16{cols, rows}
	return nil
}

func (p *fakeProc) lastSize() [2]uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.size
}

func (p *fakeProc) Stats(context.Context) (*Stats, error) { return &Stats{Pids: 1}, nil }
