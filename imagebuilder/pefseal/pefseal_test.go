package pefseal

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/esm"
	"github.com/sealpod/sealpod/kbs/api"
)

// vmlinux is the ppc64le ELF fixture of imagebuilder/esm (source: its testdata/svmtools/README.md).
func vmlinux(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("../esm/testdata/svmtools/vmlinux")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	hostKeyOnce = map[int]*rsa.PrivateKey{}
)

func hostKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	if k := hostKeyOnce[i]; k != nil {
		return k
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	hostKeyOnce[i] = k
	return k
}

func writePubPEM(t testing.TB, dir, name string, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSealOpens: the blob Seal writes sits in the cpio where the ultravisor looks for it, opens
// with each host key, carries the data key and a credential whose public key Seal returns,
// and its digests match the kernel, initrd and command line of the boot (the initrd without
// the ESM cpio, as the ultravisor hashes it).
func TestSealOpens(t *testing.T) {
	initrd := bytes.Repeat([]byte("initramfs "), 1000)
	dataKey := bytes.Repeat([]byte{7}, 32)
	kernel := vmlinux(t)
	d, err := Measure(kernel, initrd, "console=hvc0 quiet")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Seal(Input{Hosts: []esm.HostKey{{Public: &hostKey(t, 1).PublicKey, Comment: "host1"}, {Public: &hostKey(t, 2).PublicKey}},
		Digests: d, DataKey: dataKey})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.CPIO)%512 != 0 {
		t.Fatalf("ESM cpio is %d bytes, want a multiple of 512", len(s.CPIO))
	}
	boot := append(append([]byte(nil), s.CPIO...), initrd...)
	blob, rest, err := SplitInitrd(boot)
	if err != nil {
		t.Fatalf("SplitInitrd: %v", err)
	}
	if !bytes.Equal(blob, s.Blob) || !bytes.Equal(rest, initrd) {
		t.Fatalf("SplitInitrd: blob %d bytes (want %d), rest %d bytes (want %d)", len(blob), len(s.Blob), len(rest), len(initrd))
	}
	img, err := esm.KernelImage(kernel)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		c, err := esm.Open(blob, hostKey(t, i))
		if err != nil {
			t.Fatalf("open with host %d: %v", i, err)
		}
		if err := c.Digests.Verify(esm.Boot{Kernel: img, Initrd: rest, Bootargs: "console=hvc0 quiet", RTAS: nil}); err == nil ||
			!strings.Contains(err.Error(), "rtas") || strings.Contains(err.Error(), "kernel") || strings.Contains(err.Error(), "initrd") || strings.Contains(err.Error(), "bootargs") {
			t.Fatalf("Verify = %v; want only rtas to differ (svm-tools' built-in RTAS digest)", err)
		}
		if k, ok := c.Attachment(esm.AttachDataKey); !ok || !bytes.Equal(k, dataKey) {
			t.Fatalf("data key attachment %x, %v", k, ok)
		}
		raw, ok := c.Attachment(esm.AttachBrokerCredential)
		if !ok {
			t.Fatal("no broker credential attachment")
		}
		priv, err := api.ParsePEFCredential(raw)
		if err != nil || !priv.Public().(ed25519.PublicKey).Equal(s.Credential) {
			t.Fatalf("credential attachment: %v (or not the returned public key)", err)
		}
	}
	if _, err := esm.Open(blob, hostKey(t, 3)); !errors.Is(err, esm.ErrNoLockbox) {
		t.Fatalf("open with another key: %v, want ErrNoLockbox", err)
	}
	// A second seal makes another credential.
	s2, err := Seal(Input{Hosts: []esm.HostKey{{Public: &hostKey(t, 1).PublicKey}}, Digests: d, DataKey: dataKey})
	if err != nil || s2.Credential.Equal(s.Credential) {
		t.Fatalf("second seal: %v (credential reused: %v)", err, err == nil)
	}
}

func TestMeasure(t *testing.T) {
	kernel := vmlinux(t)
	d, err := Measure(kernel, []byte("initrd"), "a b")
	if err != nil {
		t.Fatal(err)
	}
	kd, ks, err := esm.KernelDigestELF(kernel)
	if err != nil {
		t.Fatal(err)
	}
	if d.Kernel != kd || d.KernelSize != ks || d.Initrd != sha512.Sum512([]byte("initrd")) || d.Bootargs != sha512.Sum512([]byte("a b")) ||
		hex.EncodeToString(d.RTAS[:]) != esm.SVMToolsRTASDigest {
		t.Fatalf("Measure = %+v", d)
	}
	if _, err := Measure([]byte("MZ not an ELF"), nil, ""); err == nil || !strings.Contains(err.Error(), "vmlinux") {
		t.Fatalf("Measure(bzImage) = %v, want an error naming vmlinux", err)
	}
}

func TestSealErrors(t *testing.T) {
	d, err := Measure(vmlinux(t), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	host := []esm.HostKey{{Public: &hostKey(t, 1).PublicKey}}
	for name, in := range map[string]Input{
		"no hosts":       {Digests: d, DataKey: make([]byte, 32)},
		"short data key": {Hosts: host, Digests: d, DataKey: make([]byte, 16)},
	} {
		if _, err := Seal(in); err == nil {
			t.Errorf("%s: Seal succeeded", name)
		}
	}
}

func TestReadHostKeys(t *testing.T) {
	dir := t.TempDir()
	good := writePubPEM(t, dir, "host1.pem", &hostKey(t, 1).PublicKey)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	ed := writePubPEM(t, dir, "ed.pem", edPub)
	notPEM := filepath.Join(dir, "x.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := ReadHostKeys([]string{good})
	if err != nil || len(keys) != 1 || !keys[0].Public.Equal(&hostKey(t, 1).PublicKey) || keys[0].Comment != "host1.pem" {
		t.Fatalf("ReadHostKeys = %+v, %v", keys, err)
	}
	for _, p := range []string{ed, notPEM, filepath.Join(dir, "missing.pem")} {
		if _, err := ReadHostKeys([]string{p}); err == nil || !strings.Contains(err.Error(), filepath.Base(p)) {
			t.Errorf("ReadHostKeys(%s) = %v, want an error naming the file", p, err)
		}
	}
	if _, err := ReadHostKeys([]string{good, good}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate key: %v", err)
	}
}

// TestCPIOMatchesGNUCpio: ESMCpio is byte-for-byte what svm-tools' `svm add` gets from GNU cpio
// (find . -print0 | cpio --null --create --format=newc) apart from inode numbers and mtimes,
// which GNU cpio takes from the file system and Sealpod fixes to keep images reproducible.
// Needs /usr/bin/cpio (Debian package cpio, in the CI image).
func TestCPIOMatchesGNUCpio(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Fatalf("GNU cpio is needed (apt-get install cpio): %v", err)
	}
	blob := []byte("\xd0\x0d\xfe\xed some blob bytes")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, CPIODir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, CPIODir, BlobName), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{root, filepath.Join(root, "opt"), filepath.Join(root, "opt/ibm"), filepath.Join(root, CPIODir)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, CPIODir, BlobName), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "gnu.cpio")
	cmd := exec.Command("sh", "-c", "find . -print0 | "+cpio+" --null --create --quiet --format=newc -F "+out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GNU cpio: %v\n%s", err, b)
	}
	gnu, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	ours := ESMCpio(blob)
	if len(gnu) != len(ours) {
		t.Fatalf("GNU cpio wrote %d bytes, ESMCpio %d", len(gnu), len(ours))
	}
	norm := func(b []byte) []byte {
		b = bytes.Clone(b)
		for off := 0; off+110 <= len(b) && string(b[off:off+6]) == "070701"; {
			copy(b[off+6:off+14], "00000000")          // c_ino
			copy(b[off+22:off+38], "0000000000000000") // c_uid, c_gid (the caller's)
			copy(b[off+46:off+54], "00000000")         // c_mtime
			copy(b[off+62:off+78], "0000000000000000")
			ns, fs := hexField(b[off+94:off+102]), hexField(b[off+54:off+62])
			off = align4(align4(off+110+ns) + fs)
		}
		return b
	}
	if g, o := norm(gnu), norm(ours); !bytes.Equal(g, o) {
		t.Fatalf("ESMCpio differs from GNU cpio's output:\n gnu  %q\n ours %q", g, o)
	}
}

func hexField(b []byte) int {
	v, _ := parseHex8(b)
	return int(v)
}
