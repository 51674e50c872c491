package esm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestOpenSVMToolsBlobs opens blobs written by open-power/svm-tools' own Python functions
// (testdata/svmtools/README.md) and checks their digests against values computed here from
// the same inputs.
func TestOpenSVMToolsBlobs(t *testing.T) {
	want := fixtureDigests(t)
	for _, tc := range []struct {
		blob, key, lockbox string
	}{
		{"make.esm", "host1", "lockbox-1"},
		{"make.esm", "host2", "lockbox-2"},
		{"make.esm", "owner", "origin-lockbox"},
		{"steps.esm", "host2", "lockbox-1"},
		{"steps.esm", "owner", "origin-lockbox"},
	} {
		t.Run(tc.blob+"/"+tc.key, func(t *testing.T) {
			c, err := Open(readFixture(t, tc.blob), privKey(t, tc.key))
			if err != nil {
				t.Fatal(err)
			}
			if c.Lockbox != tc.lockbox {
				t.Errorf("opened %s, want %s", c.Lockbox, tc.lockbox)
			}
			if c.Digests != want {
				t.Errorf("digests\n got %+v\nwant %+v", c.Digests, want)
			}
			for name, file := range map[string]string{AttachDataKey: "data-key.bin", AttachBrokerCredential: "broker-cred.txt"} {
				got, ok := c.Attachment(name)
				if !ok || !bytes.Equal(got, readFixture(t, file)) {
					t.Errorf("attachment %s: %q, want the contents of %s", name, got, file)
				}
			}
		})
	}
	for _, tc := range []struct{ blob, key string }{{"make.esm", "host3"}, {"steps.esm", "host1"}} {
		t.Run(tc.blob+"/"+tc.key+"-refused", func(t *testing.T) {
			_, err := Open(readFixture(t, tc.blob), privKey(t, tc.key))
			wantErr(t, err, ErrNoLockbox, "/lockboxes")
		})
	}
}

// TestSVMToolsFingerprints: svm-tools hashes the public key file as given (create,
// authorize) and the PEM it derives from a private key (extract_symkey); both must equal
// KeyFingerprint, or neither side finds the other's lockboxes.
func TestSVMToolsFingerprints(t *testing.T) {
	b, err := Parse(readFixture(t, "make.esm"))
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"owner", "host1", "host2"} {
		fileHash := sha256.Sum256(readFixture(t, name+".pub.pem"))
		ours, err := KeyFingerprint(&privKey(t, name).PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		var lb *Lockbox
		for j := range b.Lockboxes {
			if b.Lockboxes[j].Name == []string{"origin-lockbox", "lockbox-1", "lockbox-2"}[i] {
				lb = &b.Lockboxes[j]
			}
		}
		if lb == nil || lb.Fingerprint != fileHash || ours != fileHash {
			t.Errorf("%s: lockbox %+v, file hash %x, KeyFingerprint %x", name, lb, fileHash, ours)
		}
	}
}

// TestOpenOlderFileLayout: attachments directly under /file (what `esm extract` reads)
// open like those in files-fdt (what `esm attach` writes).
func TestOpenOlderFileLayout(t *testing.T) {
	root, err := decodeFDT(readFixture(t, "make.esm"))
	if err != nil {
		t.Fatal(err)
	}
	file := root.child("file")
	nested, _ := file.prop("files-fdt")
	sub, err := decodeFDT(nested)
	if err != nil {
		t.Fatal(err)
	}
	file.props = nil
	file.children = sub.child("files").children
	c, err := Open(encodeFDT(root), privKey(t, "host1"))
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := c.Attachment(AttachDataKey); !ok || !bytes.Equal(got, readFixture(t, "data-key.bin")) {
		t.Errorf("data key %x", got)
	}
}

// svmToolResult is what hack/svmtools/svmtools_open.py prints.
type svmToolResult struct {
	Validated   bool              `json:"validated"`
	Digests     map[string]any    `json:"digests"`
	Attachments map[string]string `json:"attachments"`
	Extracted   map[string]string `json:"extracted_by_esm_extract"`
}

// TestSVMToolOpensSealpodBlob (opt-in: SVM_TOOL=<svm-tools checkout>, Debian's python3 with
// python3-pycryptodome and python3-libfdt): svm-tools' validator, lockbox and AES-GCM code
// open a blob Write made, with each host's private key.
func TestSVMToolOpensSealpodBlob(t *testing.T) {
	checkout := os.Getenv("SVM_TOOL")
	if checkout == "" {
		t.Skip("SVM_TOOL not set: opt-in interop check against an open-power/svm-tools checkout")
	}
	spec := sealpodSpec(t)
	blob, err := Write(spec)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "sealpod.esm")
	if err := os.WriteFile(path, blob, 0o600); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs("../../hack/svmtools/svmtools_open.py")
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"host1", "host2", "host3"} {
		t.Run(host, func(t *testing.T) {
			key, err := filepath.Abs(filepath.Join(fixtureDir, host+".key"))
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("/usr/bin/python3", "-W", "ignore", script, checkout, path, key)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if host == "host3" { // not authorised: svm-tools must refuse too
				if err == nil || !bytes.Contains(stderr.Bytes(), []byte("Not an authorized key")) {
					t.Fatalf("svm-tools opened a blob for an unauthorised key: %v %s", err, stderr.Bytes())
				}
				return
			}
			if err != nil {
				t.Fatalf("svm-tools: %v\n%s", err, stderr.Bytes())
			}
			var r svmToolResult
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			d := spec.Digests
			for name, want := range map[string]string{
				"algorithm": "SHA512", "rtas": hex.EncodeToString(d.RTAS[:]), "kernel": hex.EncodeToString(d.Kernel[:]),
				"initrd": hex.EncodeToString(d.Initrd[:]), "bootargs": hex.EncodeToString(d.Bootargs[:]),
			} {
				if r.Digests[name] != want {
					t.Errorf("svm-tools digest %s = %v, want %s", name, r.Digests[name], want)
				}
			}
			if ks, _ := r.Digests["kernel-size"].(float64); uint32(ks) != d.KernelSize {
				t.Errorf("svm-tools kernel-size %v, want %d", r.Digests["kernel-size"], d.KernelSize)
			}
			for _, a := range spec.Attachments {
				if r.Attachments[a.Name] != hex.EncodeToString(a.Data) {
					t.Errorf("svm-tools attachment %s = %s, want %x", a.Name, r.Attachments[a.Name], a.Data)
				}
			}
			if r.Extracted[AttachBrokerCredential] != hex.EncodeToString(readFixture(t, "broker-cred.txt")) {
				t.Errorf("esm_extract read %s as %q", AttachBrokerCredential, r.Extracted[AttachBrokerCredential])
			}
			if !r.Validated || len(r.Attachments) != len(spec.Attachments) {
				t.Errorf("svm-tools result %+v", r)
			}
		})
	}
}
