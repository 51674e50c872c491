package cli

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/sealpod/sealpod/guest-image/bundletest"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/esm"
	"github.com/sealpod/sealpod/imagebuilder/image"
	"github.com/sealpod/sealpod/imagebuilder/pefseal"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/client"
	"github.com/sealpod/sealpod/kbs/kbstest"
)

// The ppc64le vmlinux fixture of imagebuilder/esm (source: its testdata/svmtools/README.md).
const pefVmlinux = "../../../imagebuilder/esm/testdata/svmtools/vmlinux"

// pefBundle is a guest bundle whose kernel is a ppc64le vmlinux.
func pefBundle(t *testing.T) string {
	t.Helper()
	dir := bundletest.Write(t)
	k, err := os.ReadFile(pefVmlinux)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, bundle.KernelFile), k, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// pefHost writes a host's RSA public key as PEM and returns the private key and the file.
func pefHost(t *testing.T, dir, name string) (*rsa.PrivateKey, string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return k, p
}

func readImageFile(t *testing.T, img v1.Image, name string) []byte {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("no %s in the image", name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// TestImageCreatePEF: --tee pef seals each workload's data key and a fresh broker credential
// into an ESM blob for the --pef-host-key hosts, puts it into the image as svm-tools' cpio
// (what the runtime prepends to the initrd), and registers the credential's public key; the
// blob opens with each host's private key, its digests are those of the bundle's kernel,
// initrd and the workload's command line, and the credential it releases gets the
// workload's key from the broker.
func TestImageCreatePEF(t *testing.T) {
	// sim-pef seals the same way (the node's software ultravisor holds a host key).
	for _, teeName := range []string{api.TEEPEF, api.TEESimPEF} {
		t.Run(teeName, func(t *testing.T) {
			kbs := kbstest.Start(t)
			dir := t.TempDir()
			h1, h1Path := pefHost(t, dir, "host1.pem")
			h2, h2Path := pefHost(t, dir, "host2.pem")
			other, _ := pefHost(t, dir, "other.pem")
			guestDir := pefBundle(t)
			layout, out, keys := filepath.Join(dir, "layout"), filepath.Join(dir, "sealed.yaml"), filepath.Join(dir, "keys.json")
			args := []string{"image", "create", "-f", "-", "--seal-secrets", "--guest", guestDir, "--tee", teeName,
				"--pef-host-key", h1Path, "--pef-host-key", h2Path, "--resolve=false", "--kbs-dir", kbs.Dir,
				"--image", "r.local/app", "--oci-layout", layout, "--keys", keys, "--output-file", out}
			_, stderr, err := runSealctl(t, appYAML, args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			if !strings.Contains(stderr, "opens only lockbox-1") || !strings.Contains(stderr, "host1.pem") {
				t.Errorf("stderr lacks the lockbox-1 warning:\n%s", stderr)
			}
			if simulated := strings.Contains(stderr, "WARNING: sealing for the simulated TEE (sim-pef)"); simulated != (teeName == api.TEESimPEF) {
				t.Errorf("simulated-TEE warning %v for --tee %s:\n%s", simulated, teeName, stderr)
			}
			w, err := kbs.Registry.Get(context.Background(), "default.deployment.web")
			if err != nil {
				t.Fatal(err)
			}
			if len(w.TEEs) != 1 || w.TEEs[0] != teeName || len(w.PEFCredential) != 64 {
				t.Fatalf("registered %+v", w)
			}
			var kf keyFile
			raw, _ := os.ReadFile(keys)
			if err := json.Unmarshal(raw, &kf); err != nil || len(kf.Workloads) != 1 || kf.Workloads[0].PEFCredential != w.PEFCredential {
				t.Fatalf("keys file %s: %v; want the registered credential", raw, err)
			}
			img, cleanup, err := image.Load(context.Background(), layout, image.RegistryOptions{})
			defer cleanup()
			if err != nil {
				t.Fatal(err)
			}
			cpio := readImageFile(t, img, image.PEFDir+"/"+w.ID+".cpio")
			initrd := readImageFile(t, img, image.GuestDir+"/"+bundle.InitrdFile)
			blob, rest, err := pefseal.SplitInitrd(append(cpio, initrd...))
			if err != nil || !bytes.Equal(rest, initrd) {
				t.Fatalf("the image's ESM cpio + initrd: %v", err)
			}
			g, err := bundle.Load(guestDir)
			if err != nil {
				t.Fatal(err)
			}
			kimg, err := esm.KernelImage(g.Kernel)
			if err != nil {
				t.Fatal(err)
			}
			var gc bundle.Config
			if err := json.Unmarshal(readImageFile(t, img, image.WorkloadGuestDir+"/"+w.ID+".json"), &gc); err != nil {
				t.Fatal(err)
			}
			for i, h := range []*rsa.PrivateKey{h1, h2} {
				c, err := esm.Open(blob, h)
				if err != nil {
					t.Fatalf("host%d: %v", i+1, err)
				}
				if err := c.Digests.Verify(esm.Boot{RTAS: nil, Kernel: kimg, Initrd: initrd, Bootargs: gc.Cmdline}); err == nil ||
					strings.Contains(err.Error(), "/digests/kernel") || strings.Contains(err.Error(), "/digests/initrd") || strings.Contains(err.Error(), "/digests/bootargs") {
					t.Fatalf("digests: %v; want only rtas (svm-tools' built-in value) to differ", err)
				}
				if pm := gc.Measurements.PEF; pm == nil || pm.Kernel != hex.EncodeToString(c.Digests.Kernel[:]) || pm.RTAS != esm.SVMToolsRTASDigest {
					t.Fatalf("workload guest.json measurements.pef %+v", pm)
				}
				if k, ok := c.Attachment(esm.AttachDataKey); !ok || !bytes.Equal(k, w.DataKey) {
					t.Fatalf("data key attachment is not the registered key")
				}
				rawCred, _ := c.Attachment(esm.AttachBrokerCredential)
				priv, err := api.ParsePEFCredential(rawCred)
				if err != nil || hex.EncodeToString(priv.Public().(ed25519.PublicKey)) != w.PEFCredential {
					t.Fatalf("credential attachment: %v, or not the registered credential", err)
				}
			}
			// The guest's side: the credential the ultravisor released gets the key from the broker.
			c, err := esm.Open(blob, h1)
			if err != nil {
				t.Fatal(err)
			}
			rawCred, _ := c.Attachment(esm.AttachBrokerCredential)
			cred, err := api.ParsePEFCredential(rawCred)
			if err != nil {
				t.Fatal(err)
			}
			kc, err := client.New(kbs.URL, client.Options{CAPEM: kbs.State.TLSCAPEM})
			if err != nil {
				t.Fatal(err)
			}
			s, err := kc.Auth(context.Background(), teeName, w.ID)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Attest(context.Background(), api.SignPEFChallenge(cred, s.Nonce, s.PublicKey())); err != nil {
				t.Fatalf("attest with the sealed credential: %v", err)
			}
			if key, err := s.Key(context.Background()); err != nil || !bytes.Equal(key, w.DataKey) {
				t.Fatalf("key from the broker: %v (or not the workload's key)", err)
			}
			if _, err := esm.Open(blob, other); !errors.Is(err, esm.ErrNoLockbox) {
				t.Fatalf("another host's key: %v, want ErrNoLockbox", err)
			}
		})
	}
}

func TestImageCreatePEFFlagErrors(t *testing.T) {
	dir := t.TempDir()
	_, h1 := pefHost(t, dir, "host1.pem")
	notRSA := filepath.Join(dir, "ed.pem")
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(edPub)
	if err := os.WriteFile(notRSA, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	common := []string{"image", "create", "-f", "-", "--seal-secrets", "--resolve=false", "--kbs", "https://k:1", "--kbs-ca", writeCA(t, dir),
		"--keys", filepath.Join(dir, "k.json"), "--oci-layout", filepath.Join(dir, "l"), "--image", "r.local/a"}
	tests := []struct {
		name  string
		extra []string
		want  string
	}{
		{"pef without host keys", []string{"--guest", pefBundle(t), "--tee", "pef"}, "--tee pef and sim-pef need --pef-host-key"},
		{"sim-pef without host keys", []string{"--guest", pefBundle(t), "--tee", "sim-pef"}, "--tee pef and sim-pef need --pef-host-key"},
		{"host key without pef", []string{"--guest", pefBundle(t), "--tee", "sim", "--pef-host-key", h1}, "--pef-host-key is only for --tee pef or sim-pef"},
		{"host key not RSA", []string{"--guest", pefBundle(t), "--tee", "pef", "--pef-host-key", notRSA}, "ed.pem"},
		{"bundle kernel not a vmlinux", []string{"--guest", bundletest.Write(t), "--tee", "pef", "--pef-host-key", h1}, "vmlinux"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runSealctl(t, appYAML, append(append([]string(nil), common...), tc.extra...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestGuestMeasurePEF: `guest measure --tee pef` prints svm-tools' digests (pefseal.Measure)
// of a ppc64le vmlinux, initrd and command line; a kernel that is no vmlinux is an error when
// pef is asked for, and pef is left out when it is not.
func TestGuestMeasurePEF(t *testing.T) {
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initrd.img")
	if err := os.WriteFile(initrd, []byte("initramfs"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := os.ReadFile(pefVmlinux)
	if err != nil {
		t.Fatal(err)
	}
	d, err := pefseal.Measure(k, []byte("initramfs"), "console=hvc0")
	if err != nil {
		t.Fatal(err)
	}
	out, err := runGuest(t, "measure", "--kernel", pefVmlinux, "--initrd", initrd, "--cmdline", "console=hvc0", "--tee", "pef", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var m bundle.Measurements
	if err := json.Unmarshal([]byte(out), &m); err != nil || m.PEF == nil || *m.PEF != *pefMeasurement(d) {
		t.Fatalf("output %s (%v), want %+v", out, err, *pefMeasurement(d))
	}
	text, err := runGuest(t, "measure", "--kernel", pefVmlinux, "--initrd", initrd, "--cmdline", "console=hvc0", "--tee", "pef", "-o", "text")
	if err != nil || !strings.Contains(text, "pef.rtas     "+esm.SVMToolsRTASDigest) || !strings.Contains(text, m.PEF.Kernel) {
		t.Fatalf("text output %q (%v)", text, err)
	}
	bz := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(bz, []byte("MZ compressed"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runGuest(t, "measure", "--kernel", bz, "--tee", "pef"); err == nil || !strings.Contains(err.Error(), "vmlinux") {
		t.Fatalf("bzImage with --tee pef: %v\n%s", err, out)
	}
	out, err = runGuest(t, "measure", "--kernel", bz, "--tee", "sim", "-o", "json")
	if err != nil || strings.Contains(out, "pef") {
		t.Fatalf("sim only: %v\n%s", err, out)
	}
}
