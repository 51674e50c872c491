package imagetest

import (
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Request is one request a Recorder served, with when it arrived and when its answer was
// written to the end.
type Request struct {
	Method, Path string
	Start, End   time.Time
}

// Recorder is a Registry (go-containerregistry's pkg/registry on 127.0.0.1) that records
// every request with its start and end times and can delay answers, so that tests can see
// when and how concurrently images are pulled. Rewrite works as on Registry.
type Recorder struct {
	*Registry

	mu       sync.Mutex
	reqs     []Request
	inflight int
	delay    func(*http.Request) time.Duration
}

// NewRecorder starts a recording registry until the test ends.
func NewRecorder(t testing.TB) *Recorder {
	t.Helper()
	rec := &Recorder{Registry: &Registry{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		defer func() {
			rec.mu.Lock()
			rec.reqs = append(rec.reqs, Request{Method: req.Method, Path: req.URL.Path, Start: start, End: time.Now()})
			rec.inflight--
			rec.mu.Unlock()
		}()
		rec.mu.Lock()
		rec.inflight++
		delay := rec.delay
		rec.mu.Unlock()
		if delay != nil {
			if d := delay(req); d > 0 {
				time.Sleep(d)
			}
		}
		rec.Registry.mu.Lock()
		rewrite := rec.Registry.rewrite
		rec.Registry.mu.Unlock()
		if rewrite != nil && rewrite(w, req) {
			return
		}
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	rec.Host = strings.TrimPrefix(srv.URL, "http://")
	return rec
}

// Delay makes the registry wait f(request) before answering (nil: no delay).
func (r *Recorder) Delay(f func(*http.Request) time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delay = f
}

// WaitIdle waits (up to 5 s) until no request is being answered. A client can have read a
// whole answer before the handler that wrote it has returned and recorded it: call WaitIdle
// before Requests when every request made so far must be in the record.
func (r *Recorder) WaitIdle(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.inflight > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("registry still answering %d requests after 5s", r.inflight)
		}
		r.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		r.mu.Lock()
	}
}

// Requests returns the requests answered so far whose path contains sub, by start time.
func (r *Recorder) Requests(sub string) []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Request
	for _, q := range r.reqs {
		if strings.Contains(q.Path, sub) {
			out = append(out, q)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// Reset forgets the recorded requests.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = nil
}

// MaxOverlap is the largest number of the given requests that were being answered at once.
func MaxOverlap(reqs []Request) int {
	max := 0
	for _, a := range reqs {
		n := 0
		for _, b := range reqs {
			if !b.Start.After(a.Start) && b.End.After(a.Start) {
				n++
			}
		}
		if n > max {
			max = n
		}
	}
	return max
}

// LayeredImage is a linux/amd64 image with one layer per tar stream, in order, and config as
// its runtime configuration.
func LayeredImage(t testing.TB, layers [][]byte, config v1.Config) v1.Image {
	t.Helper()
	img := empty.Image
	for _, data := range layers {
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = config
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}
