package containers

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// TestTTYResize: kubectl exec -it and attach -t resize the terminal; the process sees the
// new size (stty size reads the pty's window), for an exec and for the main container.
func TestTTYResize(t *testing.T) {
	f := newPod(t,
		spec.Container{Name: "main", Command: []string{"sleep", "1000"}},
		spec.Container{Name: "term", Command: []string{"sh", "-c", "read line; stty size"}, TTY: true, Stdin: true},
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := f.m.Create(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = collect(c.Stdout()), collect(c.Stderr())
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Resize(100, 30); err == nil {
		t.Error("resize of a container without a tty succeeded")
	}
	tc, err := f.m.Create(ctx, "term")
	if err != nil {
		t.Fatal(err)
	}
	tout := collect(tc.Stdout())
	if err := tc.Start(); err != nil {
		t.Fatal(err)
	}
	p, err := c.Exec(ctx, []string{"sh", "-c", "read line; stty size"}, ExecOptions{TTY: true, Stdin: true})
	if err != nil {
		t.Fatal(err)
	}
	pout := collect(p.Stdout())
	for _, tc := range []struct {
		name       string
		resize     func(w, h uint16) error
		stdin      io.Writer
		wait       func(context.Context) (int, error)
		out        *output
		cols, rows uint16
		want       string
	}{
		{"exec", p.Resize, p.Stdin(), p.Wait, pout, 101, 33, "33 101"},
		{"container", tc.Resize, tc.Stdin(), tc.Wait, tout, 222, 7, "7 222"},
	} {
		if err := tc.resize(tc.cols, tc.rows); err != nil {
			t.Fatalf("%s: resize: %v", tc.name, err)
		}
		if _, err := io.WriteString(tc.stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
		if code, err := tc.wait(ctx); err != nil || code != 0 {
			t.Fatalf("%s: exit %d %v", tc.name, code, err)
		}
		if got := tc.out.wait(t); !strings.Contains(got, tc.want) {
			t.Errorf("%s: output %q, want the size %q", tc.name, got, tc.want)
		}
	}
}
