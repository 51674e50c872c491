package server

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// TestResizeProcess: the host's terminal size reaches a process with a tty (the sealed tty
// container, an exec started with tty), bounded; anything else is refused with a reason.
func TestResizeProcess(t *testing.T) {
	sp := execSpec(spec.LogsAllow)
	sp.Containers = append(sp.Containers, spec.Container{Name: "term", Image: "r.example/t@sha256:" + strings.Repeat("d", 64), Command: []string{"sleep", "30"}, TTY: true, Stdin: true})
	h := unsealedHarness(t, sp, nil)
	ctx := context.Background()
	ops := podOps{t: t, a: h.agent}
	ops.create("term")
	resize := func(name, exec string, rows, cols uint32) error {
		_, err := h.agent.ResizeProcess(ctx, &api.ResizeProcessRequest{Name: name, ExecId: exec, Rows: rows, Cols: cols})
		return err
	}
	// Before start: no terminal yet.
	wantCode(t, resize("term", "", 24, 80), codes.FailedPrecondition, "not started")
	ops.start("term")
	ops.up("sleeper")
	if _, err := h.agent.ExecProcess(ctx, &api.ExecProcessRequest{Name: "sleeper", ExecId: "tty", Argv: []string{"sleep", "30"}, Tty: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.agent.ExecProcess(ctx, &api.ExecProcessRequest{Name: "sleeper", ExecId: "plain", Argv: []string{"sleep", "30"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, ctr, exec string
		rows, cols      uint32
		code            codes.Code
		msg             string
	}{
		{"container", "term", "", 40, 120, codes.OK, ""},
		{"exec", "sleeper", "tty", 50, 200, codes.OK, ""},
		{"largest", "term", "", api.MaxTermSize, api.MaxTermSize, codes.OK, ""},
		{"zero rows", "term", "", 0, 80, codes.InvalidArgument, "want 1..4096"},
		{"zero cols", "term", "", 24, 0, codes.InvalidArgument, "want 1..4096"},
		{"too many cols", "term", "", 24, api.MaxTermSize + 1, codes.InvalidArgument, "want 1..4096"},
		{"beyond uint16", "term", "", 1 << 16, 80, codes.InvalidArgument, "want 1..4096"},
		{"no tty container", "sleeper", "", 24, 80, codes.FailedPrecondition, "not a terminal"},
		{"no tty exec", "sleeper", "plain", 24, 80, codes.FailedPrecondition, "not a terminal"},
		{"unknown exec", "sleeper", "nope", 24, 80, codes.NotFound, "unknown"},
		{"malformed exec id", "sleeper", "bad id!", 24, 80, codes.InvalidArgument, "malformed"},
		{"unknown container", "evil", "", 24, 80, codes.NotFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := resize(tc.ctr, tc.exec, tc.rows, tc.cols)
			if tc.code != codes.OK {
				wantCode(t, err, tc.code, tc.msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			h.backend.lastPod.mu.Lock()
			fp := h.backend.lastPod.ctrs[tc.ctr]
			h.backend.lastPod.mu.Unlock()
			var got [2]uint16
			if tc.exec == "" {
				got = fp.lastSize()
			} else {
				h.srv.mu.Lock()
				got = h.srv.ctrs[tc.ctr].execs[tc.exec].p.(*fakeProc).lastSize()
				h.srv.mu.Unlock()
			}
			if want := [2]uint16{uint16(tc.cols), uint16(tc.rows)}; got != want {
				t.Errorf("size %v, want %v (cols, rows)", got, want)
			}
		})
	}
}
