// Package backend adapts agent/containers (runc's libcontainer) to the agent server's
// Backend interface.
package backend

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"syscall"

	"github.com/sealpod/sealpod/agent/containers"
	"github.com/sealpod/sealpod/agent/server"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Containers is a server.Backend over a containers.Manager. Errors it returns are redacted
// (see Redact): they travel to the untrusted host.
type Containers struct{ Options containers.Options }

func (b *Containers) log() *slog.Logger {
	if b.Options.Logger != nil {
		return b.Options.Logger
	}
	return slog.Default()
}

// StartPod creates the manager and starts the pod.
func (b *Containers) StartPod(_ context.Context, s *spec.Spec, o server.PodOptions) (server.Pod, error) {
	m, err := containers.New(b.Options)
	if err != nil {
		return nil, Redact(b.log(), "start pod", s.Workload, err)
	}
	if err := m.StartPod(s, containers.PodOptions{TLSSource: o.TLSDir, HostValues: o.HostValues}); err != nil {
		return nil, Redact(b.log(), "start pod", s.Workload, err)
	}
	return &pod{m: m, spec: s, log: b.log()}, nil
}

type pod struct {
	m    *containers.Manager
	spec *spec.Spec
	log  *slog.Logger
}

func (p *pod) Create(ctx context.Context, name string, hostEnv map[string]string) (server.Container, error) {
	sc, ok := p.spec.Container(name)
	if !ok {
		return nil, fmt.Errorf("create container %s: %w", name, containers.ErrUnknownContainer)
	}
	c, err := p.m.CreateWith(ctx, name, containers.CreateOptions{HostEnv: hostEnv})
	if err != nil {
		return nil, Redact(p.log, "create container", name, err)
	}
	return &ctr{c: c, name: name, tty: sc.TTY, stdin: sc.Stdin, log: p.log}, nil
}

func (p *pod) UpdateHostFiles(_ context.Context, volume string, files []server.HostFile) error {
	fs := make([]containers.HostFile, len(files))
	for i, f := range files {
		fs[i] = containers.HostFile(f)
	}
	return Redact(p.log, "update host files", volume, p.m.UpdateHostFiles(volume, fs))
}

func (p *pod) Delete(ctx context.Context, name string) error {
	return Redact(p.log, "delete container", name, p.m.Delete(ctx, name))
}

func (p *pod) AttachVolume(_ context.Context, name string, v server.AttachedVolume) error {
	err := p.m.AttachVolume(name, containers.AttachedVolume{Mode: v.Mode, Path: v.Path, ReadOnly: v.ReadOnly})
	return Redact(p.log, "attach volume", name, err)
}

func (p *pod) Close(ctx context.Context) error {
	return Redact(p.log, "close pod", p.spec.Workload, p.m.Close(ctx))
}

type ctr struct {
	c          *containers.Container
	name       string
	tty, stdin bool
	log        *slog.Logger
}

func (c *ctr) Wait(ctx context.Context) (int, error) {
	code, err := c.c.Wait(ctx)
	return code, Redact(c.log, "wait", c.name, err)
}

func (c *ctr) Signal(sig syscall.Signal) error {
	return Redact(c.log, "signal", c.name, c.c.Signal(sig))
}
func (c *ctr) Stdout() io.Reader     { return c.c.Stdout() }
func (c *ctr) Stderr() io.Reader     { return c.c.Stderr() }
func (c *ctr) Stdin() io.WriteCloser { return c.c.Stdin() }
func (c *ctr) TTY() bool             { return c.tty }
func (c *ctr) OpenStdin() bool       { return c.stdin }
func (c *ctr) Start() error          { return Redact(c.log, "start container", c.name, c.c.Start()) }

func (c *ctr) Exec(ctx context.Context, _ string, argv []string, tty, stdin bool) (server.Process, error) {
	p, err := c.c.Exec(ctx, argv, containers.ExecOptions{TTY: tty, Stdin: stdin})
	if err != nil {
		return nil, Redact(c.log, "exec in", c.name, err)
	}
	return p, nil
}

func (c *ctr) Stats(context.Context) (*server.Stats, error) {
	st, err := c.c.Stats()
	if err != nil {
		return nil, Redact(c.log, "stats", c.name, err)
	}
	return &server.Stats{CPUUsageNS: st.CPUUsageNanos, MemoryUsageBytes: st.MemoryUsageBytes, MemoryLimitBytes: st.MemoryLimitBytes, Pids: st.Pids}, nil
}
