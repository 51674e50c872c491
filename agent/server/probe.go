package server

// Sealed probes and lifecycle hooks (docs/sealing.md#probes-answered-inside-the-guest,
// docs/sealing.md#lifecycle-hooks): an exec probe's or hook's argv and an HTTP probe's or
// hook's request stay in the sealed spec. The placeholder carries the exec stub
// spec.ProbeStub(container, kind) or spec.HookStub(container, kind) instead; when the host
// execs that stub, the agent runs the sealed action itself, inside the guest, and answers
// with an exec that has no output and exits 0 (success) or 1 (failure or timeout). Nothing
// of the sealed action (argv, path, headers, output, error) reaches the host. The host
// decides only when a stub runs (the kubelet's probe period, postStart after the start,
// preStop before SIGTERM).

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// maxHookRun bounds one sealed hook. Kubernetes gives hooks no timeout of their own: the
// kubelet bounds preStop by the grace period (then kills the container, and an exec hook
// with it), so this only ends a hook that would otherwise outlive every sensible wait.
const maxHookRun = time.Hour

// sealedAction is what a stub stands for: the action of a sealed probe or hook (exactly one
// of exec and httpGet), bounded by timeout.
type sealedAction struct {
	exec    []string
	httpGet *spec.HTTPGetAction
	timeout time.Duration
}

// sealedStub returns the sealed action argv stands for in container name, or nil when argv
// is not the stub of one of that container's sealed probes or hooks. With the sealed exec
// policy it decides what the host may exec (authorizeExec).
func sealedStub(sp *spec.Spec, name string, argv []string) *sealedAction {
	sc, ok := sp.Container(name)
	if !ok {
		return nil
	}
	if ctrName, kind, ok := spec.ParseProbeStub(argv); ok && ctrName == name {
		if pr, ok := sc.Probe(kind); ok {
			return &sealedAction{exec: pr.Exec, httpGet: pr.HTTPGet, timeout: time.Duration(pr.Timeout()) * time.Second}
		}
	}
	if ctrName, kind, ok := spec.ParseHookStub(argv); ok && ctrName == name {
		if h, ok := sc.Hook(kind); ok {
			return &sealedAction{exec: h.Exec, httpGet: h.HTTPGet, timeout: maxHookRun}
		}
	}
	return nil
}

// startExec runs argv in c: the agent answers a probe or hook stub itself, anything else is
// a real exec in the container (authorizeExec has allowed it).
func (s *Server) startExec(ctx context.Context, c *ctr, id string, argv []string, tty, stdin bool) (Process, error) {
	s.mu.Lock()
	act := sealedStub(s.res.Spec, c.name, argv)
	s.mu.Unlock()
	if act == nil {
		return c.c.Exec(ctx, id, argv, tty, stdin)
	}
	return runSealed(c.c, act), nil
}

// probeProcess is the answer to a probe or hook stub: no stdio, exit status 0 or 1.
type probeProcess struct {
	done   chan struct{}
	code   int
	cancel context.CancelFunc
}

func (p *probeProcess) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
		return p.code, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Signal ends the probe early (it then fails).
func (p *probeProcess) Signal(syscall.Signal) error { p.cancel(); return nil }
func (p *probeProcess) Stdout() io.Reader           { return nil }
func (p *probeProcess) Stderr() io.Reader           { return nil }
func (p *probeProcess) Stdin() io.WriteCloser       { return nil }

// runSealed starts the sealed action, bounded by its timeout.
func runSealed(c Container, act *sealedAction) *probeProcess {
	ctx, cancel := context.WithTimeout(context.Background(), act.timeout)
	p := &probeProcess{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer cancel()
		var ok bool
		if act.httpGet != nil {
			ok = httpProbe(ctx, act.httpGet)
		} else {
			ok = execProbe(ctx, c, act.exec)
		}
		if !ok {
			p.code = 1
		}
		close(p.done)
	}()
	return p
}

// execProbe runs a probe's or hook's argv in the container; success is exit status 0
// within the timeout. Its output is read and discarded inside the guest.
func execProbe(ctx context.Context, c Container, argv []string) bool {
	p, err := c.Exec(ctx, "sealed-probe", slices.Clone(argv), false, false)
	if err != nil {
		return false
	}
	for _, r := range []io.Reader{p.Stdout(), p.Stderr()} {
		if r != nil {
			go func() { _, _ = io.Copy(io.Discard, r) }()
		}
	}
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := p.Wait(context.Background())
		done <- result{code, err}
	}()
	select {
	case r := <-done:
		return r.err == nil && r.code == 0
	case <-ctx.Done(): // timeout: kill it (the goroutine above reaps it)
		_ = p.Signal(syscall.SIGKILL)
		return false
	}
}

// maxProbeBody bounds the response body read (as the kubelet does, 10 KiB).
const maxProbeBody = 10 << 10

// httpProbe sends a probe's or hook's sealed request to 127.0.0.1:port inside the guest (the containers
// share the guest's network namespace); success is a status in 200..399, as for the
// kubelet. Like the kubelet it does not verify an HTTPS probe's certificate; it follows no
// redirect (a 3xx is a success, and the request never leaves the guest).
func httpProbe(ctx context.Context, h *spec.HTTPGetAction) bool {
	scheme := "http"
	if h.Scheme == "HTTPS" {
		scheme = "https"
	}
	path := h.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u, err := url.Parse(path)
	if err != nil {
		return false
	}
	u.Scheme, u.Host = scheme, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(h.Port)))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "kube-probe/sealpod")
	req.Header.Set("Accept", "*/*")
	for _, hd := range h.Headers {
		if strings.EqualFold(hd.Name, "Host") {
			req.Host = hd.Value
			continue
		}
		req.Header.Del(hd.Name) // an owner's User-Agent or Accept replaces the default
	}
	for _, hd := range h.Headers {
		if !strings.EqualFold(hd.Name, "Host") {
			req.Header.Add(hd.Name, hd.Value)
		}
	}
	client := &http.Client{
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback inside the guest, as the kubelet's probes
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxProbeBody))
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}
