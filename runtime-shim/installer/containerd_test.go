package installer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/sealpod/sealpod/internal/testdeps"
)

// These tests start Debian's containerd (1.6) as root with its own root, state, opt dir and
// sockets under t.TempDir(), so they never touch /var/lib/containerd, /run/containerd/
// containerd.sock or a colleague's containerd. They load configs the installer wrote and ask
// containerd's CRI plugin (runtime.v1 Status, verbose) which runtime handlers it serves.

func needContainerd(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("containerd")
	if err != nil {
		testdeps.Missing(t, "containerd not installed (apt-get install -y containerd): skipping the real-containerd test")
	}
	if os.Geteuid() != 0 {
		testdeps.Missing(t, "containerd needs root: skipping the real-containerd test")
	}
	return bin
}

// testContainerd is a containerd process started by a test; Restart implements Restarter.
type testContainerd struct {
	t      *testing.T
	bin    string
	config string
	sock   string
	log    string
	cmd    *exec.Cmd
	starts int
}

func (c *testContainerd) start() error {
	logf, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(c.bin, "--config", c.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	c.cmd = cmd
	c.starts++
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(c.sock); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("containerd socket %s did not appear; log:\n%s", c.sock, c.logTail())
}

func (c *testContainerd) stop() {
	if c.cmd == nil {
		return
	}
	pgid := c.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
	c.cmd = nil
	_ = os.Remove(c.sock) // containerd removes it; be sure before a restart waits for it
}

// Restart stops and starts containerd, like `systemctl restart containerd`.
func (c *testContainerd) Restart(context.Context) error {
	c.stop()
	return c.start()
}

func (c *testContainerd) logTail() string {
	b, _ := os.ReadFile(c.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// rawCodec sends and receives already-encoded protobuf bytes (no generated CRI types needed).
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// criRuntimes calls runtime.v1.RuntimeService/Status{verbose: true} and returns the CRI
// plugin's runtimes (name → their JSON config) from info["config"].
func criRuntimes(ctx context.Context, sock string) (map[string]map[string]any, error) {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	req := protowire.AppendTag(nil, 1, protowire.VarintType) // StatusRequest.verbose
	req = protowire.AppendVarint(req, 1)
	var resp []byte
	if err := conn.Invoke(ctx, "/runtime.v1.RuntimeService/Status", &req, &resp, grpc.ForceCodec(rawCodec{})); err != nil {
		return nil, err
	}
	info := map[string]string{}
	for b := resp; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if num != 2 { // StatusResponse.info is field 2, map<string,string>
			continue
		}
		var key, val string
		for e := v; len(e) > 0; {
			en, et, m := protowire.ConsumeTag(e)
			if m < 0 || et != protowire.BytesType {
				return nil, errors.New("bad map entry in StatusResponse.info")
			}
			e = e[m:]
			s, m := protowire.ConsumeBytes(e)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			e = e[m:]
			if en == 1 {
				key = string(s)
			} else if en == 2 {
				val = string(s)
			}
		}
		info[key] = val
	}
	var cfg struct {
		Containerd struct {
			Runtimes map[string]map[string]any `json:"runtimes"`
		} `json:"containerd"`
	}
	if err := json.Unmarshal([]byte(info["config"]), &cfg); err != nil {
		return nil, fmt.Errorf("CRI status info[config]: %w (keys %d)", err, len(info))
	}
	return cfg.Containerd.Runtimes, nil
}

// waitCRI polls the CRI plugin until it answers (it initialises after the socket appears).
func waitCRI(t *testing.T, c *testContainerd) map[string]map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		rts, err := criRuntimes(ctx, c.sock)
		cancel()
		if err == nil {
			return rts
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("CRI Status on %s: %v\ncontainerd log:\n%s", c.sock, last, c.logTail())
	return nil
}

func newTestContainerd(t *testing.T, bin, config, dir string) *testContainerd {
	c := &testContainerd{t: t, bin: bin, config: config, sock: StandaloneSocket(dir), log: filepath.Join(dir, "containerd.log")}
	t.Cleanup(c.stop)
	return c
}

// localize points a containerd config at dir instead of the global paths: it rewrites the
// default paths, appends [grpc]/[ttrpc]/opt tables the file lacks, and fails the test unless
// root, state, both sockets and the opt dir all end up under dir.
func localize(t *testing.T, cfg []byte, dir string) []byte {
	t.Helper()
	r := strings.NewReplacer(
		`root = "/var/lib/containerd"`, fmt.Sprintf("root = %q", filepath.Join(dir, "root")),
		`state = "/run/containerd"`, fmt.Sprintf("state = %q", filepath.Join(dir, "state")),
		`address = "/run/containerd/containerd.sock"`, fmt.Sprintf("address = %q", StandaloneSocket(dir)),
		`path = "/opt/containerd"`, fmt.Sprintf("path = %q", filepath.Join(dir, "opt")),
		`disabled_plugins = []`, `disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]`,
	)
	out := []byte(r.Replace(string(cfg)))
	var tree map[string]any
	if err := toml.Unmarshal(out, &tree); err != nil {
		t.Fatal(err)
	}
	if _, ok := tree["grpc"]; !ok {
		out = fmt.Appendf(out, "\n[grpc]\n  address = %q\n", StandaloneSocket(dir))
	}
	if _, ok := tree["ttrpc"]; !ok {
		out = fmt.Appendf(out, "\n[ttrpc]\n  address = %q\n", StandaloneSocket(dir)+".ttrpc")
	}
	if opt, _ := tableAt(tree, "plugins", "io.containerd.internal.v1.opt"); opt == nil {
		out = fmt.Appendf(out, "\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = %q\n", filepath.Join(dir, "opt"))
	}
	tree = nil
	if err := toml.Unmarshal(out, &tree); err != nil {
		t.Fatal(err)
	}
	str := func(v any) string { s, _ := v.(string); return s }
	grpcT, _ := tableAt(tree, "grpc")
	ttrpcT, _ := tableAt(tree, "ttrpc")
	optT, _ := tableAt(tree, "plugins", "io.containerd.internal.v1.opt")
	ttrpcAddr := str(ttrpcT["address"])
	if ttrpcAddr == "" {
		ttrpcAddr = str(grpcT["address"]) + ".ttrpc" // containerd's default
	}
	for name, p := range map[string]string{"root": str(tree["root"]), "state": str(tree["state"]), "grpc.address": str(grpcT["address"]), "ttrpc.address": ttrpcAddr, "opt path": str(optT["path"])} {
		if !strings.HasPrefix(p, dir+"/") {
			t.Fatalf("localized config: %s = %q is not under %s", name, p, dir)
		}
	}
	return out
}

// TestContainerdLoadsInstalledConfig: for real configs (containerd's own default, a config with
// runc implicit, the standalone one), the config AddRuntime writes loads in containerd 1.6 and
// the CRI plugin serves the sealpod handler with the right runtime type and annotations, next
// to the default runtime.
func TestContainerdLoadsInstalledConfig(t *testing.T) {
	bin := needContainerd(t)
	cases := []struct {
		name string
		base func(dir string) []byte
	}{
		{"standalone", func(dir string) []byte {
			b, err := StandaloneConfig(StandaloneOptions{Dir: dir, RestrictOOMScoreAdj: true})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"debian-1.6-default", func(dir string) []byte {
			b, err := os.ReadFile(filepath.Join("testdata", "config", "containerd-1.6-default.toml"))
			if err != nil {
				t.Fatal(err)
			}
			return localize(t, b, dir)
		}},
		{"runc-implicit", func(dir string) []byte {
			b, err := os.ReadFile(filepath.Join("testdata", "config", "custom-runc-implicit.toml"))
			if err != nil {
				t.Fatal(err)
			}
			return localize(t, b, dir)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, err := AddRuntime(tc.base(dir), RuntimeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cfgPath := filepath.Join(dir, "config.toml")
			if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
				t.Fatal(err)
			}
			c := newTestContainerd(t, bin, cfgPath, dir)
			if err := c.start(); err != nil {
				t.Fatal(err)
			}
			rts := waitCRI(t, c)
			checkSealpodRuntime(t, rts, true)
			if _, ok := rts["runc"]; !ok {
				t.Fatalf("runc runtime missing: %v", rts)
			}
			// ctr sees the CRI plugin loaded.
			out, err := exec.Command("ctr", "--address", c.sock, "plugins", "ls").CombinedOutput()
			if err != nil {
				t.Fatalf("ctr plugins ls: %v\n%s", err, out)
			}
			if !criPluginOK(string(out)) {
				t.Fatalf("CRI plugin not ok:\n%s", out)
			}
		})
	}
}

// TestContainerdNeedsDefaultRuntime is the control for AddRuntime spelling out runc: a config
// that names only the sealpod runtime makes containerd 1.6 refuse to load its CRI plugin.
func TestContainerdNeedsDefaultRuntime(t *testing.T) {
	bin := needContainerd(t)
	dir := t.TempDir()
	base, err := StandaloneConfig(StandaloneOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	cfg := append(base, []byte("\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.sealpod]\n  runtime_type = \"io.containerd.sealpod.v2\"\n")...)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	c := newTestContainerd(t, bin, cfgPath, dir)
	if err := c.start(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ctr", "--address", c.sock, "plugins", "ls").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr plugins ls: %v\n%s", err, out)
	}
	if criPluginOK(string(out)) {
		t.Fatalf("CRI plugin loaded without a runc runtime: the implicit-runc rule no longer holds\n%s", out)
	}
	if !strings.Contains(c.logTail(), "default_runtime_name") {
		t.Fatalf("containerd log does not explain the CRI failure:\n%s", c.logTail())
	}
}

func criPluginOK(ctrPlugins string) bool {
	for _, line := range strings.Split(ctrPlugins, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == "io.containerd.grpc.v1" && f[1] == "cri" {
			return f[len(f)-1] == "ok"
		}
	}
	return false
}

func checkSealpodRuntime(t *testing.T, rts map[string]map[string]any, want bool) {
	t.Helper()
	rt, ok := rts[HandlerName]
	if ok != want {
		t.Fatalf("CRI runtimes %v: sealpod present = %v, want %v", keys(rts), ok, want)
	}
	if !want {
		return
	}
	if rt["runtimeType"] != RuntimeType {
		t.Fatalf("sealpod runtimeType = %v (%v)", rt["runtimeType"], rt)
	}
	if a, _ := rt["PodAnnotations"].([]any); len(a) != 1 || a[0] != AnnotationPrefix {
		t.Fatalf("sealpod PodAnnotations = %v (%v)", rt["PodAnnotations"], rt)
	}
}

func keys(m map[string]map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// TestInstallRestartsRealContainerd runs Install and Uninstall against a running containerd:
// before install the CRI plugin has no sealpod handler, after install (and the restart the
// installer triggers) it has, a second install does not restart, and after uninstall the
// config file is byte-identical to the original and the handler is gone.
func TestInstallRestartsRealContainerd(t *testing.T) {
	bin := needContainerd(t)
	host := t.TempDir()
	dir := filepath.Join(host, "ctrd")
	if err := os.MkdirAll(filepath.Join(host, "etc/containerd"), 0o755); err != nil {
		t.Fatal(err)
	}
	base, err := StandaloneConfig(StandaloneOptions{Dir: dir, RestrictOOMScoreAdj: true})
	if err != nil {
		t.Fatal(err)
	}
	base = append([]byte("# node config before Sealpod\n"), base...)
	cfgPath := filepath.Join(host, "etc/containerd/config.toml")
	if err := os.WriteFile(cfgPath, base, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := newTestContainerd(t, bin, cfgPath, dir)
	if err := c.start(); err != nil {
		t.Fatal(err)
	}
	checkSealpodRuntime(t, waitCRI(t, c), false)

	shimSrc := filepath.Join(t.TempDir(), ShimBinaryName)
	if err := os.WriteFile(shimSrc, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := Options{HostRoot: host, ShimSource: shimSrc, RemoveShim: true, Restarter: c}
	res, err := Install(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Restarted || c.starts != 2 {
		t.Fatalf("Install %+v, containerd starts %d", res, c.starts)
	}
	checkSealpodRuntime(t, waitCRI(t, c), true)

	res, err = Install(context.Background(), opts)
	if err != nil || res.Restarted || c.starts != 2 {
		t.Fatalf("second Install %+v %v: restarted containerd", res, err)
	}

	res, err = Uninstall(context.Background(), opts)
	if err != nil || !res.Restored || !res.Restarted {
		t.Fatalf("Uninstall %+v %v", res, err)
	}
	got, err := os.ReadFile(cfgPath)
	if err != nil || !bytes.Equal(got, base) {
		t.Fatalf("config after uninstall is not the original (%v):\n%s", err, got)
	}
	if st, _ := os.Stat(cfgPath); st.Mode().Perm() != 0o600 {
		t.Fatalf("config mode %v", st.Mode())
	}
	checkSealpodRuntime(t, waitCRI(t, c), false)
}
