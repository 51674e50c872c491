package server

// Sealed probes (docs/sealing.md#probes-answered-inside-the-guest): an exec probe's argv and an HTTP probe's headers stay in the
// sealed spec. The placeholder carries the exec probe spec.ProbeStub(container, kind) instead;
// when the host execs that stub, the agent runs the sealed probe itself, inside the guest,
// and answers with an exec that has no output and exits 0 (success) or 1 (failure or
// timeout). Nothing of the sealed probe (argv, headers, output, error) reaches the host.

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

// sealedProbe returns the sealed probe that argv stands for in container name, or nil when
// argv is not the stub of one of that container's sealed probes.
func sealedProbe(sp *spec.Spec, name string, argv []string) *spec.Probe {
	ctrName, kind, ok := spec.ParseProbeStub(argv)
	if !ok || ctrName != name {
		return nil
	}
	sc, ok := sp.Container(name)
	if !ok {
		return nil
	}
	pr, ok := sc.Probe(kind)
	if !ok {
		return nil
	}
	return pr
}

// startExec runs argv in c: the agent answers a probe stub itself, anything else is a real
// exec in the container (authorizeExec has allowed it).
func (s *Server) startExec(ctx context.Context, c *ctr, id string, argv []string, tty, stdin bool) (Process, error) {
	s.mu.Lock()
	pr := sealedProbe(s.res.Spec, c.name, argv)
	s.mu.Unlock()
	if pr == nil {
		return c.c.Exec(ctx, id, argv, tty, stdin)
	}
	return runProbe(c.c, pr), nil
}

// probeProcess is the answer to a probe stub: no stdio, exit status 0 or 1.
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

// runProbe starts the sealed probe, bounded by its timeoutSeconds.
func runProbe(c Container, pr *spec.Probe) *probeProcess {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(pr.Timeout())*time.Second)
	p := &probeProcess{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer cancel()
		var ok bool
		if pr.HTTPGet != nil {
			ok = httpProbe(ctx, pr.HTTPGet)
		} else {
			ok = execProbe(ctx, c, pr.Exec)
		}
		if !ok {
			p.code = 1
		}
		close(p.done)
	}()
	return p
}

// execProbe runs argv in the container; success is exit status 0 within the timeout. Its
// output is read and discarded inside the guest.
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

// httpProbe sends the sealed request to 127.0.0.1:port inside the guest (the containers
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
