package pefuv_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"debug/elf"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/esm"
	"github.com/sealpod/sealpod/imagebuilder/pefseal"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/simtee/pefuv"
	"github.com/sealpod/sealpod/simtee/pefuv/pefuvtest"
)

var (
	keysOnce sync.Once
	keys     [2]*rsa.PrivateKey
)

// hostKeys returns two RSA-2048 keys: [0] authorised, [1] another host's.
func hostKeys(t *testing.T) [2]*rsa.PrivateKey {
	t.Helper()
	keysOnce.Do(func() {
		for i := range keys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			keys[i] = k
		}
	})
	return keys
}

// sealed is a boot sealed by pefseal for hostKeys()[0]: a ppc64le ELF (imagebuilder/esm's
// objcopy fixture) as vmlinux, an initrd, a command line.
type sealed struct {
	boot    pefuv.Boot
	dataKey []byte
	cred    []byte // public key
}

func seal(t *testing.T) sealed {
	t.Helper()
	dataKey := bytes.Repeat([]byte{7}, api.DataKeySize)
	boot, s := pefuvtest.SealBoot(t, &hostKeys(t)[0].PublicKey, "node1", dataKey)
	return sealed{boot: boot, dataKey: dataKey, cred: s.Credential}
}

// TestEnterSecureMode: the authorised host's ultravisor opens the blob of the sealed boot and
// hands out the data key and the broker credential, each once.
func TestEnterSecureMode(t *testing.T) {
	s := seal(t)
	uv := pefuv.New(hostKeys(t)[0], nil)
	svm, err := uv.EnterSecureMode(s.boot)
	if err != nil {
		t.Fatal(err)
	}
	if svm.Lockbox != "lockbox-1" || strings.Join(svm.Names(), ",") != esm.AttachBrokerCredential+","+esm.AttachDataKey {
		t.Fatalf("lockbox %s, attachments %q", svm.Lockbox, svm.Names())
	}
	key, err := svm.GetFile(esm.AttachDataKey)
	if err != nil || !bytes.Equal(key, s.dataKey) {
		t.Fatalf("data key %x, %v", key, err)
	}
	raw, err := svm.GetFile(esm.AttachBrokerCredential)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := api.ParsePEFCredential(raw)
	if err != nil || !bytes.Equal(cred.Public().(ed25519.PublicKey), s.cred) {
		t.Fatalf("credential: %v (public key differs from the registered one?)", err)
	}
	if _, err := svm.GetFile(esm.AttachDataKey); !errors.Is(err, pefuv.ErrFileRead) {
		t.Errorf("second read: %v, want ErrFileRead", err)
	}
	if _, err := svm.GetFile("other"); !errors.Is(err, pefuv.ErrNoFile) {
		t.Errorf("unknown file: %v, want ErrNoFile", err)
	}
}

// TestEnterSecureModeRefuses: another host's key, and any change to what boots, is refused
// with an error naming the cause.
func TestEnterSecureModeRefuses(t *testing.T) {
	s := seal(t)
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	_, rest, err := pefseal.SplitInitrd(s.boot.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	cpioLen := len(s.boot.Initrd) - len(rest)
	at := keptKernelByte(t, s.boot.Kernel)
	for _, tc := range []struct {
		name string
		key  int
		mod  func(b *pefuv.Boot)
		want error
		in   string
	}{
		{"another host", 1, func(*pefuv.Boot) {}, esm.ErrNoLockbox, "ESM blob"},
		{"changed kernel", 0, func(b *pefuv.Boot) { b.Kernel = flip(b.Kernel, at) }, esm.ErrDigest, "/digests/kernel"},
		{"changed initrd", 0, func(b *pefuv.Boot) { b.Initrd = flip(b.Initrd, len(b.Initrd)-1) }, esm.ErrDigest, "/digests/initrd"},
		{"changed cmdline", 0, func(b *pefuv.Boot) { b.Cmdline += " init=/bin/sh" }, esm.ErrDigest, "/digests/bootargs"},
		{"no ESM cpio", 0, func(b *pefuv.Boot) { b.Initrd = b.Initrd[cpioLen:] }, pefseal.ErrNoESM, "initrd"},
		{"altered blob", 0, func(b *pefuv.Boot) { b.Initrd = flip(b.Initrd, cpioLen-700) }, nil, "ESM blob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := s.boot
			tc.mod(&b)
			_, err := pefuv.New(hostKeys(t)[tc.key], nil).EnterSecureMode(b)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.in) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tc.want, tc.in)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestRTASIsTheSimulatedFirmwares: a blob sealed with another RTAS digest does not boot on the
// simulated firmware.
func TestRTASIsTheSimulatedFirmwares(t *testing.T) {
	s := seal(t)
	blob, rest, err := pefseal.SplitInitrd(s.boot.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	c, err := esm.Open(blob, hostKeys(t)[0])
	if err != nil {
		t.Fatal(err)
	}
	d := c.Digests
	d.RTAS = sha512.Sum512([]byte("another firmware's RTAS"))
	other, err := esm.Write(esm.Spec{Hosts: []esm.HostKey{{Public: &hostKeys(t)[0].PublicKey}}, Digests: d, Attachments: c.Attachments})
	if err != nil {
		t.Fatal(err)
	}
	b := s.boot
	b.Initrd = append(pefseal.ESMCpio(other), rest...)
	if _, err := pefuv.New(hostKeys(t)[0], nil).EnterSecureMode(b); !errors.Is(err, esm.ErrDigest) || !strings.Contains(err.Error(), "/digests/rtas") {
		t.Fatalf("err = %v, want a /digests/rtas ErrDigest", err)
	}
}

func TestLoadHostKey(t *testing.T) {
	dir := t.TempDir()
	k := hostKeys(t)[0]
	p8, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"pkcs8.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		"pkcs1.pem": pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}),
		"pub.pem":   pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("x")}),
		"junk.pem":  []byte("not pem"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]string{"pkcs8.pem": "", "pkcs1.pem": "", "pub.pem": "want PRIVATE KEY", "junk.pem": "no PEM block", "missing.pem": "no such file"} {
		got, err := pefuv.LoadHostKey(filepath.Join(dir, name))
		switch {
		case want == "" && (err != nil || !got.Equal(k)):
			t.Errorf("%s: %v", name, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%s: err = %v, want %q", name, err, want)
		}
	}
}

// keptKernelByte returns the offset of a byte of vmlinux that objcopy keeps (so the kernel
// digest must change with it): the first byte of the first allocated section with contents.
func keptKernelByte(t *testing.T, vmlinux []byte) int {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range f.Sections {
		if sec.Flags&elf.SHF_ALLOC != 0 && sec.Type == elf.SHT_PROGBITS && sec.Size > 0 {
			return int(sec.Offset)
		}
	}
	t.Fatal("the fixture has no allocated section with contents")
	return -1
}
