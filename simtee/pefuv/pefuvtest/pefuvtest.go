// Package pefuvtest seals test boots for the simulated ultravisor and serves them, for the
// tests of simtee/pefuv and of the agent's sim-pef unseal (test code only: it imports testing).
package pefuvtest

import (
	"bytes"
	"context"
	"crypto/rsa"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/esm"
	"github.com/sealpod/sealpod/imagebuilder/pefseal"
	"github.com/sealpod/sealpod/internal/repopath"
	"github.com/sealpod/sealpod/simtee/pefuv"
)

// cmdline is the command line of the boots SealBoot seals.
const cmdline = "console=hvc0 quiet panic=-1"

// SealBoot seals, as pefseal does, an ESM blob for the host key host (its lockbox comment
// comment) carrying dataKey and a fresh broker credential over a ppc64le ELF fixture
// (imagebuilder/esm's objcopy layout.elf) as vmlinux, a filler initrd and its command line. It returns
// the boot as the ultravisor sees it (the ESM cpio in front of the initrd) and the sealing.
func SealBoot(t testing.TB, host *rsa.PublicKey, comment string, dataKey []byte) (pefuv.Boot, *pefseal.Sealed) {
	t.Helper()
	vmlinux, err := os.ReadFile(filepath.Join(repopath.Root(t), "imagebuilder/esm/testdata/objcopy/layout.elf"))
	if err != nil {
		t.Fatal(err)
	}
	initrd := bytes.Repeat([]byte("sealpod guest initrd "), 100)
	d, err := pefseal.Measure(vmlinux, initrd, cmdline)
	if err != nil {
		t.Fatal(err)
	}
	s, err := pefseal.Seal(pefseal.Input{Hosts: []esm.HostKey{{Public: host, Comment: comment}}, Digests: d, DataKey: dataKey})
	if err != nil {
		t.Fatal(err)
	}
	return pefuv.Boot{Kernel: vmlinux, Initrd: append(bytes.Clone(s.CPIO), initrd...), Cmdline: cmdline}, s
}

// ServePipe enters secure mode for boot with host's ultravisor and serves its attachments
// (pefuv.Serve) on one end of a pipe until ctx ends or the other end closes. It returns that
// other end, the guest's (closed when t ends), and the channel Serve's result arrives on.
func ServePipe(t testing.TB, ctx context.Context, host *rsa.PrivateKey, boot pefuv.Boot) (net.Conn, <-chan error) {
	t.Helper()
	svm, err := pefuv.New(host, nil).EnterSecureMode(boot)
	if err != nil {
		t.Fatal(err)
	}
	g, h := net.Pipe()
	t.Cleanup(func() { g.Close() })
	served := make(chan error, 1)
	go func() { served <- pefuv.Serve(ctx, h, svm, nil) }()
	return g, served
}
