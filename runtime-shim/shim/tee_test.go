package shim

// Tests of issue 14 items 1-3: the shim boots the TEE its node config offers that the pod was
// sealed for, never one the pod alone names.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sealpod/sealpod/guest-image/bundletest"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/internal/testdeps"
	"github.com/sealpod/sealpod/runtime-shim/config"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
	"github.com/sealpod/sealpod/simtee/tdxqe"
)

// sealedEnvelope is a real envelope of testWorkload sealed for tees.
func sealedEnvelope(t *testing.T, tees ...string) []byte {
	t.Helper()
	key, err := envelope.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	env, err := envelope.Seal([]byte(`{}`), key, envelope.Header{Workload: testWorkload, TEEs: tees,
		KBS: envelope.KBS{URL: "https://kbs.example", CASHA256: strings.Repeat("ab", 32)}})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// createPlaceholder creates the sandbox sb1 and the placeholder c1 whose secure image holds env,
// and returns c1's Create error.
func createPlaceholder(t *testing.T, s *Service, env []byte) error {
	t.Helper()
	return createPlaceholderWith(t, s, env, nil)
}

// createPlaceholderWith is createPlaceholder with prepare run on the secure image's bundle
// directory before c1 is created (nil: nothing).
func createPlaceholderWith(t *testing.T, s *Service, env []byte, prepare func(secure string)) error {
	t.Helper()
	ctx := context.Background()
	parent := fmt.Sprintf("/sealpod-test-%d", os.Getpid())
	t.Cleanup(func() { removeTestCgroup(parent) })
	sb := sandboxBundle(t, "sb1", parent+"/sb1", nil)
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "sb1", Bundle: sb}); err != nil {
		t.Fatalf("create sandbox: %v", err)
	}
	secure := secureRootfs(t, testWorkload, env)
	if prepare != nil {
		prepare(secure)
	}
	writeSpec(t, secure, specs.Spec{Version: "1.0.2", Annotations: map[string]string{AnnotationContainerType: "container",
		AnnotationSandboxID: "sb1", AnnotationContainerName: "app"}})
	_, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: secure})
	return err
}

// TestChooseTEE: the node's first TEE the pod was sealed for; never one the node does not offer.
func TestChooseTEE(t *testing.T) {
	tests := []struct {
		node   []tee.TEE
		sealed []string
		want   tee.TEE // "": no TEE in common
	}{
		{[]tee.TEE{tee.Sim}, []string{"sim"}, tee.Sim},
		{[]tee.TEE{tee.Sim, tee.SimTDX}, []string{"sim-tdx"}, tee.SimTDX},
		{[]tee.TEE{tee.Sim, tee.SimTDX}, []string{"sim-tdx", "sim"}, tee.Sim}, // the node's order, not the pod's
		{[]tee.TEE{tee.SimTDX, tee.Sim}, []string{"sim", "sim-tdx"}, tee.SimTDX},
		{[]tee.TEE{tee.SNP}, []string{"tdx", "snp"}, tee.SNP},
		{[]tee.TEE{tee.TDX, tee.Sim}, []string{"sim", "snp"}, tee.Sim},
		{[]tee.TEE{tee.Sim}, []string{"snp", "tdx", "pef"}, ""},
		{[]tee.TEE{tee.SNP}, []string{"sim"}, ""}, // a pod cannot ask for the simulation on a hardware node
		{[]tee.TEE{tee.Sim}, []string{"sim-tdx"}, ""},
		{[]tee.TEE{tee.TDX}, []string{"sim-tdx"}, ""},
		{[]tee.TEE{tee.Sim}, nil, ""},
	}
	for _, tc := range tests {
		got, ok := chooseTEE(tc.node, tc.sealed)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("chooseTEE(node %v, sealed %v) = %q, %v; want %q", tc.node, tc.sealed, got, ok, tc.want)
		}
	}
}

// TestCreateRefusesTEEMismatch: a pod sealed for TEEs the node does not offer fails Create,
// naming both lists, before anything is booted.
func TestCreateRefusesTEEMismatch(t *testing.T) {
	tests := []struct {
		name   string
		node   []string
		sealed []string
		want   string
	}{
		{"hardware pod on a sim node", []string{"sim"}, []string{"tdx", "snp"}, "sandbox sb1: pod sealed for tdx, snp; this node offers sim"},
		{"snp pod on a sim node", []string{"sim"}, []string{"snp"}, "sandbox sb1: pod sealed for snp; this node offers sim"},
		{"sim pod on a hardware node", []string{"snp", "tdx"}, []string{"sim"}, "sandbox sb1: pod sealed for sim; this node offers snp, tdx"},
		{"sim-tdx pod on a sim node", []string{"sim"}, []string{"sim-tdx"}, "sandbox sb1: pod sealed for sim-tdx; this node offers sim"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _, _ := newTestService(t)
			s.cfg.TEEs = tc.node
			s.cfg.StateDir = shortStateDir(t)
			err := createPlaceholder(t, s, sealedEnvelope(t, tc.sealed...))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Create: %v\nwant an error containing %q", err, tc.want)
			}
			if !errdefs.IsFailedPrecondition(errdefs.FromGRPC(err)) {
				t.Errorf("Create: %v, want FailedPrecondition", err)
			}
			if s.vm != nil {
				t.Error("a VM was started for a pod sealed for another TEE")
			}
		})
	}
}

// TestCreateBootsTheNodesTEE: Create boots the TEE chosen from the node's list, each on its own
// path: a hardware TEE reaches the hardware boundary (this machine: no KVM, QEMU 7.2), sim
// loads the simulated AMD-SP key, sim-tdx the fake PCK key.
func TestCreateBootsTheNodesTEE(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name   string
		node   []string
		sealed []string
		want   []string
	}{
		{"snp node, pod sealed for tdx and snp", []string{"snp"}, []string{"tdx", "snp"}, []string{"snp VM cannot start on this host", "sev-snp-guest"}},
		{"node prefers snp", []string{"snp", "sim"}, []string{"sim", "snp"}, []string{"snp VM cannot start on this host"}},
		{"tdx node", []string{"tdx"}, []string{"tdx"}, []string{"tdx VM cannot start on this host", "tdx-guest"}},
		{"node prefers sim", []string{"sim", "snp"}, []string{"snp", "sim"}, []string{"sim key /nonexistent"}},
		{"sim-tdx node", []string{"sim", "sim-tdx"}, []string{"sim-tdx"}, []string{"sim-tdx key /nonexistent-tdx"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _, _ := newTestService(t)
			s.cfg.TEEs, s.cfg.SimKey = tc.node, ""
			if slices.Contains(tc.node, "sim") {
				s.cfg.SimKey = "/nonexistent"
			}
			if slices.Contains(tc.node, "sim-tdx") {
				s.cfg.SimTDXKey = "/nonexistent-tdx"
			}
			s.cfg.Accel, s.cfg.Network = "kvm", config.NetworkUser
			s.cfg.StateDir = shortStateDir(t)
			if err := s.cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			err := createPlaceholderFirmware(t, s, sealedEnvelope(t, tc.sealed...))
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Create: %v\nwant an error containing %q", err, w)
				}
			}
			if s.vm != nil {
				t.Error("a VM is recorded after a failed boot")
			}
			if strings.Contains(tc.want[0], "VM cannot start") && !errdefs.IsFailedPrecondition(errdefs.FromGRPC(err)) {
				t.Errorf("Create at the hardware boundary: %v, want FailedPrecondition", err)
			}
		})
	}
}

// createPlaceholderFirmware is createPlaceholder with a firmware.fd in the secure image.
func createPlaceholderFirmware(t *testing.T, s *Service, env []byte) error {
	t.Helper()
	return createPlaceholderWith(t, s, env, func(secure string) {
		if err := os.WriteFile(filepath.Join(secure, "rootfs", "sealpod", "guest", bundle.FirmwareFile), []byte("firmware"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
}

// testGuest is an in-memory guest bundle as the qemu package's golden files describe it.
func testGuest(dir string, firmware bool) *bundle.Bundle {
	b := &bundle.Bundle{Dir: dir, Config: bundle.Config{Version: bundle.Version, Cmdline: "console=ttyS0 quiet panic=-1", VCPUs: 2, MemoryMiB: 512},
		Kernel: []byte("k"), Initrd: []byte("i")}
	if firmware {
		b.Firmware = []byte("fw")
	}
	return b
}

// TestQEMUConfigPerTEE: vm.go builds the chosen TEE's VM with the node's launch parameters and
// the envelope digest (it fails if vm.go boots one TEE whatever was chosen).
func TestQEMUConfigPerTEE(t *testing.T) {
	env := sealedEnvelope(t, "sim", "sim-tdx", "snp", "tdx")
	d := envelope.Sum(env)
	mrconfigid := base64.StdEncoding.EncodeToString(append(d[:], make([]byte, 16)...))
	smtOff := false
	node := &config.Config{TEEs: []string{"sim", "sim-tdx", "snp", "tdx"}, SimKey: "/k", SimTDXKey: "/t", Accel: "kvm",
		SNPCBitPos: 47, SNPReducedPhysBits: 1, SNPSMT: &smtOff, QGSSocket: "/run/qgs/qgs.sock"}
	node.Defaults()
	if err := node.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		tee       tee.TEE
		want, not []string
	}{
		{tee.Sim, []string{"name=sealpod.sim-sp", "q35,accel=kvm", "virtio-balloon-pci"}, []string{"sev-snp-guest", "tdx-guest", "confidential-guest-support"}},
		{tee.SimTDX, []string{"name=sealpod.sim-sp", "q35,accel=kvm", "virtio-balloon-pci"}, []string{"sev-snp-guest", "tdx-guest", "confidential-guest-support"}},
		{tee.SNP, []string{"confidential-guest-support=sev0", "sev-snp-guest,id=sev0,cbitpos=47,reduced-phys-bits=1,policy=0x20000,kernel-hashes=on,host-data=" +
			base64.StdEncoding.EncodeToString(d[:]), "-bios /g/firmware.fd", "-cpu EPYC-v4"}, []string{"sealpod.sim-sp", "balloon"}},
		{tee.TDX, []string{"kernel-irqchip=split,confidential-guest-support=tdx0", `"mrconfigid":"` + mrconfigid + `"`,
			`"quote-generation-socket":{"type":"unix","path":"/run/qgs/qgs.sock"}`, "-bios /g/firmware.fd"}, []string{"sealpod.sim-sp", "balloon"}},
	}
	for _, tc := range tests {
		t.Run(string(tc.tee), func(t *testing.T) {
			v := &vmSpec{QEMU: "qemu-system-x86_64", Accel: node.Accel, Name: "sealpod-sb1", Dir: "/run/sealpod/sb1", Guest: testGuest("/g", true), Network: config.NetworkUser}
			setLaunch(v, tc.tee, node, env)
			line := strings.Join(qemuArgv(t, v).Args, " ")
			for _, w := range append(tc.want, "-append console=ttyS0 quiet panic=-1", "-smp 2", "-kernel /g/vmlinuz", "-initrd /g/initrd.img") {
				if !strings.Contains(line, w) {
					t.Errorf("%s argv lacks %q:\n%s", tc.tee, w, line)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(line, n) {
					t.Errorf("%s argv has %q:\n%s", tc.tee, n, line)
				}
			}
		})
	}
	for _, te := range []tee.TEE{tee.SNP, tee.TDX} {
		v := &vmSpec{QEMU: "qemu-system-x86_64", Accel: "kvm", Dir: "/run/sealpod/sb1", Guest: testGuest("/g", false), Network: config.NetworkUser}
		setLaunch(v, te, node, env)
		if _, err := v.qemuConfig(); err == nil || !strings.Contains(err.Error(), "firmware.fd") {
			t.Errorf("%s without firmware: %v, want an error naming firmware.fd", te, err)
		}
	}
}

// TestHardwareNodeLaunch: an snp or a tdx node config gives the command line of the golden
// file (runtime-shim/qemu/testdata/*-node.args, checked against QEMU's QAPI schema there) as
// the shim really starts QEMU, and on this machine fails at the hardware boundary naming
// what is missing (no /dev/kvm; QEMU lacks the TEE's object).
func TestHardwareNodeLaunch(t *testing.T) {
	requireRoot(t)
	qemuPath, err := exec.LookPath(qemu.BinaryX86)
	if err != nil {
		testdeps.Missing(t, "%s not installed: %v", qemu.BinaryX86, err)
	}
	smtOff := false
	goldenDigest := sha256.Sum256([]byte("sealpod golden envelope")) // as runtime-shim/qemu's goldens
	mac, _ := net.ParseMAC("0a:58:0a:f4:00:07")
	tests := []struct {
		golden string
		node   config.Config
		want   []string
	}{
		{"snp-node", config.Config{TEEs: []string{"snp"}, SNPCBitPos: 47, SNPReducedPhysBits: 1, SNPSMT: &smtOff}, []string{"sev-snp-guest"}},
		{"tdx-node", config.Config{TEEs: []string{"tdx"}}, []string{"tdx-guest"}},
		// A pod with two sealed volumes: root ports and the QMP socket as a descriptor.
		{"snp-node-volumes", config.Config{TEEs: []string{"snp"}, SNPCBitPos: 47, SNPReducedPhysBits: 1, SNPSMT: &smtOff}, []string{"sev-snp-guest"}},
		{"tdx-node-volumes", config.Config{TEEs: []string{"tdx"}}, []string{"tdx-guest"}},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			node := tc.node
			node.Defaults()
			if err := node.Validate(); err != nil {
				t.Fatal(err)
			}
			dir := shortStateDir(t)
			gdir := filepath.Join(dir, "rootfs", "sealpod", "guest")
			b := testGuest(gdir, true)
			for name, data := range map[string][]byte{bundle.KernelFile: b.Kernel, bundle.InitrdFile: b.Initrd, bundle.FirmwareFile: b.Firmware} {
				if err := os.MkdirAll(gdir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(gdir, name), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			tap, err := os.Open(os.DevNull)
			if err != nil {
				t.Fatal(err)
			}
			defer tap.Close()
			env := sealedEnvelope(t, string(node.Offers()[0]))
			spec := &vmSpec{QEMU: node.QEMU, Accel: node.Accel, Name: "sealpod-p1", Dir: dir, Guest: b, Network: config.NetworkTap,
				NIC: &qemu.NIC{TapFile: tap, MAC: mac, VNetHdr: true}, UID: config.DefaultQEMUID, GID: config.DefaultQEMUID}
			setLaunch(spec, node.Offers()[0], &node, env)
			if strings.HasSuffix(tc.golden, "-volumes") {
				spec.Volumes = testPodVolumes(t)
			}
			if d := envelope.Sum(env); !bytes.Equal(spec.HostData, d[:]) {
				t.Fatalf("launch host data %x, want the envelope digest %x", spec.HostData, d)
			}
			spec.HostData = goldenDigest[:] // the golden files' stand-in digest

			// The argv the shim starts QEMU with (a stand-in QEMU records it; the host check
			// is told the host has KVM and the object).
			bin, out := fakeQEMU(t)
			spec.QEMU = bin
			spec.Host = qemu.HostOptions{DevKVM: os.DevNull, Objects: func(string) ([]string, error) { return tc.want, nil }}
			vm, err := startQEMU(spec, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			got := strings.ReplaceAll(string(waitArgs(t, out)), dir, "/run/sealpod/p1")
			vm.Kill()
			<-vm.Exited()
			golden, err := os.ReadFile(filepath.Join("..", "qemu", "testdata", tc.golden+".args"))
			if err != nil {
				t.Fatal(err)
			}
			_, wantArgs, _ := strings.Cut(string(golden), "\n") // without the binary
			if got != wantArgs {
				t.Errorf("argv differs from %s.args:\n--- got ---\n%s--- want ---\n%s", tc.golden, got, wantArgs)
			}

			// This machine's real /dev and QEMU: the hardware boundary, named.
			setLaunch(spec, node.Offers()[0], &node, env)
			spec.QEMU, spec.Host = qemuPath, qemu.HostOptions{}
			removeStartFiles(t, spec.Dir)
			vm, err = startQEMU(spec, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err == nil {
				vm.Kill()
				t.Skip("this host has what the TEE needs: no boundary")
			}
			if !errors.Is(err, qemu.ErrHostLacks) {
				t.Fatalf("start at the hardware boundary: %v, want qemu.ErrHostLacks", err)
			}
			objs, _ := qemu.QEMUObjects(qemuPath)
			want := []string{}
			if _, err := os.Stat(qemu.DevKVM); err != nil {
				want = append(want, "no usable /dev/kvm")
			}
			if !slices.Contains(objs, tc.want[0]) {
				want = append(want, "lacks object "+tc.want[0])
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("start: %v\nlacks %q", err, w)
				}
			}
			t.Logf("%s: %v", tc.golden, err)
		})
	}
}

// removeStartFiles removes what a start left in dir (the next start binds the sockets again).
func removeStartFiles(t *testing.T, dir string) {
	t.Helper()
	for _, n := range []string{"agent.sock", "sp.sock", "qmp.sock", "qemu.pid", "console.log"} {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
}

// waitArgs waits for the stand-in QEMU's record of its arguments.
func waitArgs(t *testing.T, out string) []byte {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(out, "status")); err == nil {
			b, err := os.ReadFile(filepath.Join(out, "args"))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		if time.Now().After(deadline) {
			t.Fatal("the stand-in QEMU did not start")
		}
	}
}

// TestWarnSimulated: one loud INSECURE warning per simulated TEE the node offers, none for
// hardware TEEs.
func TestWarnSimulated(t *testing.T) {
	tests := []struct {
		tees []string
		want []string // substrings, one warning each
	}{
		{[]string{"sim"}, []string{"INSECURE", "tee sim)"}},
		{[]string{"sim", "sim-tdx"}, []string{"tee sim)", "tee sim-tdx"}},
		{[]string{"snp", "tdx"}, nil},
	}
	for _, tc := range tests {
		var buf bytes.Buffer
		warnSimulated(slog.New(slog.NewTextHandler(&buf, nil)), &config.Config{TEEs: tc.tees}, "/etc/sealpod/shim.json")
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if buf.Len() == 0 {
			lines = nil
		}
		n := 0
		for _, tt := range tc.tees {
			if tee.TEE(tt).Simulated() {
				n++
			}
		}
		if len(lines) != n {
			t.Errorf("tees %v: %d warnings, want %d:\n%s", tc.tees, len(lines), n, buf.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(buf.String(), w) {
				t.Errorf("tees %v: warnings lack %q:\n%s", tc.tees, w, buf.String())
			}
		}
		for _, l := range lines {
			if !strings.Contains(l, "level=WARN") || !strings.Contains(l, "INSECURE") {
				t.Errorf("not a loud warning: %s", l)
			}
		}
	}
}

// TestSimServices: each emulated TEE gets its own host side (sim: simtee/spserver; sim-tdx:
// simtee/tdxsim), loaded from its own key before QEMU starts; hardware TEEs get none.
func TestSimServices(t *testing.T) {
	chain, err := tdxqe.NewChain(tdxqe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tdxKey := filepath.Join(t.TempDir(), "pck.pem")
	if err := chain.WriteKeyFile(tdxKey); err != nil {
		t.Fatal(err)
	}
	g, err := bundle.Load(bundletest.Write(t))
	if err != nil {
		t.Fatal(err)
	}
	env := sealedEnvelope(t, "sim", "sim-tdx")
	good := &config.Config{TEEs: []string{"sim", "sim-tdx", "snp"}, SimKey: simKey(t), SimTDXKey: tdxKey}
	swapped := &config.Config{TEEs: good.TEEs, SimKey: tdxKey, SimTDXKey: good.SimKey}
	tests := []struct {
		tee     tee.TEE
		cfg     *config.Config
		name    string // "" = no service
		wantErr string
	}{
		{tee.Sim, good, "simulated AMD-SP", ""},
		// The key loads; the stand-in kernel is no EFI-stub bzImage, so tdxsim cannot compute
		// RTMR[1] (a real guest bundle's can: tests/e2e).
		{tee.SimTDX, good, "", "sim-tdx launch"},
		{tee.SNP, good, "", ""},
		{tee.TDX, good, "", ""},
		{tee.Sim, swapped, "", "sim key " + tdxKey},
		{tee.SimTDX, swapped, "", "sim-tdx key " + good.SimKey},
	}
	for _, tc := range tests {
		svc, err := simService(tc.tee, tc.cfg, g, env)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: %v, want an error containing %q", tc.tee, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.tee, err)
		case tc.name == "" && svc != nil, tc.name != "" && (svc == nil || svc.name != tc.name):
			t.Errorf("%s: service %+v, want %q", tc.tee, svc, tc.name)
		}
	}
}
