package pefuv_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/imagebuilder/esm"
	"github.com/sealpod/sealpod/imagebuilder/pefseal"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/simtee/pefuv"
	"github.com/sealpod/sealpod/simtee/pefuv/pefuvtest"
)

// writeLaunch writes s's kernel, ESM cpio and guest initrd to dir as the node has them.
func writeLaunch(t *testing.T, dir string, s sealed) pefuv.Files {
	t.Helper()
	blob, rest, err := pefseal.SplitInitrd(s.boot.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	f := pefuv.Files{Kernel: filepath.Join(dir, "vmlinux"), ESMCpio: filepath.Join(dir, "app.cpio"), Initrd: filepath.Join(dir, "initrd.img"), Cmdline: s.boot.Cmdline}
	cpio := s.boot.Initrd[:len(s.boot.Initrd)-len(rest)]
	if len(blob) == 0 || len(cpio) == 0 {
		t.Fatal("no ESM cpio")
	}
	for p, b := range map[string][]byte{f.Kernel: s.boot.Kernel, f.ESMCpio: cpio, f.Initrd: rest} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// TestLaunch: Launch writes the initrd the ultravisor checked (cpio + initrd) and refuses —
// writing nothing — another host's blob, a changed kernel, a changed command line and an ESM
// cpio that is not one.
func TestLaunch(t *testing.T) {
	s := seal(t)
	dir := t.TempDir()
	f := writeLaunch(t, dir, s)
	uv := pefuv.New(hostKeys(t)[0], nil)
	out := filepath.Join(dir, "boot.img")
	svm, err := uv.Launch(f, out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, s.boot.Initrd) {
		t.Fatalf("booted initrd differs from the checked one (%v)", err)
	}
	if k, err := svm.GetFile(esm.AttachDataKey); err != nil || !bytes.Equal(k, s.dataKey) {
		t.Fatalf("data key %x, %v", k, err)
	}

	changedKernel := bytes.Clone(s.boot.Kernel)
	changedKernel[keptKernelByte(t, changedKernel)] ^= 1
	kpath := filepath.Join(dir, "vmlinux-changed")
	if err := os.WriteFile(kpath, changedKernel, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		uv   *pefuv.Ultravisor
		mod  func(*pefuv.Files)
		want error
	}{
		{"another host's key", pefuv.New(hostKeys(t)[1], nil), func(*pefuv.Files) {}, esm.ErrNoLockbox},
		{"changed kernel", uv, func(f *pefuv.Files) { f.Kernel = kpath }, esm.ErrDigest},
		{"changed command line", uv, func(f *pefuv.Files) { f.Cmdline += " init=/bin/sh" }, esm.ErrDigest},
		{"no ESM cpio", uv, func(f *pefuv.Files) { f.ESMCpio = f.Initrd }, pefseal.ErrNoESM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := f
			tc.mod(&g)
			out := filepath.Join(t.TempDir(), "boot.img")
			if _, err := tc.uv.Launch(g, out); !errors.Is(err, tc.want) {
				t.Fatalf("Launch: %v, want %v", err, tc.want)
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("refused launch left %s (%v)", out, err)
			}
		})
	}
}

// TestServe: on the simulated-TEE port the node names sim-pef, hands out each attachment
// once, and refuses reports, quotes, unknown and over-long names.
func TestServe(t *testing.T) {
	s := seal(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	g, served := pefuvtest.ServePipe(t, ctx, hostKeys(t)[0], s.boot)
	c := simsp.NewClient(g)
	if got, err := c.TEE(ctx); err != nil || got != tee.SimPEF {
		t.Fatalf("TEE = %q, %v; want sim-pef", got, err)
	}
	if got, err := c.GetESMFile(ctx, esm.AttachDataKey); err != nil || !bytes.Equal(got, s.dataKey) {
		t.Fatalf("data key %x, %v", got, err)
	}
	raw, err := c.GetESMFile(ctx, esm.AttachBrokerCredential)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := api.ParsePEFCredential(raw)
	if err != nil || !bytes.Equal(cred.Public().(ed25519.PublicKey), s.cred) {
		t.Fatalf("credential: %v (public key differs from the registered one?)", err)
	}
	for name, want := range map[string]error{
		esm.AttachDataKey: simsp.ErrRefused, // once per boot
		"no-such-file":    simsp.ErrRefused,
	} {
		if _, err := c.GetESMFile(ctx, name); !errors.Is(err, want) {
			t.Errorf("GetESMFile(%q) = %v, want %v", name, err, want)
		}
	}
	if _, err := c.GetReport(ctx, [64]byte{1}); !errors.Is(err, simsp.ErrRefused) {
		t.Errorf("report from a sim-pef host: %v, want ErrRefused", err)
	}
	if _, err := c.GetQuote(ctx, [64]byte{1}); !errors.Is(err, simsp.ErrRefused) {
		t.Errorf("quote from a sim-pef host: %v, want ErrRefused", err)
	}
	cancel()
	g.Close()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}
