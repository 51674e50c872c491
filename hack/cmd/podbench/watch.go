package main

// List+watch of one pod, as an informer does it without client-go: list once (the pod must not
// exist yet; the list's resourceVersion is where the watch starts), then watch from the last
// resourceVersion seen, again and again: a watch stream may end at any time (server timeout,
// apiserver restart, a proxy closing the connection: the `watch pod bench: EOF` of issue #18).
// A resourceVersion the server no longer has (410 Gone / Expired) means list again; the states
// seen that way are timestamped when the list answers (coarser, and counted).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os/exec"
	"strings"
	"time"
)

// podState is the part of a Pod podbench reads.
type podState struct {
	Metadata struct {
		Name            string `json:"name"`
		Namespace       string `json:"namespace"`
		UID             string `json:"uid"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Spec struct {
		NodeName string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		Phase      string `json:"phase"`
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
	} `json:"status"`
}

func (p *podState) ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" && c.Status == "True" {
			return true
		}
	}
	return false
}

// podSeen is one state of the pod and when podbench saw it.
type podSeen struct {
	typ string // ADDED, MODIFIED, DELETED, or LIST (from a re-list)
	pod podState
	at  time.Time
}

// podSource lists and watches the pods of one name (the API server, through kubectl or a fake).
type podSource interface {
	list(ctx context.Context) (items []podState, resourceVersion string, err error)
	watch(ctx context.Context, resourceVersion string) (io.ReadCloser, error)
}

// errGone: the server no longer has the resourceVersion asked for (HTTP 410).
type errGone struct{ reason, message string }

func (e *errGone) Error() string {
	return fmt.Sprintf("resourceVersion gone (%s): %s", e.reason, e.message)
}

// podWatch sends every state of the pod on out until its context ends.
type podWatch struct {
	src     podSource
	now     func() time.Time
	retries int           // watches in a row that may fail without an event before giving up
	backoff time.Duration // pause after a watch that brought nothing
	logf    func(format string, args ...any)

	rewatches, relists int
}

// run watches from resourceVersion rv; it returns when ctx ends (ctx.Err()) or when the
// watch fails retries+1 times in a row without bringing anything.
func (w *podWatch) run(ctx context.Context, rv string, out chan<- podSeen) error {
	failures := 0
	for {
		progress, last, err := w.watchOnce(ctx, rv, out)
		rv = last
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var gone *errGone
		if errors.As(err, &gone) {
			w.logf("watch from resourceVersion %s: %v; listing again", rv, err)
			items, lrv, lerr := w.src.list(ctx)
			if lerr != nil {
				err = fmt.Errorf("list after %v: %w", gone, lerr)
			} else {
				w.relists++
				at := w.now()
				for _, p := range items {
					if !send(ctx, out, podSeen{typ: "LIST", pod: p, at: at}) {
						return ctx.Err()
					}
				}
				rv, progress = lrv, true
			}
		}
		if progress {
			failures = 0
		} else if failures++; failures > w.retries {
			return fmt.Errorf("watch pods from resourceVersion %s: %d attempts in a row brought nothing: %w", rv, failures, err)
		}
		w.rewatches++
		w.logf("watch ended (%v); watching again from resourceVersion %s", err, rv)
		if !progress {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(w.backoff):
			}
		}
	}
}

func send(ctx context.Context, out chan<- podSeen, s podSeen) bool {
	select {
	case out <- s:
		return true
	case <-ctx.Done():
		return false
	}
}

// watchEvent is one line of a watch stream.
type watchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// watchOnce reads one watch stream to its end: whether it brought an event (or bookmark), the
// last resourceVersion seen, and why it ended (io.EOF for a clean end).
func (w *podWatch) watchOnce(ctx context.Context, rv string, out chan<- podSeen) (bool, string, error) {
	rc, err := w.src.watch(ctx, rv)
	if err != nil {
		return false, rv, err
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	progress := false
	for {
		var ev watchEvent
		if err := dec.Decode(&ev); err != nil {
			return progress, rv, err
		}
		at := w.now()
		switch ev.Type {
		case "ERROR":
			var st struct {
				Code    int    `json:"code"`
				Reason  string `json:"reason"`
				Message string `json:"message"`
			}
			_ = json.Unmarshal(ev.Object, &st)
			if st.Code == 410 || st.Reason == "Expired" || st.Reason == "Gone" {
				return progress, rv, &errGone{reason: st.Reason, message: st.Message}
			}
			return progress, rv, fmt.Errorf("watch error from the server: %d %s: %s", st.Code, st.Reason, st.Message)
		case "BOOKMARK", "ADDED", "MODIFIED", "DELETED":
			var p podState
			if err := json.Unmarshal(ev.Object, &p); err != nil {
				return progress, rv, fmt.Errorf("watch event %s: %w", ev.Type, err)
			}
			if p.Metadata.ResourceVersion != "" {
				rv = p.Metadata.ResourceVersion
			}
			progress = true
			if ev.Type != "BOOKMARK" && !send(ctx, out, podSeen{typ: ev.Type, pod: p, at: at}) {
				return progress, rv, ctx.Err()
			}
		default:
			return progress, rv, fmt.Errorf("watch event of unknown type %q", ev.Type)
		}
	}
}

// kubectlSource lists and watches through `kubectl get --raw` (no client library needed).
type kubectlSource struct {
	f               *flags
	namespace, name string
}

func (k kubectlSource) uri(q url.Values) string {
	q.Set("fieldSelector", "metadata.name="+k.name)
	return "/api/v1/namespaces/" + url.PathEscape(k.namespace) + "/pods?" + q.Encode()
}

func (k kubectlSource) list(ctx context.Context) ([]podState, string, error) {
	var stderr bytes.Buffer
	cmd := k.f.kubectlCmd(ctx, "get", "--raw", k.uri(url.Values{}))
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return nil, "", fmt.Errorf("list pods %s/%s: %w: %s", k.namespace, k.name, err, strings.TrimSpace(stderr.String()))
	}
	var l struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Items []podState `json:"items"`
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, "", fmt.Errorf("list pods %s/%s: %w", k.namespace, k.name, err)
	}
	if l.Metadata.ResourceVersion == "" {
		return nil, "", fmt.Errorf("list pods %s/%s: no metadata.resourceVersion", k.namespace, k.name)
	}
	return l.Items, l.Metadata.ResourceVersion, nil
}

func (k kubectlSource) watch(ctx context.Context, rv string) (io.ReadCloser, error) {
	q := url.Values{"watch": {"true"}, "resourceVersion": {rv}, "allowWatchBookmarks": {"true"}}
	wctx, cancel := context.WithCancel(ctx)
	cmd := k.f.kubectlCmd(wctx, "get", "--raw", k.uri(q))
	s := &cmdStream{cmd: cmd, cancel: cancel}
	cmd.Stderr = &s.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	s.out = out
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("watch pods %s/%s: %w", k.namespace, k.name, err)
	}
	return s, nil
}

// cmdStream is a command's stdout; at its end, a failed command's error replaces io.EOF.
type cmdStream struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	out    io.Reader
	stderr bytes.Buffer
	waited bool
}

func (s *cmdStream) Read(p []byte) (int, error) {
	n, err := s.out.Read(p)
	if err == io.EOF && !s.waited {
		s.waited = true
		if werr := s.cmd.Wait(); werr != nil {
			return n, fmt.Errorf("kubectl: %w: %s", werr, strings.TrimSpace(s.stderr.String()))
		}
	}
	return n, err
}

func (s *cmdStream) Close() error {
	s.cancel()
	if !s.waited {
		s.waited = true
		_ = s.cmd.Wait()
	}
	return nil
}
