package guest_test

// The ppc64le (pseries, IBM PEF) guest boots to agent ready (docs/pef.md): mkguest --arch
// ppc64le around the cross-compiled agent (cgo, static glibc and libseccomp for ppc64el), the
// minimal pseries kernel (cross-compiled once, cached; `make test` builds it first), booted
// with the shim's command line for a ppc64le bundle — qemu-system-ppc64 -M pseries under TCG —
// until the agent answers Ping on the sealpod.agent virtio-serial port, the channel the x86
// guest uses. The initrd booted is the sim-pef one: an ESM blob sealed for a host key
// (imagebuilder/pefseal, as sealctl --tee pef) in svm-tools' cpio ahead of the bundle's
// initrd, opened and checked by the software ultravisor (simtee/pefuv) before QEMU starts.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/guest-image/kernel"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/esm"
	"github.com/sealpod/sealpod/imagebuilder/pefseal"
	"github.com/sealpod/sealpod/internal/repopath"
	"github.com/sealpod/sealpod/internal/testdeps"
	kbsapi "github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
	"github.com/sealpod/sealpod/simtee/amdsp"
	"github.com/sealpod/sealpod/simtee/pefuv"
	"github.com/sealpod/sealpod/simtee/spserver"
	"github.com/sealpod/sealpod/tests/internal/proc"
	"github.com/sealpod/sealpod/tests/qemuvm"
)

// ppc64leCgoEnv is the Makefile's agent-ppc64le environment.
var ppc64leCgoEnv = []string{"CGO_ENABLED=1", "GOARCH=ppc64le", "CC=" + kernel.CrossCompilePPC64LE + "gcc",
	"PKG_CONFIG_LIBDIR=/usr/lib/powerpc64le-linux-gnu/pkgconfig:/usr/share/pkgconfig", "GOFLAGS=-buildvcs=false"}

func TestBootPPC64LE(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the ppc64le kernel build and the pseries boot")
	}
	requirePPC64LE(t)
	root, work := repopath.Root(t), t.TempDir()
	bin := filepath.Join(work, "bin")
	proc.Run(t, root, []string{"CGO_ENABLED=0", "GOFLAGS=-buildvcs=false"}, "go", "build", "-o", bin+"/", "./guest-image/cmd/mkguest")
	b := buildPPC64LEGuest(t, root, bin, filepath.Join(work, "guest"))

	// Seal for a (software) host key and let the simulated ultravisor check the boot.
	hostKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	digests, err := pefseal.Measure(b.Kernel, b.Initrd, b.Config.Cmdline)
	if err != nil {
		t.Fatal(err)
	}
	dataKey := bytes.Repeat([]byte{0x5e}, kbsapi.DataKeySize)
	sealed, err := pefseal.Seal(pefseal.Input{Hosts: []esm.HostKey{{Public: &hostKey.PublicKey}}, Digests: digests, DataKey: dataKey})
	if err != nil {
		t.Fatal(err)
	}
	boot := pefuv.Boot{Kernel: b.Kernel, Initrd: append(bytes.Clone(sealed.CPIO), b.Initrd...), Cmdline: b.Config.Cmdline}
	svm, err := pefuv.New(hostKey, nil).EnterSecureMode(boot)
	if err != nil {
		t.Fatalf("the simulated ultravisor refused the sealed boot of the real ppc64le kernel: %v", err)
	}
	if got, err := svm.GetFile(esm.AttachDataKey); err != nil || !bytes.Equal(got, dataKey) {
		t.Fatalf("data key from the ESM blob: %x, %v", got, err)
	}
	changed := boot
	changed.Cmdline += " init=/bin/sh"
	if _, err := pefuv.New(hostKey, nil).EnterSecureMode(changed); !errors.Is(err, esm.ErrDigest) {
		t.Fatalf("a changed command line: %v, want ErrDigest", err)
	}
	pefInitrd := filepath.Join(work, "initrd-pef.img")
	if err := os.WriteFile(pefInitrd, boot.Initrd, 0o644); err != nil {
		t.Fatal(err)
	}

	sockDir, cleanup, err := qemuvm.ShortTempDir()
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	cfg := qemuvm.SimConfig(b, sockDir) // the shim's command line for this bundle
	cfg.Guest.Initrd = pefInitrd        // what the ultravisor checked: ESM cpio + initrd
	cmd, err := cfg.Command()
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Path != qemu.BinaryPPC64 {
		t.Fatalf("QEMU binary %s, want %s for a ppc64le bundle", cmd.Path, qemu.BinaryPPC64)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	// The agent asks the host on the sim-sp port which simulated TEE launched it (sim here:
	// the sim-pef TEE and its channel are not wired yet, docs/pef.md) before serving.
	chain, err := amdsp.NewChain(amdsp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := amdsp.NewSigner(chain)
	if err != nil {
		t.Fatal(err)
	}
	vm := qemuvm.StartT(t, ctx, cfg)
	spConn, err := e2eDialUnix(ctx, cfg.SimSPSocket)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		if err := spserver.Serve(ctx, spConn, signer, spserver.Launch{}, nil); err != nil && ctx.Err() == nil {
			t.Logf("simulated AMD-SP: %v", err)
		}
	}()
	conn, err := e2eDialUnix(ctx, cfg.AgentSocket)
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer pcancel()
	p, err := api.NewAgentClient(c).Ping(pctx, &api.PingRequest{})
	if err != nil {
		t.Fatalf("the ppc64le agent did not answer Ping: %v\nconsole:\n%s", err, vm.Console())
	}
	if p.State != api.StateSealed {
		t.Fatalf("agent state %q, want %q", p.State, api.StateSealed)
	}
	t.Logf("ppc64le agent ready (Ping: state %s) %v after QEMU start (pseries, TCG)", p.State, time.Since(vm.Started()).Round(time.Millisecond))
}

// requirePPC64LE checks the ppc64le guest's build and boot dependencies (under CI=true a
// missing one fails the test: testdeps.Missing).
func requirePPC64LE(t *testing.T) {
	t.Helper()
	for tool, pkg := range map[string]string{qemu.BinaryPPC64: "qemu-system-ppc", kernel.CrossCompilePPC64LE + "gcc": "gcc-powerpc64le-linux-gnu"} {
		if _, err := exec.LookPath(tool); err != nil {
			testdeps.Missing(t, "the ppc64le guest: %s (Debian %s; make deps installs it): %v", tool, pkg, err)
		}
	}
}

// buildPPC64LEGuest cross-builds the ppc64le agent into bin and the guest bundle around it
// with bin/mkguest (mkguest flags extra, e.g. --cmdline) into guestDir, and checks it.
func buildPPC64LEGuest(t *testing.T, root, bin, guestDir string, extra ...string) *bundle.Bundle {
	t.Helper()
	agent := filepath.Join(bin, "sealpod-agent-ppc64le")
	proc.Run(t, root, ppc64leCgoEnv, "go", "build", "-trimpath", "-tags", "netgo,osusergo,seccomp",
		"-ldflags", "-s -w -extldflags -static", "-o", agent, "./agent/cmd/sealpod-agent")
	t0 := time.Now()
	proc.Run(t, root, nil, filepath.Join(bin, "mkguest"), append([]string{"--arch", "ppc64le", "--init", agent, "--out", guestDir}, extra...)...)
	t.Logf("mkguest --arch ppc64le: %v", time.Since(t0).Round(time.Millisecond))
	b, err := bundle.Load(guestDir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Config.Arch != bundle.ArchPPC64LE || b.Config.Measurements.PEF == nil || b.Config.Measurements.PEF.RTAS == "" || b.Config.Measurements.Sim != "" {
		t.Fatalf("guest.json: arch %q, measurements %+v; want ppc64le with svm-tools' pef digests only", b.Config.Arch, b.Config.Measurements)
	}
	if err := kernel.CheckPPC64LEVmlinux(b.Kernel); err != nil {
		t.Fatal(err)
	}
	return b
}
