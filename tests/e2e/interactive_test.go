//go:build e2e

package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"

	"github.com/sealpod/sealpod/internal/syncbuf"
	"github.com/sealpod/sealpod/tests/internal/proc"
)

// interactive: stdin and terminals of sealed containers (issue 16 item 10; docs/agent.md,
// "Interactive use"). A sealed pod runs busybox: `kubectl exec -it` into the shell the owner
// allowed at seal time (--allow-exec) works through a real terminal (driven here through a
// pty, with a resize that the shell sees), any other argv is refused, and `kubectl attach -i`
// to a container with stdin: true reaches its stdin and streams back its output.
func (c *cluster) interactive(t *testing.T) {
	reg, guestReg := c.env["SEALPOD_REGISTRY"], c.env["SEALPOD_GUEST_REGISTRY"]
	pushed := strings.TrimSpace(proc.Run(t, c.root, nil, filepath.Join(c.bin, "devregistry"), "push-binary",
		"--binary", "/bin/busybox", "--ref", reg+"/sealpod/busybox:e2e", "--path", "/bin/busybox"))
	image := strings.Replace(pushed, reg, guestReg, 1)
	in := filepath.Join(c.work, "interactive.yaml")
	must0(t, os.WriteFile(in, []byte(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: interactive, namespace: default}
spec:
  containers:
  - name: shell
    image: %[1]s
    command: ["/bin/busybox", "sleep", "3600"]
  - name: echo
    image: %[1]s
    command: ["/bin/busybox", "cat"]
    stdin: true
`, image)), 0o644))
	sealed := c.seal(t, in, "interactive", "--allow-exec", "shell=/bin/busybox sh")
	c.kubectl(t, "create", "-f", sealed)
	t.Cleanup(func() { c.kubectlErr("delete", "pod", "interactive", "--wait=true", "--timeout=120s") })
	if _, err := c.kubectlErr("wait", "--for=condition=Ready", "pod/interactive", "--timeout=600s"); err != nil {
		t.Fatalf("sealed pod not Ready: %v\n%s", err, c.describe("pod", "interactive"))
	}

	t.Run("exec-it", func(t *testing.T) {
		term := c.startOnPty(t, 37, 123, "exec", "-it", "interactive", "-c", "shell", "--", "/bin/busybox", "sh")
		term.send(t, "stty size; echo $((6*7))-ok\n")
		term.expect(t, "37 123", "42-ok")
		// kubectl passes its terminal's new size on (SIGWINCH → CRI → shim → agent).
		term.resize(t, 50, 140)
		proc.WaitFor(t, "the shell to see the new size", 30*time.Second, func() bool {
			term.send(t, "stty size\n")
			return term.wait(2*time.Second, "50 140")
		})
		term.send(t, "exit 3\n")
		if err := term.done(t); err == nil || !strings.Contains(err.Error(), "exit status 3") {
			t.Fatalf("kubectl exec -it ended with %v, want the shell's exit status 3; terminal:\n%s", err, term.text())
		}
	})

	t.Run("exec-refused", func(t *testing.T) {
		for _, tc := range []struct {
			ctr  string
			argv []string
		}{
			{"shell", []string{"/bin/busybox", "id"}},
			{"shell", []string{"/bin/busybox", "sh", "-c", "id"}},
			{"echo", []string{"/bin/busybox", "sh"}}, // allowed in shell only
		} {
			args := append([]string{"exec", "interactive", "-c", tc.ctr, "--"}, tc.argv...)
			out, err := c.kubectlErr(args...)
			if err == nil || strings.Contains(out, "uid=") {
				t.Fatalf("kubectl %v was not refused: %q %v", args, out, err)
			}
			if !strings.Contains(err.Error(), "not allowed by the sealed policy") {
				t.Errorf("kubectl %v: %v, want the sealed policy's refusal", args, lastLine(err.Error()))
			}
		}
	})

	t.Run("attach", func(t *testing.T) {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		line := "hello-attach-" + hex.EncodeToString(b)
		cmd := exec.Command(filepath.Join(c.env["KBIN"], "kubectl"), "--kubeconfig", c.env["KUBECONFIG"], "attach", "-i", "interactive", "-c", "echo")
		stdin, err := cmd.StdinPipe()
		must0(t, err)
		out := &syncbuf.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		must0(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		// Written until echoed: kubectl may connect a moment after it starts.
		proc.WaitFor(t, "cat in the sealed container to echo the line (kubectl attach)", 60*time.Second, func() bool {
			if _, err := io.WriteString(stdin, line+"\n"); err != nil {
				t.Fatalf("write to kubectl attach: %v\n%s", err, out.String())
			}
			time.Sleep(500 * time.Millisecond)
			return strings.Contains(out.String(), line)
		})
		// The container's log has it too: the attach went to the container's own stdin.
		proc.WaitFor(t, "the echoed line in kubectl logs", 30*time.Second, func() bool {
			logs, _ := c.kubectlErr("logs", "interactive", "-c", "echo")
			return strings.Contains(logs, line)
		})
	})
}

// ptyCmd is a command whose stdin, stdout and stderr are a pseudo-terminal we hold.
type ptyCmd struct {
	cmd    *exec.Cmd
	master console.Console
	out    syncbuf.Buffer
	ended  chan error
}

// startOnPty runs kubectl with a terminal of rows x cols as its stdio.
func (c *cluster) startOnPty(t *testing.T, rows, cols uint16, args ...string) *ptyCmd {
	t.Helper()
	master, slavePath, err := console.NewPty()
	must0(t, err)
	must0(t, master.Resize(console.WinSize{Height: rows, Width: cols}))
	slave, err := os.OpenFile(slavePath, os.O_RDWR, 0)
	must0(t, err)
	defer slave.Close()
	p := &ptyCmd{master: master, ended: make(chan error, 1)}
	p.cmd = exec.Command(filepath.Join(c.env["KBIN"], "kubectl"), append([]string{"--kubeconfig", c.env["KUBECONFIG"]}, args...)...)
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = slave, slave, slave
	// Its own session with the pty as controlling terminal, so that a resize sends it SIGWINCH.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	must0(t, p.cmd.Start())
	go func() { _, _ = io.Copy(&p.out, master) }()
	go func() { p.ended <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		select {
		case <-p.ended:
		case <-time.After(10 * time.Second):
		}
		master.Close()
	})
	return p
}

func (p *ptyCmd) send(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(p.master, s); err != nil {
		t.Fatalf("write to the terminal: %v", err)
	}
}

func (p *ptyCmd) resize(t *testing.T, rows, cols uint16) {
	t.Helper()
	must0(t, p.master.Resize(console.WinSize{Height: rows, Width: cols}))
}

// wait reports whether every string appeared on the terminal within d.
func (p *ptyCmd) wait(d time.Duration, want ...string) bool {
	deadline := time.Now().Add(d)
	for {
		got := p.out.String()
		all := true
		for _, w := range want {
			all = all && strings.Contains(got, w)
		}
		if all {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *ptyCmd) expect(t *testing.T, want ...string) {
	t.Helper()
	if !p.wait(60*time.Second, want...) {
		t.Fatalf("terminal lacks %q:\n%s", want, p.text())
	}
}

func (p *ptyCmd) text() string { return p.out.String() }

// done waits for the command to end and returns how it ended.
func (p *ptyCmd) done(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.ended:
		return err
	case <-time.After(60 * time.Second):
		t.Fatalf("kubectl did not end; terminal:\n%s", p.text())
		return nil
	}
}
