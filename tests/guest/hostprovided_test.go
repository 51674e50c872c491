package guest_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/internal/testdeps"
	"github.com/sealpod/sealpod/tests/qemuvm"
)

// TestHostProvided: host-provided values (issue 16 items 1-2) in the real guest over the real
// agent API: a hostObject volume filled by UpdateHostFiles (the second update, a rotation,
// wins) and a secretKeyRef env var taken from CreateContainer's host_env by name. The
// workload's report mode prints $SEALPOD_GREETING and the file $SEALPOD_TLS_DIR/cert.pem,
// here pointed at the host-provided volume. Bad host input is refused by kind.
func TestHostProvided(t *testing.T) {
	if _, err := qemuvm.Available(); err != nil {
		testdeps.Missing(t, "the guest end-to-end suite: %v", err)
	}
	s := newE2EStack(t)
	sp := &spec.Spec{
		Version: spec.Version, Workload: "hostprov", Pod: "default/hostprov",
		Containers: []spec.Container{{Name: "app", Image: s.imageRef, Command: []string{"/workload"}, Args: []string{"report"},
			Env: []spec.EnvVar{
				{Name: "SEALPOD_GREETING", FromHost: spec.HostSecretKeyRef + "runtime-secret/greeting"},
				{Name: "SEALPOD_TLS_DIR", Value: "/creds"},
			},
			Mounts: []spec.Mount{{Volume: "creds", Path: "/creds"}}}},
		Volumes:  []spec.Volume{{Name: "creds", Kind: spec.VolumeHostObject, Objects: []spec.ObjectRef{{Kind: "Secret", Name: "runtime-secret"}}}},
		Identity: spec.Identity{SANs: []string{"hostprov.default.svc.cluster.local"}, TLSDir: spec.DefaultTLSDir},
		Policy:   spec.Policy{Logs: spec.LogsAllow},
	}
	env := s.seal(t, sp, sp.Identity.SANs)
	g := s.boot(t, "", s.launchFor(t, s.bundle, env))
	t.Cleanup(func() { shutdown(t, g) })
	ctx := context.Background()
	if _, err := g.agent.Unseal(ctx, &api.UnsealRequest{Envelope: env, Network: slirpNetwork()}); err != nil {
		t.Fatalf("Unseal: %v", err)
	}
	_, err := g.agent.UpdateHostFiles(ctx, &api.UpdateHostFilesRequest{Volume: "creds", Files: []*api.HostFile{{Path: "../escape", Data: []byte("x")}}})
	wantStatus(t, "escaping path", err, codes.InvalidArgument, "invalid host-provided files")
	_, err = g.agent.UpdateHostFiles(ctx, &api.UpdateHostFilesRequest{Volume: "other", Files: nil})
	wantStatus(t, "unknown volume", err, codes.InvalidArgument, api.NotHostVolume)
	for _, v := range []string{"host-cert-v1\n", "host-cert-v2-rotated\n"} {
		if _, err := g.agent.UpdateHostFiles(ctx, &api.UpdateHostFilesRequest{Volume: "creds", Files: []*api.HostFile{{Path: "cert.pem", Mode: 0o644, Data: []byte(v)}}}); err != nil {
			t.Fatalf("UpdateHostFiles: %v", err)
		}
	}
	_, err = g.agent.CreateContainer(ctx, &api.CreateContainerRequest{Name: "app", HostEnv: []string{"OTHER=x"}})
	wantStatus(t, "required host value missing", err, codes.Internal, "invalid or missing host-provided env")
	if _, err := g.agent.CreateContainer(ctx, &api.CreateContainerRequest{Name: "app", HostEnv: []string{"PATH=/bin", "SEALPOD_GREETING=from-the-host $(HOME)"}}); err != nil {
		t.Fatalf("CreateContainer: %v\nconsole:\n%s", err, g.vm.Console())
	}
	if _, err := g.agent.StartContainer(ctx, &api.ContainerRequest{Name: "app"}); err != nil {
		t.Fatal(err)
	}
	stdout, _ := readStream(t, g.agent, "app", "", false)
	w, err := g.agent.WaitProcess(ctx, &api.ProcessRequest{Name: "app"})
	if err != nil {
		t.Fatal(err)
	}
	want := "hello from the sealed pod\ngreeting=from-the-host $(HOME)\nhost-cert-v2-rotated\n"
	if w.ExitStatus != 7 || stdout != want {
		t.Fatalf("app: exit %d, stdout %q, want 7 and %q", w.ExitStatus, stdout, want)
	}
	if strings.Contains(g.vm.Console(), "from-the-host") {
		t.Errorf("host value echoed on the console")
	}
}
