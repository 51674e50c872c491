package guest_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/internal/testdeps"
	"github.com/sealpod/sealpod/tests/internal/proc"
	"github.com/sealpod/sealpod/tests/qemuvm"
)

// escapeProbePaths exist in the agent's root (its binary, the workload key) and never in a
// container's image.
var escapeProbePaths = []string{"/init", "/run/sealpod/tls/key.pem"}

// pushEscapeImage builds tests/guest/internal/escape and pushes it as an image holding only
// /escape; it returns the reference as the guest pulls it.
func (s *e2eStack) pushEscapeImage(t *testing.T) string {
	t.Helper()
	proc.Run(t, s.root, []string{"CGO_ENABLED=0", "GOFLAGS=-buildvcs=false"}, "go", "build", "-o", filepath.Join(s.bin, "escape"), "./tests/guest/internal/escape")
	out := proc.Run(t, s.root, nil, filepath.Join(s.bin, "devregistry"), "push-binary", "--binary", filepath.Join(s.bin, "escape"),
		"--ref", fmt.Sprintf("127.0.0.1:%d/sealpod/escape:e2e", s.regPort), "--path", "/escape")
	return strings.Replace(strings.TrimSpace(out), "127.0.0.1:", slirpHost+":", 1)
}

// runToEnd creates and starts a sealed container and returns its stdout once it exited 0.
func runToEnd(t *testing.T, g *guestVM, name string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := g.agent.CreateContainer(ctx, &api.CreateContainerRequest{Name: name}); err != nil {
		t.Fatalf("CreateContainer %s: %v\nconsole:\n%s", name, err, g.vm.Console())
	}
	if _, err := g.agent.StartContainer(ctx, &api.ContainerRequest{Name: name}); err != nil {
		t.Fatalf("StartContainer %s: %v\nconsole:\n%s", name, err, g.vm.Console())
	}
	stdout, _ := readStream(t, g.agent, name, "", false)
	stderr, _ := readStream(t, g.agent, name, "", true)
	w, err := g.agent.WaitProcess(ctx, &api.ProcessRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	if w.ExitStatus != 0 {
		t.Fatalf("%s: exit %d, stdout %q, stderr %q", name, w.ExitStatus, stdout, stderr)
	}
	t.Logf("%s:\n%s", name, stdout)
	return stdout
}

// TestContainerIsolation runs, as root in sealed containers of one guest, a chroot escape
// and a syscall the default seccomp profile denies: containers are isolated as under runc
// (pivot_root into the container's root, seccomp).
func TestContainerIsolation(t *testing.T) {
	if _, err := qemuvm.Available(); err != nil {
		testdeps.Missing(t, "the guest end-to-end suite: %v", err)
	}
	s := newE2EStack(t)
	ref := s.pushEscapeImage(t)
	root := int64(0)
	probe := func(name string, sc spec.SecurityContext, args ...string) spec.Container {
		sc.RunAsUser = &root
		return spec.Container{Name: name, Image: ref, Command: []string{"/escape"}, Args: args, SecurityContext: &sc}
	}
	sp := &spec.Spec{
		Version: spec.Version, Workload: "isolation", Pod: "default/isolation",
		Containers: []spec.Container{
			probe("escape", spec.SecurityContext{}, append([]string{"chroot"}, escapeProbePaths...)...),
			probe("escape-admin", spec.SecurityContext{CapAdd: []string{"SYS_ADMIN"}}, append([]string{"setns"}, escapeProbePaths...)...),
			probe("seccomp-default", spec.SecurityContext{}, "add_key"),
			probe("seccomp-unconfined", spec.SecurityContext{SeccompProfile: &spec.SeccompProfile{Type: spec.SeccompUnconfined}}, "add_key"), // new-api
			probe("seccomp-localhost", spec.SecurityContext{SeccompProfile: &spec.SeccompProfile{Type: spec.SeccompLocalhost, LocalhostProfile: "deny-keys.json", // new-api
				Profile: []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["add_key"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}`)}}, "add_key"), // new-api
		},
		Identity: spec.Identity{SANs: []string{"isolation.default.svc.cluster.local"}, TLSDir: spec.DefaultTLSDir},
		Policy:   spec.Policy{Logs: spec.LogsAllow},
	}
	env := s.seal(t, sp, sp.Identity.SANs)
	g := s.boot(t, "", s.launchFor(t, s.bundle, env))
	t.Cleanup(func() { shutdown(t, g) })
	if _, err := g.agent.Unseal(context.Background(), &api.UnsealRequest{Envelope: env, Network: slirpNetwork()}); err != nil {
		t.Fatalf("Unseal: %v", err)
	}
	t.Logf("agent ready after %v", g.ready.Round(time.Millisecond))
	// The agent moved "/" off the initramfs at boot (the line carries the cost).
	switched := ""
	for _, l := range strings.Split(g.vm.Console(), "\n") {
		if strings.Contains(l, "root moved off the initramfs") {
			switched = l
		}
	}
	if switched == "" {
		t.Errorf("the agent did not report leaving the initramfs; console:\n%s", g.vm.Console())
	}
	t.Logf("boot: %s", switched)

	for _, c := range []struct{ name, desc string }{
		{"escape", "chroot escape (CAP_SYS_CHROOT)"},
		{"escape-admin", "umount of / and setns (CAP_SYS_ADMIN)"},
	} {
		t.Run(c.desc, func(t *testing.T) {
			out := runToEnd(t, g, c.name)
			// Each step of the escape runs (the capabilities allow it; an error here would
			// make the test say nothing) ...
			if c.name == "escape" {
				for _, step := range []string{"mkdir", "chroot-jail", "chdir-up", "chroot-dot"} {
					if !strings.Contains(out, "step "+step+" ok\n") {
						t.Fatalf("escape step %s did not run as expected:\n%s", step, out)
					}
				}
			} else if !strings.Contains(out, "step open-ns ok\n") || !strings.Contains(out, "step setns ok\n") {
				t.Fatalf("escape steps did not run as expected:\n%s", out)
			}
			// ... but leads nowhere: nothing of the agent's root is in the container's
			// mount namespace (pivot_root detached it).
			for _, p := range escapeProbePaths {
				if !strings.Contains(out, "read "+p+" ENOENT\n") {
					t.Errorf("after the escape attempt, %s is not absent:\n%s", p, out)
				}
			}
		})
	}
	t.Run("seccomp", func(t *testing.T) {
		for _, c := range []struct{ name, want string }{
			{"seccomp-default", "add_key EPERM\n"},
			{"seccomp-unconfined", "add_key ok\n"},    // new-api
			{"seccomp-localhost", "add_key ENOSYS\n"}, // new-api
		} {
			if out := runToEnd(t, g, c.name); out != c.want {
				t.Errorf("%s: got %q, want %q", c.name, out, c.want)
			}
		}
	})
}
