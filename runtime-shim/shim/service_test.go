package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/events"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/guest-image/bundletest"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/runtime-shim/config"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
)

type recorder struct {
	mu     sync.Mutex
	topics []string
	exits  []*eventstypes.TaskExit
}

func (r *recorder) Publish(ctx context.Context, topic string, ev events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.topics = append(r.topics, topic)
	if e, ok := ev.(*eventstypes.TaskExit); ok {
		r.exits = append(r.exits, e)
	}
	return nil
}
func (r *recorder) Close() error { return nil }

type noShutdown struct{ called bool }

func (n *noShutdown) Shutdown()                                    { n.called = true }
func (n *noShutdown) RegisterCallback(func(context.Context) error) {}
func (n *noShutdown) Done() <-chan struct{}                        { return nil }
func (n *noShutdown) Err() error                                   { return nil }

func newTestService(t *testing.T) (*Service, *recorder, *noShutdown) {
	t.Helper()
	rec, sd := &recorder{}, &noShutdown{}
	s := &Service{ctx: context.Background(), pub: rec, sd: sd, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		cfg: &config.Config{TEE: "sim", SimKey: "/nonexistent", StateDir: t.TempDir()}, tasks: map[string]*task{}, creating: map[string]bool{}}
	s.cfg.Defaults()
	return s, rec, sd
}

func writeBundle(t *testing.T, ann map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	writeSpec(t, dir, specs.Spec{Version: "1.0.2", Hostname: "web-0", Annotations: ann})
	return dir
}

// writeSpec writes sp as the OCI bundle's config.json in dir.
func writeSpec(t *testing.T, dir string, sp specs.Spec) {
	t.Helper()
	b, err := json.Marshal(sp)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSandboxLifecycle runs the sandbox record through create/start/kill/wait/delete/shutdown
// and checks the events and exit status containerd sees.
func TestSandboxLifecycle(t *testing.T) {
	s, rec, sd := newTestService(t)
	ctx := context.Background()
	sb := writeBundle(t, map[string]string{AnnotationContainerType: containerTypeSandbox, AnnotationSandboxID: "sb1",
		"sealpod.io/workload": "default.pod.web", "other.io/x": "dropped", AnnotationSandboxName: "web"})
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "sb1", Bundle: sb}); err != nil {
		t.Fatal(err)
	}
	if s.annotations["sealpod.io/workload"] != "default.pod.web" || s.annotations["other.io/x"] != "" || s.hostname != "web-0" {
		t.Fatalf("recorded annotations %v hostname %q", s.annotations, s.hostname)
	}
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "sb2", Bundle: sb}); !errdefs.IsAlreadyExists(errdefs.FromGRPC(err)) {
		t.Fatalf("second sandbox in one shim: %v", err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "sb1"}); err != nil {
		t.Fatal(err)
	}
	st, err := s.State(ctx, &taskAPI.StateRequest{ID: "sb1"})
	if err != nil || st.Status.String() != "RUNNING" {
		t.Fatalf("State: %v %v", st, err)
	}
	stats, err := s.Stats(ctx, &taskAPI.StatsRequest{ID: "sb1"})
	if err != nil || stats.Stats.GetTypeUrl() != "io.containerd.cgroups.v1.Metrics" {
		t.Fatalf("Stats of the sandbox: %v %v", stats, err)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "sb1"}); err == nil {
		t.Fatal("Delete of a running sandbox succeeded")
	}
	if _, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "sb1", Signal: 9}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	w, err := s.Wait(wctx, &taskAPI.WaitRequest{ID: "sb1"})
	if err != nil || w.ExitStatus != 137 {
		t.Fatalf("Wait: %v %v, want exit 137", w, err)
	}
	if _, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "sb1", Signal: 9}); !errdefs.IsNotFound(errdefs.FromGRPC(err)) {
		t.Fatalf("Kill after exit: %v, want NotFound", err)
	}
	d, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "sb1"})
	if err != nil || d.ExitStatus != 137 {
		t.Fatalf("Delete: %v %v", d, err)
	}
	if _, err := s.Shutdown(ctx, &taskAPI.ShutdownRequest{}); err != nil || !sd.called {
		t.Fatalf("Shutdown with no task left: %v, called %v", err, sd.called)
	}
	if len(rec.exits) != 1 || rec.exits[0].ContainerID != "sb1" || rec.exits[0].ExitStatus != 137 {
		t.Fatalf("exit events %+v", rec.exits)
	}
	for _, topic := range []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"} {
		if !slices.Contains(rec.topics, topic) {
			t.Fatalf("no %s event in %v", topic, rec.topics)
		}
	}
}

func TestCreateRefusals(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		sandbox  bool
		ann      map[string]string
		wantErr  error
		inReason string
	}{
		{"not kubernetes", false, map[string]string{}, ErrNotKubernetes, "kubernetes pods only"},
		{"other sandbox", true, map[string]string{AnnotationContainerType: "container", AnnotationSandboxID: "other", AnnotationContainerName: "app"}, nil, "not served by this shim"},
		{"bad name", true, map[string]string{AnnotationContainerType: "container", AnnotationSandboxID: "sb", AnnotationContainerName: "App_1"}, nil, "name"},
		{"no workload annotation", true, map[string]string{AnnotationContainerType: "container", AnnotationSandboxID: "sb", AnnotationContainerName: "app"}, nil, "sealpod.io/workload"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _, _ := newTestService(t)
			if tc.sandbox {
				sb := writeBundle(t, map[string]string{AnnotationContainerType: containerTypeSandbox, AnnotationSandboxID: "sb"})
				if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "sb", Bundle: sb}); err != nil {
					t.Fatal(err)
				}
			}
			_, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: writeBundle(t, tc.ann)})
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tc.inReason)) {
				t.Fatalf("Create: %v, want an error mentioning %q", err, tc.inReason)
			}
			if _, ok := s.tasks["c1"]; ok {
				t.Fatal("a refused container was recorded")
			}
		})
	}
}

func TestCreateRefusesWithoutConfig(t *testing.T) {
	s, _, _ := newTestService(t)
	s.cfg, s.cfgErr = nil, errors.New("shim config /etc/sealpod/shim.json: no such file")
	_, err := s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "sb", Bundle: writeBundle(t, map[string]string{AnnotationContainerType: containerTypeSandbox})})
	if err == nil || !strings.Contains(err.Error(), "shim.json") {
		t.Fatalf("Create without a node config: %v", err)
	}
}

// secureRootfs lays out a secure image's files the way containerd mounts them at bundle/rootfs.
func secureRootfs(t *testing.T, workload string, env []byte) string {
	t.Helper()
	b := t.TempDir()
	guest := filepath.Join(b, "rootfs", "sealpod", "guest")
	if err := bundletest.WriteDir(guest); err != nil {
		t.Fatal(err)
	}
	sealed := filepath.Join(b, "rootfs", "sealpod", "sealed")
	if err := os.MkdirAll(sealed, 0o755); err != nil {
		t.Fatal(err)
	}
	if env != nil {
		if err := os.WriteFile(filepath.Join(sealed, workload+".json"), env, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestLoadSecureImage(t *testing.T) {
	b := secureRootfs(t, "default.pod.web", []byte(`{"envelope":1}`))
	out := filepath.Join(t.TempDir(), "guest")
	env, err := loadSecureImage(&taskAPI.CreateTaskRequest{Bundle: b}, "default.pod.web", out)
	if err != nil || string(env) != `{"envelope":1}` {
		t.Fatalf("loadSecureImage: %q %v", env, err)
	}
	g, err := bundle.Load(out)
	if err != nil || g.Config.Measurements.Sim == "" {
		t.Fatalf("copied guest bundle: %v", err)
	}
	if _, err := loadSecureImage(&taskAPI.CreateTaskRequest{Bundle: b}, "default.pod.db", filepath.Join(t.TempDir(), "g")); err == nil || !strings.Contains(err.Error(), "default.pod.db") {
		t.Fatalf("missing envelope: %v", err)
	}
}

// TestLoadSecureImageRefusesEscapes: the secure image is the pod owner's; a symlink in it must
// not make the shim read (and boot, or send to the guest) a host file.
func TestLoadSecureImageRefusesEscapes(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "host-secret")
	if err := os.WriteFile(secret, []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := secureRootfs(t, "w", nil)
	if err := os.Symlink(secret, filepath.Join(b, "rootfs", "sealpod", "sealed", "w.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSecureImage(&taskAPI.CreateTaskRequest{Bundle: b}, "w", filepath.Join(t.TempDir(), "g")); err == nil {
		t.Fatal("an envelope symlinked out of the rootfs was read")
	}
	b = secureRootfs(t, "w", []byte("{}"))
	k := filepath.Join(b, "rootfs", "sealpod", "guest", bundle.KernelFile)
	os.Remove(k)
	if err := os.Symlink("../../../../../../../../.."+secret, k); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSecureImage(&taskAPI.CreateTaskRequest{Bundle: b}, "w", filepath.Join(t.TempDir(), "g")); err == nil {
		t.Fatal("a kernel symlinked out of the rootfs was read")
	}
	b = secureRootfs(t, "w", []byte("{}"))
	if err := os.Mkdir(filepath.Join(b, "rootfs", "sealpod", "sealed", "d.json"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSecureImage(&taskAPI.CreateTaskRequest{Bundle: b}, "d", filepath.Join(t.TempDir(), "g")); err == nil || !strings.Contains(err.Error(), "regular") {
		t.Fatalf("a directory as envelope: %v", err)
	}
}

func TestValidWorkload(t *testing.T) {
	for w, want := range map[string]bool{"default.pod.web": true, "": false, "..": false, ".": false, "a/b": false, "../x": false, "a\x00b": false, strings.Repeat("a", 254): false} {
		if got := validWorkload(w); got != want {
			t.Errorf("validWorkload(%q) = %v, want %v", w, got, want)
		}
	}
}

// qemuArgv is the QEMU command the shim would run for v.
func qemuArgv(t *testing.T, v *vmSpec) *qemu.Command {
	t.Helper()
	cfg, err := v.qemuConfig()
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := cfg.Command()
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

func TestVMArgs(t *testing.T) {
	g, err := bundle.Load(bundletest.Write(t))
	if err != nil {
		t.Fatal(err)
	}
	v := &vmSpec{QEMU: "qemu-system-x86_64", Accel: "tcg", TEE: tee.Sim, Name: "sealpod-sb1", Dir: "/run/sealpod/sb1", Guest: g, Network: config.NetworkUser}
	line := strings.Join(qemuArgv(t, v).Args, " ")
	for _, want := range []string{
		"-accel tcg", "-no-reboot", "-kernel " + filepath.Join(g.Dir, bundle.KernelFile),
		"-append console=hvc0 quiet", "-sandbox " + qemu.Sandbox,
		"path=/run/sealpod/sb1/agent.sock,server=on,wait=off", "name=sealpod.agent",
		"path=/run/sealpod/sb1/sp.sock,server=on,wait=off", "name=sealpod.sim-sp",
		"-netdev user,id=net0 -device virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,romfile=",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("QEMU args lack %q:\n%s", want, line)
		}
	}
	if strings.Contains(line, "-bios") {
		t.Error("-bios without firmware in the bundle or emulatedBIOS")
	}
	// The node config's emulatedBIOS (default qboot): the sim VM boots it; a missing file is an
	// error naming the setting, never a silent SeaBIOS; "seabios" means QEMU's own.
	bios := filepath.Join(t.TempDir(), "qboot.rom")
	if err := os.WriteFile(bios, []byte("bios"), 0o644); err != nil {
		t.Fatal(err)
	}
	withBIOS := *v
	withBIOS.EmulatedBIOS = bios
	if l := strings.Join(qemuArgv(t, &withBIOS).Args, " "); !strings.Contains(l, "-bios "+bios+" ") {
		t.Errorf("emulatedBIOS %s not booted:\n%s", bios, l)
	}
	withBIOS.EmulatedBIOS = bios + ".missing"
	if _, err := withBIOS.qemuConfig(); err == nil || !strings.Contains(err.Error(), "emulatedBIOS") {
		t.Errorf("missing emulatedBIOS: %v", err)
	}
	withBIOS.EmulatedBIOS = config.EmulatedBIOSSeaBIOS
	if l := strings.Join(qemuArgv(t, &withBIOS).Args, " "); strings.Contains(l, "-bios") {
		t.Errorf("emulatedBIOS seabios gave a -bios:\n%s", l)
	}
	if strings.Contains(line, "-pidfile") {
		t.Error("QEMU writes a pid file: it must write nothing in the state directory")
	}
	bad := *v
	bad.Dir = "/run/sealpod/a,b"
	if _, err := bad.qemuConfig(); err == nil {
		t.Error("a comma in the state dir was accepted")
	}
	bad = *v
	bad.Network = config.NetworkTap
	if _, err := bad.qemuConfig(); err == nil {
		t.Error("network tap without a tap device accepted")
	}
	tap := *v
	tap.Network = config.NetworkTap
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mac, _ := net.ParseMAC("02:42:0a:58:00:07")
	tap.NIC = &qemu.NIC{TapFile: f, MAC: mac, VNetHdr: true}
	tcmd := qemuArgv(t, &tap)
	tline := strings.Join(tcmd.Args, " ")
	if strings.Contains(tline, "user,id=net0") || !strings.Contains(tline, "02:42:0a:58:00:07") || len(tcmd.ExtraFiles) != 1 {
		t.Errorf("tap QEMU args (%d extra files):\n%s", len(tcmd.ExtraFiles), tline)
	}
}

func TestGRPCErrKeepsAgentCode(t *testing.T) {
	agentErr := status.Error(codes.PermissionDenied, "exec in container server: argv not allowed by the sealed policy")
	err := grpcErr(fmt.Errorf("start server exec \"x\" in the guest: %w", agentErr))
	if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "not allowed by the sealed policy") {
		t.Fatalf("grpcErr = %v", err)
	}
	if !errdefs.IsNotFound(errdefs.FromGRPC(grpcErr(fmt.Errorf("task x: %w", errdefs.ErrNotFound)))) {
		t.Fatal("grpcErr lost NotFound")
	}
}

// The node config named by the CRI runtime options (ConfigPath, as the installer writes with
// --shim-config) replaces the default one, and is recorded in the bundle for Manager.Stop.
func TestCreateUsesConfigPathOption(t *testing.T) {
	s, _, _ := newTestService(t)
	s.cfg, s.cfgErr = nil, errors.New("shim config /etc/sealpod/shim.json: no such file")
	opts := func(path string) *anypb.Any {
		a, err := typeurl.MarshalAny(&runtimeoptions.Options{ConfigPath: path})
		if err != nil {
			t.Fatal(err)
		}
		return protobuf.FromAny(a)
	}
	missing := filepath.Join(t.TempDir(), "missing.json")
	_, err := s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "sb", Bundle: writeBundle(t, map[string]string{AnnotationContainerType: containerTypeSandbox}), Options: opts(missing)})
	if err == nil || !strings.Contains(err.Error(), "runtime options ConfigPath") {
		t.Fatalf("missing ConfigPath file: %v", err)
	}
	cfgPath := filepath.Join(t.TempDir(), "node.json")
	if err := os.WriteFile(cfgPath, []byte(`{"tee":"sim","simKey":"/k.pem","network":"user"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	bundle := writeBundle(t, map[string]string{AnnotationContainerType: containerTypeSandbox})
	if _, err := s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "sb", Bundle: bundle, Options: opts(cfgPath)}); err != nil {
		t.Fatalf("Create with ConfigPath: %v", err)
	}
	if s.cfg == nil || s.cfg.Network != "user" || s.cfgPath != cfgPath {
		t.Fatalf("config %+v from %q", s.cfg, s.cfgPath)
	}
	if b, err := os.ReadFile(filepath.Join(bundle, ConfigPathFile)); err != nil || string(b) != cfgPath {
		t.Fatalf("bundle record %q, %v", b, err)
	}
	// Another task of the same pod may not switch the pod to another config.
	other := filepath.Join(t.TempDir(), "other.json")
	os.WriteFile(other, []byte(`{"tee":"sim","simKey":"/k.pem"}`), 0o600)
	_, err = s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "c1", Bundle: writeBundle(t, map[string]string{AnnotationContainerType: "container"}), Options: opts(other)})
	if err == nil || !strings.Contains(err.Error(), "names node config") {
		t.Fatalf("switching config: %v", err)
	}
}
