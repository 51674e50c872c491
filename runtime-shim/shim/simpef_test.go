package shim

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"debug/elf"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/guest-image/bundletest"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/esm"
	"github.com/sealpod/sealpod/imagebuilder/pefseal"
	"github.com/sealpod/sealpod/internal/repopath"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/runtime-shim/config"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
)

// loadedByte is the offset of a byte of the ELF kernel k that is loaded (objcopy keeps it, so
// the kernel digest covers it): the first byte of the first loadable segment with contents.
func loadedByte(t *testing.T, k []byte) int {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(k))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Filesz > 0 {
			return int(p.Off)
		}
	}
	t.Fatal("no loadable segment")
	return 0
}

// writeRSAKey writes k as a PKCS#8 PEM file (the node's simPEFKey).
func writeRSAKey(t *testing.T, k *rsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "pef-host.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSimPEFService: for sim-pef the shim's software ultravisor checks exactly what QEMU
// boots — the bundle's kernel, the ESM cpio + initrd (which then replaces initrd.img) and the
// command line — and refuses the boot, leaving initrd.img as it was, for another host's blob,
// a changed kernel, or no blob.
func TestSimPEFService(t *testing.T) {
	vmlinux, err := os.ReadFile(filepath.Join(repopath.Root(t), "imagebuilder/esm/testdata/objcopy/layout.elf"))
	if err != nil {
		t.Fatal(err)
	}
	var keys [2]*rsa.PrivateKey
	for i := range keys {
		if keys[i], err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			t.Fatal(err)
		}
	}
	// sealedBundle writes a bundle with vmlinux as its kernel and, unless noBlob, the ESM cpio
	// sealed for host over it; then applies mod to the kernel on disk.
	sealedBundle := func(t *testing.T, host *rsa.PrivateKey, noBlob bool, mod func(kernel []byte)) *bundle.Bundle {
		dir := bundletest.Write(t)
		if err := os.WriteFile(filepath.Join(dir, bundle.KernelFile), vmlinux, 0o644); err != nil {
			t.Fatal(err)
		}
		g, err := bundle.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		d, err := pefseal.Measure(vmlinux, g.Initrd, qemu.GuestFromBundle(g).Cmdline)
		if err != nil {
			t.Fatal(err)
		}
		s, err := pefseal.Seal(pefseal.Input{Hosts: []esm.HostKey{{Public: &host.PublicKey}}, Digests: d, DataKey: make([]byte, 32)})
		if err != nil {
			t.Fatal(err)
		}
		if !noBlob {
			if err := os.WriteFile(filepath.Join(dir, ESMCpioFile), s.CPIO, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if mod != nil {
			k := bytes.Clone(vmlinux)
			mod(k)
			if err := os.WriteFile(filepath.Join(dir, bundle.KernelFile), k, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return g
	}
	cfg := &config.Config{TEEs: []string{"sim-pef"}, SimPEFKey: writeRSAKey(t, keys[0])}
	env := sealedEnvelope(t, "sim-pef")

	t.Run("sealed for this host", func(t *testing.T) {
		g := sealedBundle(t, keys[0], false, nil)
		svc, err := simService(tee.SimPEF, cfg, g, env)
		if err != nil || svc == nil || svc.name != "simulated PEF ultravisor" {
			t.Fatalf("simService: %+v, %v", svc, err)
		}
		cpio, _ := os.ReadFile(filepath.Join(g.Dir, ESMCpioFile))
		booted, _ := os.ReadFile(filepath.Join(g.Dir, bundle.InitrdFile))
		if !bytes.Equal(booted, append(cpio, g.Initrd...)) {
			t.Fatal("initrd.img is not the checked ESM cpio + initrd")
		}
	})
	for _, tc := range []struct {
		name    string
		host    *rsa.PrivateKey
		noBlob  bool
		mod     func([]byte)
		wantErr string
	}{
		{"blob for another host", keys[1], false, nil, "no lockbox"},
		{"changed kernel", keys[0], false, func(k []byte) { k[loadedByte(t, k)] ^= 1 }, "/digests/kernel"},
		{"no ESM blob", keys[0], true, nil, "no ESM blob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := sealedBundle(t, tc.host, tc.noBlob, tc.mod)
			_, err := simService(tee.SimPEF, cfg, g, env)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("simService: %v, want an error containing %q", err, tc.wantErr)
			}
			booted, _ := os.ReadFile(filepath.Join(g.Dir, bundle.InitrdFile))
			if !bytes.Equal(booted, g.Initrd) {
				t.Fatal("a refused boot changed initrd.img")
			}
		})
	}
}
