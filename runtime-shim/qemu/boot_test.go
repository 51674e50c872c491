package qemu

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/testdeps"
	shimconfig "github.com/sealpod/sealpod/runtime-shim/config"
	"github.com/sealpod/sealpod/runtime-shim/netns"
	"github.com/sealpod/sealpod/runtime-shim/netns/netnstest"
)

// moduleRoot walks up from the package directory to go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	d, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		p := filepath.Dir(d)
		if p == d {
			t.Fatal("go.mod not found")
		}
		d = p
	}
}

// agentClient connects to a booting sim guest as the shim does: it serves the host end of the
// sim-sp port (the guest asks it which simulated TEE it plays, simsp.KindTEE, and gets "sim";
// these tests never attest, so every other request is refused) and dials the agent's port. The
// sim-sp end is closed when the test ends; closeAgent closes the agent's.
func agentClient(t *testing.T, ctx context.Context, vm *VM, cfg Config) (agent api.AgentService, closeAgent func()) {
	t.Helper()
	sp, err := dialRetry(ctx, vm, cfg.SimSPSocket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	go func() {
		for {
			var req simsp.Request
			if simsp.ReadFrame(sp, &req) != nil {
				return
			}
			resp := simsp.Response{Error: "boot test: no attestation"}
			if req.Kind == simsp.KindTEE {
				resp = simsp.Response{TEE: string(TEESim)}
			}
			if simsp.WriteFrame(sp, resp) != nil {
				return
			}
		}
	}()
	conn, err := dialRetry(ctx, vm, cfg.AgentSocket)
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(conn)
	return api.NewAgentClient(client), func() { client.Close() }
}

func dialRetry(ctx context.Context, vm *VM, path string) (net.Conn, error) {
	for {
		if vm.ExitError() != nil {
			return nil, fmt.Errorf("dial %s: qemu exited: %v\n%s", path, vm.ExitError(), vm.Stderr())
		}
		c, err := net.Dial("unix", path)
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial %s: %w (%v)", path, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// testNetNS creates a network namespace holding a veth "eth0" (10.78.0.2/24, peer in the same
// namespace) so the VM gets a real tap from runtime-shim/netns. Removed at cleanup.
func testNetNS(t *testing.T) string {
	t.Helper()
	path := netnstest.New(t, fmt.Sprintf("sealpod-qt%d", os.Getpid()))
	h := handleIn(t, path)
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}); err != nil {
		t.Fatal(err)
	}
	eth0, _ := h.LinkByName("eth0")
	peer, _ := h.LinkByName("peer0")
	addr, _ := netlink.ParseAddr("10.78.0.2/24")
	for _, err := range []error{h.AddrAdd(eth0, addr), h.LinkSetUp(eth0), h.LinkSetUp(peer)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// TestBootSimGuest boots the real guest (the agent built from this tree, wrapped by mkguest;
// or the bundle at $SEALPOD_GUEST_DIR) with the sim command
// line this package builds, a tap from runtime-shim/netns when running as root, and checks
// that the agent answers Ping on the sealpod.agent port, that QEMU holds the tap, reports its
// RSS, and that Stop leaves no QEMU and (once the shim's descriptor is closed) no tap.
func TestBootSimGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no VM boot")
	}
	qemuPath, err := exec.LookPath(BinaryX86)
	if err != nil {
		testdeps.Missing(t, "%s not installed (apt-get install -y qemu-system-x86): %v", BinaryX86, err)
	}
	gdir := os.Getenv("SEALPOD_GUEST_DIR") // a prebuilt bundle, e.g. out/guest after `make guest`
	if gdir == "" {
		gdir = buildGuest(t)
	}
	b, err := bundle.Load(gdir)
	if err != nil {
		t.Fatalf("guest bundle %s: %v", gdir, err)
	}
	sock, err := os.MkdirTemp("", "spq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	cfg := Config{
		Binary: qemuPath, TEE: TEESim, Guest: GuestFromBundle(b), EmulatedBIOS: shimconfig.DefaultEmulatedBIOS, // as the shim by default
		AgentSocket: filepath.Join(sock, "agent.sock"), SimSPSocket: filepath.Join(sock, "sim-sp.sock"),
		QMPSocket: filepath.Join(sock, "qmp.sock"), PIDFile: filepath.Join(sock, "qemu.pid"), Name: "sealpod-test",
	}
	var nsPath string
	var tap *os.File
	if os.Geteuid() == 0 {
		if _, err := os.Stat("/dev/net/tun"); err == nil {
			nsPath = testNetNS(t)
			res, err := netns.Setup(netns.Options{NetNSPath: nsPath})
			if err != nil {
				t.Fatal(err)
			}
			tap = res.Tap
			defer tap.Close()
			cfg.NIC = &NIC{TapFile: res.Tap, MAC: res.MAC, VNetHdr: true}
		}
	}
	if nsPath == "" {
		t.Log("not root or no /dev/net/tun: booting without a NIC")
	}
	var console syncBuf
	vm, err := Start(cfg, StartOptions{Console: &console})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Kill()
		if t.Failed() {
			t.Logf("console:\n%s\nqemu stderr:\n%s", console.String(), vm.Stderr())
		}
	})
	if tap != nil {
		tap.Close() // QEMU has its own descriptor now, as in the shim
	}
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	agent, closeAgent := agentClient(t, ctx, vm, cfg)
	defer closeAgent()
	p, err := agent.Ping(ctx, &api.PingRequest{})
	if err != nil {
		t.Fatalf("agent Ping: %v (qemu exited: %v)", err, vm.ExitError())
	}
	ready := time.Since(vm.Started())
	if p.State != api.StateSealed {
		t.Errorf("agent state %q, want %q", p.State, api.StateSealed)
	}
	rss, err := vm.RSS()
	if err != nil {
		t.Fatal(err)
	}
	agentReady := ""
	for _, l := range strings.Split(console.String(), "\n") {
		if strings.Contains(l, "sealpod agent ready") {
			agentReady = l
		}
	}
	t.Logf("QEMU start → agent Ping: %v; QEMU RSS %.1f MiB; %s", ready.Round(time.Millisecond), float64(rss)/(1<<20), agentReady)
	// What the shim does once the agent answers: QEMU's mapping of the initrd goes.
	st, err := os.Stat(cfg.Guest.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	released, err := vm.ReleaseBootFiles()
	if err != nil {
		t.Fatalf("ReleaseBootFiles: %v", err)
	}
	rss2, err := vm.RSS()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot files paged out: %d bytes of mappings advised; QEMU RSS %.1f → %.1f MiB", released, float64(rss)/(1<<20), float64(rss2)/(1<<20))
	if released < uint64(st.Size()) || rss2+uint64(st.Size())/2 > rss {
		t.Errorf("ReleaseBootFiles advised %d bytes for a %d-byte initrd; RSS %d → %d", released, st.Size(), rss, rss2)
	}
	// What the shim does once the pod's first container runs: QEMU's code is paged out, and
	// QEMU goes on serving the guest from what faults back in.
	code, err := vm.ReleaseCode()
	if err != nil {
		t.Fatalf("ReleaseCode: %v", err)
	}
	rss3, err := vm.RSS()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Ping(ctx, &api.PingRequest{}); err != nil {
		t.Fatalf("agent Ping after ReleaseCode: %v", err)
	}
	rss4, _ := vm.RSS()
	t.Logf("QEMU code paged out: %d bytes of mappings advised; QEMU RSS %.1f → %.1f MiB, %.1f MiB after a Ping", code, float64(rss2)/(1<<20), float64(rss3)/(1<<20), float64(rss4)/(1<<20))
	if code < 4<<20 || rss3+2<<20 > rss2 {
		t.Errorf("ReleaseCode advised %d bytes; RSS %d → %d: QEMU's binary was not paged out", code, rss2, rss3)
	}
	if pid, err := os.ReadFile(cfg.PIDFile); err != nil || strings.TrimSpace(string(pid)) != fmt.Sprint(vm.PID()) {
		t.Errorf("pidfile %q (%v), want %d", pid, err, vm.PID())
	}
	if nsPath != "" {
		holds := false
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", vm.PID()))
		for _, fd := range fds {
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", vm.PID(), fd.Name())); l == "/dev/net/tun" {
				holds = true
			}
		}
		if !holds {
			t.Error("QEMU holds no /dev/net/tun descriptor")
		}
		if got, err := netns.Redirects(nsPath, netns.DefaultTapName); err != nil || len(got) != 1 {
			t.Errorf("tap redirect filters while the VM runs: %v (%v)", got, err)
		}
	}
	closeAgent()
	if err := vm.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if alive(vm.PID()) {
		t.Fatal("QEMU alive after Stop")
	}
	if nsPath != "" {
		// Non-persistent tap: gone with QEMU's descriptor, before any Teardown.
		ns, _ := vnetns.GetFromPath(nsPath)
		h, _ := netlink.NewHandleAt(ns)
		ns.Close()
		defer h.Close()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, err := h.LinkByName(netns.DefaultTapName); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("tap still present after QEMU exited")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := netns.Teardown(netns.Options{NetNSPath: nsPath}); err != nil {
			t.Fatal(err)
		}
	}
}

// buildGuest builds the static agent and mkguest from this tree and writes a guest bundle
// into a temporary directory, as tests/guest does.
func buildGuest(t *testing.T) string {
	return buildGuestWith(t, "./agent/cmd/sealpod-agent", true)
}

// buildGuestWith builds initPkg as a static /init (with cgo and a static link when cgo is set,
// as the agent needs for runc's nsenter) and wraps it with mkguest (plus mkguestArgs). It skips
// when the kernel package cannot be had (no apt index or network), as the guest-image tests do.
func buildGuestWith(t *testing.T, initPkg string, cgo bool, mkguestArgs ...string) string {
	t.Helper()
	root, dir := moduleRoot(t), t.TempDir()
	run := func(env []string, name string, args ...string) ([]byte, error) {
		cmd := exec.Command(name, args...)
		cmd.Dir, cmd.Env = root, append(os.Environ(), env...)
		return cmd.CombinedOutput()
	}
	initBin := filepath.Join(dir, "init")
	var out []byte
	var err error
	if cgo {
		out, err = run([]string{"CGO_ENABLED=1", "GOFLAGS=-buildvcs=false"}, "go", "build", "-trimpath", "-tags", "netgo,osusergo,seccomp",
			"-ldflags", "-s -w -extldflags -static", "-o", initBin, initPkg)
	} else {
		out, err = run([]string{"CGO_ENABLED=0", "GOFLAGS=-buildvcs=false"}, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", initBin, initPkg)
	}
	if err != nil {
		t.Fatalf("build %s: %v\n%s", initPkg, err, out)
	}
	if out, err := run(nil, "go", "build", "-o", filepath.Join(dir, "mkguest"), "./guest-image/cmd/mkguest"); err != nil {
		t.Fatalf("build mkguest: %v\n%s", err, out)
	}
	gdir := filepath.Join(dir, "guest")
	if out, err := run(nil, filepath.Join(dir, "mkguest"), append([]string{"--init", initBin, "--out", gdir}, mkguestArgs...)...); err != nil {
		if strings.Contains(string(out), "apt") {
			testdeps.Missing(t, "mkguest cannot get the kernel package here: %v\n%s", err, out)
		}
		t.Fatalf("mkguest: %v\n%s", err, out)
	}
	return gdir
}
