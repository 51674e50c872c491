package guest_test

// The acceptance e2e of sim-pef (issue 17, docs/pef.md "sim-pef"): a workload sealed for
// sim-pef — its envelope under a data key, and an ESM blob for a (software) host key carrying
// that data key and the per-workload broker credential, over the ppc64le guest's kernel,
// initrd and command line — boots under qemu-system-ppc64 (pseries, TCG) only after the
// simulated ultravisor (simtee/pefuv, through pefuv.Launch as the shim's simpef.go calls it)
// has opened the blob and checked the digests of exactly what QEMU boots. The agent reads
// the data key and the credential from the ultravisor on the sim-sp port (pefuv.Serve; on
// hardware UV_ESMB_GET_FILE), gets its certificate from a real sealpod-kbs started with
// --insecure-sim-pef by signing the challenge with the credential, opens its envelope with
// the data key, pulls the ppc64le workload image from a local registry and runs it. A blob
// for another host key, and a changed kernel, are refused before QEMU starts.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/esm"
	"github.com/sealpod/sealpod/imagebuilder/pefseal"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/internal/repopath"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
	"github.com/sealpod/sealpod/simtee/pefuv"
	"github.com/sealpod/sealpod/tests/qemuvm"
)

// newPEFStack is the e2e stack for sim-pef: the ppc64le workload image in the registry, a
// broker that accepts sim-pef (and no sim), the ppc64le guest whose measured command line
// allows the plain-HTTP registry.
func newPEFStack(t *testing.T) *e2eStack {
	t.Helper()
	s := &e2eStack{root: repopath.Root(t), work: t.TempDir()}
	s.bin = filepath.Join(s.work, "bin")
	s.buildHostTools(t, []string{"GOARCH=ppc64le"})
	s.startServices(t, "ppc64le", false, "--insecure-sim-pef")
	s.guestDir = filepath.Join(s.work, "guest")
	cmdline := fmt.Sprintf("console=hvc0 quiet panic=-1 sealpod.insecure_registries=%s:%d", slirpHost, s.regPort)
	s.bundle = buildPPC64LEGuest(t, s.root, s.bin, s.guestDir, "--cmdline", cmdline)
	return s
}

// sealPEF seals sp for sim-pef as sealctl --tee sim-pef does: the envelope under a fresh data
// key, the ESM cpio for host over the bundle's kernel, initrd and command line with the data
// key and a fresh broker credential, the broker registration with the credential's public
// key. It returns the envelope and the path of the ESM cpio.
func (s *e2eStack) sealPEF(t *testing.T, sp *spec.Spec, sans []string, host *rsa.PublicKey) ([]byte, string) {
	t.Helper()
	teeName := string(tee.SimPEF)
	env, key := s.sealEnvelope(t, sp, teeName)
	d, err := pefseal.Measure(s.bundle.Kernel, s.bundle.Initrd, qemu.GuestFromBundle(s.bundle).Cmdline)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := pefseal.Seal(pefseal.Input{Hosts: []esm.HostKey{{Public: host, Comment: "sim-pef node"}}, Digests: d, DataKey: key})
	if err != nil {
		t.Fatal(err)
	}
	cpio := filepath.Join(s.work, sp.Workload+".cpio")
	if err := os.WriteFile(cpio, sealed.CPIO, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.admin.PutWorkload(ctx, registry.Workload{
		ID: sp.Workload, TEEs: []string{teeName}, EnvelopeDigest: envelope.Sum(env).String(), SANs: sans, DataKey: key,
		PEFCredential: hex.EncodeToString(sealed.Credential),
	}); err != nil {
		t.Fatalf("register workload %s: %v", sp.Workload, err)
	}
	return env, cpio
}

// bootPEF enters secure mode with the ultravisor of host for files (pefuv.Launch, as the
// shim does) and, only if that succeeds, boots the VM on the initrd it checked, serves the
// attachments on the sim-sp port and waits for the agent's Ping.
func (s *e2eStack) bootPEF(t *testing.T, host *rsa.PrivateKey, files pefuv.Files) (*guestVM, error) {
	t.Helper()
	dir, cleanup, err := qemuvm.ShortTempDir()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	initrd := filepath.Join(dir, "initrd-pef.img")
	svm, err := pefuv.New(host, nil).Launch(files, initrd)
	if err != nil {
		return nil, err
	}
	cfg := qemuvm.SimConfig(s.bundle, dir)
	cfg.TEE, cfg.Guest.Initrd = qemu.TEESimPEF, initrd
	if cfg.Guest.Kernel != files.Kernel || cfg.Guest.Cmdline != files.Cmdline {
		t.Fatalf("QEMU boots %s %q, the ultravisor checked %s %q", cfg.Guest.Kernel, cfg.Guest.Cmdline, files.Kernel, files.Cmdline)
	}
	g := &guestVM{}
	g.start(t, cfg, 60*time.Second, 5*time.Minute, "the ppc64le agent", func(ctx context.Context, spConn net.Conn) {
		if err := pefuv.Serve(ctx, spConn, svm, nil); err != nil {
			t.Logf("simulated ultravisor: %v", err)
		}
	})
	return g, nil
}

// changedKernel writes a copy of vmlinux with one loaded byte flipped.
func changedKernel(t *testing.T, vmlinux []byte, path string) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		t.Fatal(err)
	}
	k := bytes.Clone(vmlinux)
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Filesz > 0x200 {
			k[p.Off+0x100] ^= 1
			if err := os.WriteFile(path, k, 0o600); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatal("vmlinux has no loadable segment")
}

func TestSealedPodSimPEF(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the ppc64le guest build and the pseries boot")
	}
	requirePPC64LE(t)
	s := newPEFStack(t)
	host, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	sans := []string{"pef-web.default.svc.cluster.local", "10.0.2.15"}
	sp := podSpec(s, "pef-web", spec.LogsAllow)
	sp.Containers = sp.Containers[:1] // app: report
	env, cpio := s.sealPEF(t, sp, sans, &host.PublicKey)
	guest := qemu.GuestFromBundle(s.bundle)
	files := pefuv.Files{Kernel: guest.Kernel, ESMCpio: cpio, Initrd: guest.Initrd, Cmdline: guest.Cmdline}

	t.Run("refused", func(t *testing.T) {
		other, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.bootPEF(t, other, files); !errors.Is(err, esm.ErrNoLockbox) {
			t.Fatalf("a blob for another host key: %v, want ErrNoLockbox", err)
		}
		changed := files
		changed.Kernel = filepath.Join(t.TempDir(), "vmlinux")
		changedKernel(t, s.bundle.Kernel, changed.Kernel)
		if _, err := s.bootPEF(t, host, changed); !errors.Is(err, esm.ErrDigest) || !strings.Contains(err.Error(), "/digests/kernel") {
			t.Fatalf("a changed kernel: %v, want ErrDigest naming /digests/kernel", err)
		}
	})

	t.Run("run", func(t *testing.T) {
		g, err := s.bootPEF(t, host, files)
		if err != nil {
			t.Fatalf("the simulated ultravisor refused the sealed boot: %v", err)
		}
		t.Logf("ppc64le sim-pef agent ready %v after QEMU start", g.ready.Round(time.Millisecond))
		ctx := context.Background()
		a := g.agent
		t0 := time.Now()
		u, err := a.Unseal(ctx, &api.UnsealRequest{Envelope: env, Network: slirpNetwork()})
		if err != nil {
			t.Fatalf("Unseal: %v\nconsole:\n%s", err, g.vm.Console())
		}
		if u.Workload != sp.Workload || u.EnvelopeDigest != envelope.Sum(env).String() {
			t.Fatalf("Unseal answer %+v", u)
		}
		t.Logf("unsealed (ESM data key, broker certificate by the sealed credential) in %v", time.Since(t0).Round(time.Millisecond))
		t0 = time.Now()
		if _, err := a.CreateContainer(ctx, &api.CreateContainerRequest{Name: "app"}); err != nil {
			t.Fatalf("CreateContainer app: %v", err)
		}
		if _, err := a.StartContainer(ctx, &api.ContainerRequest{Name: "app"}); err != nil {
			t.Fatalf("StartContainer app: %v", err)
		}
		stdout, denied := readStream(t, a, "app", "", false)
		w, err := a.WaitProcess(ctx, &api.ProcessRequest{Name: "app"})
		if err != nil {
			t.Fatal(err)
		}
		want := "hello from the sealed pod\ngreeting=sealed-greeting-pef-web\n"
		if w.ExitStatus != 7 || denied || !strings.HasPrefix(stdout, want) {
			t.Fatalf("app: exit %d, denied %v, stdout %q; want exit 7 and %q first", w.ExitStatus, denied, stdout, want)
		}
		checkWorkloadCert(t, s, stdout, sans)
		t.Logf("ppc64le container pulled, ran and printed its marker in %v", time.Since(t0).Round(time.Millisecond))
		shutdown(t, g)
		for _, sealed := range []string{"sealed-greeting-pef-web", "/workload"} {
			if strings.Contains(g.vm.Console(), sealed) {
				t.Fatalf("sealed value %q appears on the host-visible console", sealed)
			}
		}
	})
}
