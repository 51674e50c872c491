package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSource serves scripted watch streams, one per call, and records the resourceVersions
// asked for. The last stream stays open after its events (until the watch is cancelled); a
// watch after the last one fails.
type fakeSource struct {
	mu       sync.Mutex
	streams  []string // watch answers in order; "!err" fails the call
	listRV   string
	listed   []podState
	asked    []string
	listings int
}

func (f *fakeSource) list(context.Context) ([]podState, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listings++
	return f.listed, f.listRV, nil
}

func (f *fakeSource) watch(ctx context.Context, rv string) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, rv)
	if len(f.streams) == 0 {
		return nil, errors.New("connection refused")
	}
	s := f.streams[0]
	f.streams = f.streams[1:]
	if s == "!err" {
		return nil, errors.New("connection refused")
	}
	if len(f.streams) == 0 {
		return io.NopCloser(io.MultiReader(strings.NewReader(s), hang{ctx})), nil
	}
	return io.NopCloser(strings.NewReader(s)), nil
}

// hang blocks reads until its context ends.
type hang struct{ ctx context.Context }

func (h hang) Read([]byte) (int, error) { <-h.ctx.Done(); return 0, h.ctx.Err() }

func ev(typ string, i int) string {
	return fmt.Sprintf(`{"type":%q,"object":%s}`+"\n", typ, fakePodStates("bench")[i])
}

// fakeClock advances 100 ms per reading.
func fakeClock() func() time.Time {
	t := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	return func() time.Time { t = t.Add(100 * time.Millisecond); return t }
}

func TestPodWatchRewatches(t *testing.T) {
	ready := fakePodStates("bench")[3]
	var listedReady podState
	if err := json.Unmarshal([]byte(ready), &listedReady); err != nil {
		t.Fatal(err)
	}
	gone := `{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version: 12 (13)"}}` + "\n"
	for _, tc := range []struct {
		name        string
		streams     []string
		listed      []podState
		wantAsked   []string
		wantErr     string
		rewatches   int
		relists     int
		sameInstant bool // Running and Ready seen at once (through a re-list)
	}{
		{name: "one stream", streams: []string{ev("ADDED", 0) + ev("MODIFIED", 1) + ev("MODIFIED", 2) + ev("MODIFIED", 3)},
			wantAsked: []string{"10"}},
		{name: "EOF after each event", streams: []string{ev("ADDED", 0), ev("MODIFIED", 1), ev("MODIFIED", 2), ev("MODIFIED", 3)},
			wantAsked: []string{"10", "11", "12", "13"}, rewatches: 3},
		{name: "stream cut inside an event", streams: []string{ev("ADDED", 0) + ev("MODIFIED", 1)[:40], ev("MODIFIED", 1) + ev("MODIFIED", 2), ev("MODIFIED", 3)},
			wantAsked: []string{"10", "11", "13"}, rewatches: 2},
		{name: "bookmark moves the version", streams: []string{ev("ADDED", 0) + ev("MODIFIED", 1) + `{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"20"}}}` + "\n", ev("MODIFIED", 2) + ev("MODIFIED", 3)},
			wantAsked: []string{"10", "20"}, rewatches: 1},
		{name: "failed calls are retried", streams: []string{ev("ADDED", 0) + ev("MODIFIED", 1), "!err", "", "!err", ev("MODIFIED", 2) + ev("MODIFIED", 3)},
			wantAsked: []string{"10", "12", "12", "12", "12"}, rewatches: 4},
		{name: "410 Gone: list again", streams: []string{ev("ADDED", 0) + ev("MODIFIED", 1), gone, ""}, listed: []podState{listedReady},
			wantAsked: []string{"10", "12", "14"}, rewatches: 2, relists: 1, sameInstant: true},
		{name: "server error events count as failures", streams: []string{ev("ADDED", 0), `{"type":"ERROR","object":{"code":500,"reason":"InternalError"}}` + "\n",
			`{"type":"ERROR","object":{"code":500,"reason":"InternalError"}}` + "\n", "!err"},
			wantAsked: []string{"10", "11", "11", "11", "11"}, wantErr: "4 attempts in a row brought nothing"},
		{name: "nothing but failures", streams: []string{"!err"}, wantAsked: []string{"10", "10", "10", "10"}, wantErr: "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &fakeSource{streams: tc.streams, listRV: "14", listed: tc.listed}
			w := &podWatch{src: src, now: fakeClock(), retries: 3, backoff: time.Millisecond, logf: t.Logf}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			seen := make(chan podSeen, 16)
			werr := make(chan error, 1)
			wctx, wcancel := context.WithCancel(ctx)
			go func() { werr <- w.run(wctx, "10", seen); close(werr) }()
			tl, err := timeline(ctx, podRef{"default", "bench"}, "uid-1", seen, werr)
			wcancel()
			if rerr := <-werr; tc.wantErr == "" && !errors.Is(rerr, context.Canceled) {
				t.Errorf("run ended with %v, want context.Canceled", rerr)
			}
			src.mu.Lock()
			asked := strings.Join(src.asked, " ")
			src.mu.Unlock()
			if want := strings.Join(tc.wantAsked, " "); asked != want {
				t.Errorf("watched from resourceVersions %q, want %q", asked, want)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("timeline error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tl.scheduled.IsZero() || tl.running.IsZero() || tl.ready.IsZero() {
				t.Fatalf("timestamps missing: %+v", tl)
			}
			if !tl.scheduled.Before(tl.running) || tl.ready.Before(tl.running) || tl.running.Equal(tl.ready) != tc.sameInstant {
				t.Errorf("timestamps out of order: scheduled %v running %v ready %v", tl.scheduled, tl.running, tl.ready)
			}
			if w.rewatches != tc.rewatches || w.relists != tc.relists {
				t.Errorf("rewatches %d relists %d, want %d %d", w.rewatches, w.relists, tc.rewatches, tc.relists)
			}
		})
	}
}

// TestTimelineIgnoresOtherPods: states of an earlier pod of the same name (another uid) do
// not count; a deleted or failed pod ends the wait with an error naming it.
func TestTimelineIgnoresOtherPods(t *testing.T) {
	other := strings.ReplaceAll(fakePodStates("bench")[3], "uid-1", "uid-0")
	failed := strings.ReplaceAll(fakePodStates("bench")[1], `"Pending"`, `"Failed"`)
	for _, tc := range []struct {
		name, stream, wantErr string
	}{
		{"other uid first", `{"type":"MODIFIED","object":` + other + "}\n" + ev("ADDED", 0) + ev("MODIFIED", 1) + ev("MODIFIED", 2) + ev("MODIFIED", 3), ""},
		{"deleted", ev("ADDED", 0) + ev("DELETED", 1), "pod default/bench deleted while starting"},
		{"failed", ev("ADDED", 0) + `{"type":"MODIFIED","object":` + failed + "}\n", "pod default/bench ended: phase Failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &fakeSource{streams: []string{tc.stream}, listRV: "14"}
			w := &podWatch{src: src, now: fakeClock(), retries: 0, backoff: time.Millisecond, logf: t.Logf}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			seen, werr := make(chan podSeen, 16), make(chan error, 1)
			go func() { werr <- w.run(ctx, "10", seen); close(werr) }()
			tl, err := timeline(ctx, podRef{"default", "bench"}, "uid-1", seen, werr)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The other pod's Ready state came first: had it counted, Ready would precede scheduled.
			if !tl.scheduled.Before(tl.ready) {
				t.Errorf("the other pod's state counted: %+v", tl)
			}
		})
	}
}

// TestKubectlWatchStreams runs the real kubectl (when installed) against a fake API server:
// `kubectl get --raw` must hand over each watch event as it comes (not at the end of the
// stream), and podbench must watch again from the last resourceVersion after the stream ends.
func TestKubectlWatchStreams(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed")
	}
	const gap = 400 * time.Millisecond
	var mu sync.Mutex
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.URL.Path != "/api/v1/namespaces/default/pods" || q.Get("fieldSelector") != "metadata.name=bench" {
			http.Error(w, "unexpected "+r.URL.String(), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if q.Get("watch") != "true" {
			fmt.Fprint(w, `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"10"},"items":[]}`)
			return
		}
		mu.Lock()
		asked = append(asked, q.Get("resourceVersion"))
		mu.Unlock()
		fl := w.(http.Flusher)
		switch q.Get("resourceVersion") {
		case "10": // two events, a pause between them, then the server ends the stream
			fmt.Fprint(w, ev("ADDED", 0))
			fl.Flush()
			time.Sleep(gap)
			fmt.Fprint(w, ev("MODIFIED", 1))
			fl.Flush()
		case "12":
			fmt.Fprint(w, ev("MODIFIED", 2)+ev("MODIFIED", 3))
			fl.Flush()
			<-r.Context().Done() // until podbench hangs up
		default:
			http.Error(w, "unexpected resourceVersion", http.StatusBadRequest)
		}
	}))
	defer srv.Close()
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: %q}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\nusers:\n- name: u\n  user: {}\ncurrent-context: c\n", srv.URL)
	if err := os.WriteFile(kc, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	src := kubectlSource{f: &flags{kubectl: kubectl, kubeconfig: kc}, namespace: "default", name: "bench"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	items, rv, err := src.list(ctx)
	if err != nil || len(items) != 0 || rv != "10" {
		t.Fatalf("list: %v items, rv %q, %v", len(items), rv, err)
	}
	w := &podWatch{src: src, now: time.Now, retries: 2, backoff: 10 * time.Millisecond, logf: t.Logf}
	seen, werr := make(chan podSeen, 16), make(chan error, 1)
	wctx, wcancel := context.WithCancel(ctx)
	go func() { werr <- w.run(wctx, rv, seen); close(werr) }()
	var at []time.Time
	for len(at) < 4 {
		select {
		case s := <-seen:
			at = append(at, s.at)
		case err := <-werr:
			t.Fatalf("watch: %v", err)
		case <-ctx.Done():
			t.Fatal("timed out")
		}
	}
	wcancel()
	<-werr
	if d := at[1].Sub(at[0]); d < gap*3/4 {
		t.Errorf("second event seen %v after the first, want about %v: kubectl did not stream", d, gap)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(asked, " "); got != "10 12" {
		t.Errorf("watched from %q, want \"10 12\"", got)
	}
}
