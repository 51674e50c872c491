package guest_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/internal/testdeps"
	"github.com/sealpod/sealpod/tests/qemuvm"
)

func wantStatus(t *testing.T, what string, err error, code codes.Code, inMsg string) {
	t.Helper()
	st, _ := status.FromError(err)
	if err == nil || st.Code() != code || !strings.Contains(strings.ToLower(st.Message()), strings.ToLower(inMsg)) {
		t.Fatalf("%s: got %v, want %s mentioning %q", what, err, code, inMsg)
	}
	t.Logf("%s refused as expected: %s", what, st.Message())
}

// tamperEnvelope changes one base64 character in the middle of the body; the envelope still
// parses (canonical), only its digest and ciphertext change.
func tamperEnvelope(t *testing.T, env []byte) []byte {
	t.Helper()
	out := bytes.Clone(env)
	i := bytes.Index(out, []byte(`"body":"`)) + len(`"body":"`) + 16
	if out[i] == 'A' {
		out[i] = 'B'
	} else {
		out[i] = 'A'
	}
	if _, err := envelope.ParseHeader(out); err != nil {
		t.Fatal(err)
	}
	return out
}

func podSpec(s *e2eStack, workload, logs string) *spec.Spec {
	return &spec.Spec{
		Version: spec.Version, Workload: workload, Pod: "default/" + workload,
		Containers: []spec.Container{
			{Name: "app", Image: s.imageRef, Command: []string{"/workload"}, Args: []string{"report"},
				Env: []spec.EnvVar{{Name: "SEALPOD_GREETING", Value: "sealed-greeting-" + workload}, {Name: "SEALPOD_TLS_DIR", Value: spec.DefaultTLSDir}}},
			{Name: "server", Image: s.imageRef, Command: []string{"/workload"}, Args: []string{"serve"}},
		},
		Identity: spec.Identity{SANs: []string{workload + ".default.svc.cluster.local", "10.0.2.15"}, TLSDir: spec.DefaultTLSDir},
		Policy:   spec.Policy{Logs: logs, Exec: []spec.ExecRule{{Container: "server", Argv: []string{"/workload", "probe"}}}},
	}
}

// TestSealedPod is the acceptance suite of the measured guest and its agent: three TCG
// boots of the guest built by mkguest around the agent, against a real sealpod-kbs.
func TestSealedPod(t *testing.T) {
	if _, err := qemuvm.Available(); err != nil {
		testdeps.Missing(t, "the guest end-to-end suite: %v", err)
	}
	s := newE2EStack(t)
	ctx := context.Background()

	t.Run("run", func(t *testing.T) {
		sans := []string{"web.default.svc.cluster.local", "10.0.2.15"}
		env := s.seal(t, podSpec(s, "web", spec.LogsAllow), sans)
		good := s.launchFor(t, s.bundle, env)
		g := s.boot(t, "", good)
		a := g.agent

		// Negative cases against the same VM before the good Unseal.
		bad := tamperEnvelope(t, env)
		_, err := a.Unseal(ctx, &api.UnsealRequest{Envelope: bad, Network: slirpNetwork()})
		wantStatus(t, "one-byte change to the envelope", err, codes.PermissionDenied, "HOST_DATA")
		l := good
		l.HostData[0] ^= 1
		g.setLaunch(l)
		_, err = a.Unseal(ctx, &api.UnsealRequest{Envelope: env, Network: slirpNetwork()})
		wantStatus(t, "one-byte change to HOST_DATA", err, codes.PermissionDenied, "HOST_DATA")
		g.setLaunch(s.launchFor(t, s.bundle, bad))
		_, err = a.Unseal(ctx, &api.UnsealRequest{Envelope: bad, Network: slirpNetwork()})
		wantStatus(t, "changed envelope launched with its own digest", err, codes.PermissionDenied, "host_data")
		g.setLaunch(good)
		_, err = a.CreateContainer(ctx, &api.CreateContainerRequest{Name: "app"})
		wantStatus(t, "create before unseal", err, codes.FailedPrecondition, "sealed")

		tUnseal := time.Now()
		u, err := a.Unseal(ctx, &api.UnsealRequest{Envelope: env, Network: slirpNetwork()})
		if err != nil {
			t.Fatalf("Unseal: %v", err)
		}
		unsealed := time.Since(tUnseal)
		if u.Workload != "web" || !slices.Equal(u.Containers, []string{"app", "server"}) || u.EnvelopeDigest != envelope.Sum(env).String() {
			t.Fatalf("Unseal answer %+v", u)
		}

		// The host may drop and re-open its connection (shim restart): the agent keeps its state.
		g.reconnect(t)
		a = g.agent
		pctx, pcancel := context.WithTimeout(ctx, 60*time.Second)
		p, err := a.Ping(pctx, &api.PingRequest{})
		pcancel()
		if err != nil || p.State != api.StateUnsealed || p.Workload != "web" {
			t.Fatalf("Ping after reconnecting: %v %v", p, err)
		}

		_, err = a.CreateContainer(ctx, &api.CreateContainerRequest{Name: "evil"})
		wantStatus(t, "unknown container", err, codes.NotFound, "not in the sealed spec")

		tCreate := time.Now()
		cr, err := a.CreateContainer(ctx, &api.CreateContainerRequest{Name: "app"})
		if err != nil {
			t.Fatalf("CreateContainer app: %v", err)
		}
		pulled := time.Since(tCreate)
		tStart := time.Now()
		if _, err := a.StartContainer(ctx, &api.ContainerRequest{Name: "app"}); err != nil {
			t.Fatalf("StartContainer app: %v", err)
		}
		started := time.Since(tStart)
		stdout, denied := readStream(t, a, "app", "", false)
		stderr, _ := readStream(t, a, "app", "", true)
		w, err := a.WaitProcess(ctx, &api.ProcessRequest{Name: "app"})
		if err != nil {
			t.Fatal(err)
		}
		ran := time.Since(tStart)
		if w.ExitStatus != 7 || denied || !strings.HasPrefix(stdout, "hello from the sealed pod\ngreeting=sealed-greeting-web\n") || stderr != "report done\n" {
			t.Fatalf("app: exit %d, denied %v, stdout %q, stderr %q", w.ExitStatus, denied, stdout, stderr)
		}
		checkWorkloadCert(t, s, stdout, sans)

		// Exec policy and signals on a running container.
		if _, err := a.CreateContainer(ctx, &api.CreateContainerRequest{Name: "server"}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.StartContainer(ctx, &api.ContainerRequest{Name: "server"}); err != nil {
			t.Fatal(err)
		}
		_, err = a.ExecProcess(ctx, &api.ExecProcessRequest{Name: "server", ExecId: "sh", Argv: []string{"/workload", "report"}})
		wantStatus(t, "exec of an argv the policy does not list", err, codes.PermissionDenied, "not allowed by the sealed policy")
		_, err = a.ExecProcess(ctx, &api.ExecProcessRequest{Name: "app", ExecId: "p", Argv: []string{"/workload", "probe"}})
		wantStatus(t, "exec in a container the rule does not name", err, codes.PermissionDenied, "not allowed")
		_, err = a.ExecProcess(ctx, &api.ExecProcessRequest{Name: "ghost", ExecId: "p", Argv: []string{"/workload", "probe"}})
		wantStatus(t, "exec in an unknown container", err, codes.NotFound, "not in the sealed spec")
		if _, err := a.ExecProcess(ctx, &api.ExecProcessRequest{Name: "server", ExecId: "probe-1", Argv: []string{"/workload", "probe"}}); err != nil {
			t.Fatalf("allowed exec: %v", err)
		}
		if out, _ := readStream(t, a, "server", "probe-1", false); out != "probe ok\n" {
			t.Fatalf("probe output %q", out)
		}
		if w, err := a.WaitProcess(ctx, &api.ProcessRequest{Name: "server", ExecId: "probe-1"}); err != nil || w.ExitStatus != 0 {
			t.Fatalf("probe exit %v %v", w, err)
		}
		// Exec probes are what the kubelet runs every few seconds with a 1 s timeout: log how
		// long a probe takes from ExecProcess to its exit, five times (docs/runtime.md).
		for i := range 5 {
			t0 := time.Now()
			id := fmt.Sprintf("probe-t%d", i)
			if _, err := a.ExecProcess(ctx, &api.ExecProcessRequest{Name: "server", ExecId: id, Argv: []string{"/workload", "probe"}}); err != nil {
				t.Fatalf("exec %s: %v", id, err)
			}
			if w, err := a.WaitProcess(ctx, &api.ProcessRequest{Name: "server", ExecId: id}); err != nil || w.ExitStatus != 0 {
				t.Fatalf("probe %s exit %v %v", id, w, err)
			}
			t.Logf("exec probe %d: %v from ExecProcess to exit", i, time.Since(t0).Round(time.Millisecond))
		}
		if st, err := a.StatsContainer(ctx, &api.ContainerRequest{Name: "server"}); err != nil || st.Pids < 1 || st.MemoryUsageBytes == 0 {
			t.Fatalf("StatsContainer server: %v %v", st, err)
		}
		if _, err := a.SignalProcess(ctx, &api.SignalProcessRequest{Name: "server", Signal: uint32(syscall.SIGTERM)}); err != nil {
			t.Fatal(err)
		}
		if w, err := a.WaitProcess(ctx, &api.ProcessRequest{Name: "server"}); err != nil || w.ExitStatus != 0 {
			t.Fatalf("server after SIGTERM: %v %v", w, err)
		}
		if out, _ := readStream(t, a, "server", "", false); out != "serving\nterminated\n" {
			t.Fatalf("server output %q", out)
		}
		if _, err := a.RemoveContainer(ctx, &api.ContainerRequest{Name: "app"}); err != nil {
			t.Fatalf("RemoveContainer: %v", err)
		}
		shutdown(t, g)
		// The console is host-visible: no sealed value may appear on it.
		_, digest, _ := strings.Cut(s.imageRef, "@")
		for _, sealed := range []string{digest, "sealed-greeting-web", "/workload", "default/web"} {
			if strings.Contains(g.vm.Console(), sealed) {
				t.Fatalf("sealed value %q appears on the host-visible console", sealed)
			}
		}
		tm := u.Times
		t.Logf("phase times under TCG: boot→ready %v | unseal %v (in guest: total %v, network %v, auth %v, evidence %v, attest %v, key %v, open %v, certificate %v, pod start %v) | create (pull+unpack+create) %v (guest %v) | start %v | start→exit with output read %v",
			g.ready.Round(time.Millisecond), unsealed.Round(time.Millisecond), us(tm.TotalUs), us(tm.NetworkUs), us(tm.AuthUs), us(tm.EvidenceUs), us(tm.AttestUs), us(tm.KeyUs), us(tm.OpenUs), us(tm.CertificateUs), us(tm.PodUs),
			pulled.Round(time.Millisecond), us(cr.CreateUs), started.Round(time.Millisecond), ran.Round(time.Millisecond))
	})

	t.Run("logs-deny", func(t *testing.T) {
		env := s.seal(t, podSpec(s, "quiet", spec.LogsDeny), []string{"quiet.default.svc.cluster.local"})
		g := s.boot(t, "", s.launchFor(t, s.bundle, env))
		a := g.agent
		if _, err := a.Unseal(ctx, &api.UnsealRequest{Envelope: env, Network: slirpNetwork()}); err != nil {
			t.Fatalf("Unseal: %v", err)
		}
		if _, err := a.CreateContainer(ctx, &api.CreateContainerRequest{Name: "app"}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.StartContainer(ctx, &api.ContainerRequest{Name: "app"}); err != nil {
			t.Fatal(err)
		}
		w, err := a.WaitProcess(ctx, &api.ProcessRequest{Name: "app"})
		if err != nil || w.ExitStatus != 7 {
			t.Fatalf("app: %v %v, want exit 7", w, err)
		}
		for _, stderr := range []bool{false, true} {
			if out, denied := readStream(t, a, "app", "", stderr); out != "" || !denied {
				t.Fatalf("logs: deny: host read %q (denied=%v)", out, denied)
			}
		}
		if c := g.vm.Console(); strings.Contains(c, "sealed-greeting-quiet") || strings.Contains(c, "hello from the sealed pod") {
			t.Fatal("logs: deny: the workload's output reached the host console")
		}
		shutdown(t, g)
	})

	t.Run("initrd-changed", func(t *testing.T) {
		env := s.seal(t, podSpec(s, "changed", spec.LogsAllow), []string{"changed.default.svc.cluster.local"})
		// One byte appended to the initrd: the kernel skips zero padding between archives, so
		// the guest boots, but the simulated AMD-SP measures what it booted.
		tampered := filepath.Join(t.TempDir(), "initrd.img")
		if err := os.WriteFile(tampered, append(bytes.Clone(s.bundle.Initrd), 0), 0o644); err != nil {
			t.Fatal(err)
		}
		tb := *s.bundle
		tb.Initrd = append(bytes.Clone(s.bundle.Initrd), 0)
		l := s.launchFor(t, &tb, env)
		if hex.EncodeToString(l.Measurement[:]) == s.bundle.Config.Measurements.Sim {
			t.Fatal("the changed initrd has the reference measurement")
		}
		g := s.boot(t, tampered, l)
		_, err := g.agent.Unseal(ctx, &api.UnsealRequest{Envelope: env, Network: slirpNetwork()})
		wantStatus(t, "one-byte change to the initrd", err, codes.PermissionDenied, "measurement")
		shutdown(t, g)
	})
}

func us(v int64) time.Duration {
	return (time.Duration(v) * time.Microsecond).Round(100 * time.Microsecond)
}

func shutdown(t *testing.T, g *guestVM) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := g.agent.Shutdown(ctx, &api.ShutdownRequest{}); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := g.vm.Wait(ctx); err != nil {
		t.Fatalf("guest did not power off: %v", err)
	}
}

// checkWorkloadCert verifies the chain the container printed against the broker's mesh root
// and checks the SANs are exactly the registered ones.
func checkWorkloadCert(t *testing.T, s *e2eStack, stdout string, sans []string) {
	t.Helper()
	blocks := pemBlockRe.FindAllString(stdout, -1)
	if len(blocks) < 2 {
		t.Fatalf("container printed %d certificates, want leaf and intermediate", len(blocks))
	}
	var certs []*x509.Certificate
	for _, b := range blocks {
		p, _ := pem.Decode([]byte(b))
		c, err := x509.ParseCertificate(p.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: s.meshRoots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("workload certificate does not verify against the KBS mesh CA: %v", err)
	}
	got := append([]string(nil), certs[0].DNSNames...)
	for _, ip := range certs[0].IPAddresses {
		got = append(got, ip.String())
	}
	if len(certs[0].URIs) > 0 || !slices.Equal(got, sans) {
		t.Fatalf("workload certificate SANs %v (URIs %v), want exactly %v", got, certs[0].URIs, sans)
	}
	t.Logf("workload certificate %s verifies against the KBS mesh CA with SANs %v", certs[0].Subject, got)
}
