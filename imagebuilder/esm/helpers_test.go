package esm

import (
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixtureDir holds the svm-tools interop fixtures (testdata/svmtools/README.md).
const fixtureDir = "testdata/svmtools"

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func privKey(t testing.TB, name string) *rsa.PrivateKey {
	t.Helper()
	blk, _ := pem.Decode(readFixture(t, name+".key"))
	if blk == nil {
		t.Fatalf("%s.key: no PEM", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatalf("%s.key: %v", name, err)
	}
	return k.(*rsa.PrivateKey)
}

// fixtureBoot is what the fixtures' digests cover.
func fixtureBoot(t testing.TB) Boot {
	return Boot{
		RTAS:     []byte("stand-in RTAS: svm-tools ships only the digest of its RTAS"),
		Kernel:   readFixture(t, "kernel.bin"),
		Initrd:   readFixture(t, "initrd.cpio"),
		Bootargs: string(readFixture(t, "bootargs.txt")),
	}
}

// fixtureDigests computes, independently of any blob, the digests svm-tools seals for the
// fixture inputs.
func fixtureDigests(t testing.TB) Digests {
	b := fixtureBoot(t)
	k, size, err := KernelDigest(b.Kernel)
	if err != nil {
		t.Fatal(err)
	}
	return Digests{RTAS: RTASDigestSVMTools(), Kernel: k, KernelSize: size,
		Initrd: sha512.Sum512(b.Initrd), Bootargs: BootargsDigest(b.Bootargs)}
}

// sealpodSpec is a Spec over the fixture inputs for hosts host1 and host2.
func sealpodSpec(t testing.TB) Spec {
	return Spec{
		Hosts: []HostKey{
			{Public: &privKey(t, "host1").PublicKey, Comment: "host1 tpm"},
			{Public: &privKey(t, "host2").PublicKey},
		},
		Origin:        &HostKey{Public: &privKey(t, "owner").PublicKey, Comment: "owner"},
		Digests:       fixtureDigests(t),
		DigestComment: "sealpod test",
		Attachments: []Attachment{
			{Name: AttachDataKey, Data: readFixture(t, "data-key.bin")},
			{Name: AttachBrokerCredential, Data: readFixture(t, "broker-cred.txt"), Comment: "cred"},
		},
	}
}

// mutate decodes blob, applies f to the property at path (a devicetree path; "files-fdt:"
// descends into the nested tree) and re-encodes. f returning nil deletes the property.
func mutate(t testing.TB, blob []byte, path string, f func([]byte) []byte) []byte {
	t.Helper()
	root, err := decodeFDT(blob)
	if err != nil {
		t.Fatal(err)
	}
	outer, inner, nested := strings.Cut(path, ":")
	if nested {
		fdtProp := findProp(t, root, outer)
		sub, err := decodeFDT(*fdtProp)
		if err != nil {
			t.Fatal(err)
		}
		p := findProp(t, sub, inner)
		*p = f(*p)
		*fdtProp = encodeFDT(sub)
		return encodeFDT(root)
	}
	p := findProp(t, root, outer)
	*p = f(*p)
	return encodeFDT(root)
}

func findProp(t testing.TB, root *node, path string) *[]byte {
	t.Helper()
	parts := strings.Split(strings.Trim(path, "/"), "/")
	n := root
	for _, name := range parts[:len(parts)-1] {
		if n = n.child(name); n == nil {
			t.Fatalf("no node %s in %s", name, path)
		}
	}
	for i := range n.props {
		if n.props[i].name == parts[len(parts)-1] {
			return &n.props[i].value
		}
	}
	t.Fatalf("no property %s", path)
	return nil
}

func flipLast(b []byte) []byte {
	c := append([]byte(nil), b...)
	c[len(c)-1] ^= 0x01
	return c
}

// wantErr checks that err wraps kind and names field.
func wantErr(t *testing.T, err, kind error, field string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v naming %q", kind, field)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("error %q does not wrap %v", err, kind)
	}
	if !strings.Contains(err.Error(), field) {
		t.Fatalf("error %q does not name %q", err, field)
	}
}
