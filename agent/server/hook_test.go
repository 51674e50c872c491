package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Sealed lifecycle hooks (issue #16 item 3): the host execs only spec.HookStub(container,
// kind), which the agent answers by running the sealed hook (an argv in the container, or an
// HTTP request with the sealed path and headers to 127.0.0.1) with no output and exit 0/1.
// The host may exec the stub of a hook the sealed spec has, and nothing else.
func TestSealedHookStub(t *testing.T) {
	const token = "drain-token-c4f1"
	var drained atomic.Int32
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/sealed-drain" || r.Header.Get("X-Drain-Token") != token {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		drained.Add(1)
	}))
	defer web.Close()
	u, _ := url.Parse(web.URL)
	port, _ := strconv.Atoi(u.Port())
	marker := filepath.Join(t.TempDir(), "post-start-ran")

	sp := sealedSpec(spec.LogsAllow)
	sp.Containers[2].Hooks = []spec.Hook{ // sleeper: postStart only
		{Kind: spec.HookPostStart, Exec: []string{"sh", "-c", "echo sealed-hook-output; echo ran > " + marker}},
	}
	sp.Containers[1].Hooks = []spec.Hook{ // cat
		{Kind: spec.HookPreStop, HTTPGet: &spec.HTTPGetAction{Path: "/sealed-drain", Port: int32(port), Headers: []spec.HTTPHeader{{Name: "X-Drain-Token", Value: token}}}},
		{Kind: spec.HookPostStart, Exec: []string{"sh", "-c", "exit 7"}},
	}
	h := unsealedHarness(t, sp, nil)
	podOps{t, h.agent}.up("sleeper", "cat")
	a, ctx := h.agent, context.Background()

	n := 0
	for _, tc := range []struct {
		name, container string
		argv            []string
		want            int32
		wantErr         codes.Code
		check           func(t *testing.T)
	}{
		{name: "sealed exec hook runs", container: "sleeper", argv: spec.HookStub("sleeper", spec.HookPostStart), want: 0, check: func(t *testing.T) {
			if b, err := os.ReadFile(marker); err != nil || string(b) != "ran\n" {
				t.Errorf("the sealed hook did not run: %q %v", b, err)
			}
		}},
		{name: "failing exec hook exits 1", container: "cat", argv: spec.HookStub("cat", spec.HookPostStart), want: 1},
		{name: "sealed http hook with its path and header", container: "cat", argv: spec.HookStub("cat", spec.HookPreStop), want: 0, check: func(t *testing.T) {
			if drained.Load() != 1 {
				t.Errorf("the app got %d sealed requests, want 1", drained.Load())
			}
		}},
		{name: "stub of a hook the container lacks", container: "sleeper", argv: spec.HookStub("sleeper", spec.HookPreStop), wantErr: codes.PermissionDenied},
		{name: "stub of another container", container: "sleeper", argv: spec.HookStub("cat", spec.HookPreStop), wantErr: codes.PermissionDenied},
		{name: "sealed hook argv is not exec-able", container: "cat", argv: []string{"sh", "-c", "exit 7"}, wantErr: codes.PermissionDenied},
		{name: "stub with an extra argument", container: "sleeper", argv: append(spec.HookStub("sleeper", spec.HookPostStart), "x"), wantErr: codes.PermissionDenied},
		{name: "probe stub does not run a hook", container: "sleeper", argv: spec.ProbeStub("sleeper", spec.ProbeLiveness), wantErr: codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n++
			id := "hook-" + strconv.Itoa(n)
			if !runStub(ctx, t, a, tc.container, id, tc.argv, tc.wantErr, tc.want) {
				return
			}
			if tc.check != nil {
				tc.check(t)
			}
		})
	}
}
