package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/sealpod/sealpod/guest-image/bundletest"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/image"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/kbs/admin/admintest"
)

// runSealctl runs the command tree in-process and returns stdout, stderr and the error.
func runSealctl(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	root := NewRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func writeCA(t *testing.T, dir string) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test kbs ca"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const pinnedImage = "registry.test/app/server@sha256:1111111111111111111111111111111111111111111111111111111111111111"

const appYAML = `apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {token: CANARY-TOKEN-5e6f}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: server
        image: ` + pinnedImage + `
        command: ["/canary-cmd"]
        env:
        - {name: A, value: CANARY-ENV-1a2b}
        - name: T
          valueFrom: {secretKeyRef: {name: creds, key: token}}
`

func baseArgs(t *testing.T, dir string) []string {
	return []string{"image", "create", "--guest", bundletest.Write(t), "--tee", "sim",
		"--kbs", "https://127.0.0.1:8443", "--kbs-ca", writeCA(t, dir), "--resolve=false"}
}

func TestImageCreateAndInspect(t *testing.T) {
	dir := t.TempDir()
	keys, layout, tarball, out := filepath.Join(dir, "keys.json"), filepath.Join(dir, "layout"), filepath.Join(dir, "img.tar"), filepath.Join(dir, "sealed.yaml")
	args := append(baseArgs(t, dir), "-f", "-", "--seal-secrets", "--image", "registry.local:5000/app",
		"--oci-layout", layout, "--tarball", tarball, "--keys", keys, "--output-file", out)
	stdout, stderr, err := runSealctl(t, appYAML, args...)
	if err != nil {
		t.Fatalf("create: %v\n%s", err, stderr)
	}
	if stdout != "" {
		t.Errorf("stdout %q, want empty with --output-file", stdout)
	}
	if !strings.Contains(stderr, "WARNING: sealing for the simulated TEE") || !strings.Contains(stderr, "(Secret creds): sealed") {
		t.Errorf("stderr lacks warnings:\n%s", stderr)
	}
	sealed, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, canary := range []string{"CANARY-TOKEN-5e6f", "CANARY-ENV-1a2b", "/canary-cmd", "registry.test/app/server"} {
		if bytes.Contains(sealed, []byte(canary)) {
			t.Errorf("%q in sealed manifests", canary)
		}
	}
	if !bytes.Contains(sealed, []byte("image: registry.local:5000/app@sha256:")) {
		t.Fatalf("sealed manifests do not pin the secure image:\n%s", sealed)
	}
	st, err := os.Stat(keys)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("keys file: %v %v", st, err)
	}
	var kf keyFile
	raw, _ := os.ReadFile(keys)
	if err := json.Unmarshal(raw, &kf); err != nil || len(kf.Workloads) != 1 {
		t.Fatalf("keys file %s: %v", raw, err)
	}
	rec := kf.Workloads[0]
	if rec.ID != "default.deployment.web" || len(rec.Measurements["sim"]) != 1 || rec.SANs[0] != "spiffe://sealpod/ns/default/deployment/web" {
		t.Errorf("key record %+v", rec)
	}
	// The image holds the envelope, which opens with the key file's key to the full spec.
	for _, src := range []string{layout, tarball} {
		stdout, _, err := runSealctl(t, "", "image", "inspect", src, "-o", "json")
		if err != nil {
			t.Fatalf("inspect %s: %v", src, err)
		}
		var info image.Info
		if err := json.Unmarshal([]byte(stdout), &info); err != nil {
			t.Fatal(err)
		}
		if len(info.Workloads) != 1 || info.Workloads[0].EnvelopeDigest != rec.EnvelopeDigest || !bytes.Contains(sealed, []byte(info.Digest)) {
			t.Fatalf("inspect %s: %+v", src, info)
		}
		if strings.Contains(stdout, "CANARY") {
			t.Fatalf("inspect shows plaintext")
		}
	}
	img, cleanup, err := image.Load(context.Background(), layout, image.RegistryOptions{})
	defer cleanup()
	if err != nil {
		t.Fatal(err)
	}
	env := readEnvelope(t, img, rec.ID)
	_, plain, err := envelope.Open(env, rec.DataKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := spec.Unmarshal(plain)
	if err != nil || s.Containers[0].Env[1].Value != "CANARY-TOKEN-5e6f" {
		t.Fatalf("sealed spec %+v %v", s, err)
	}
	table, _, err := runSealctl(t, "", "image", "inspect", layout)
	if err != nil || !strings.Contains(table, "default.deployment.web") || !strings.Contains(table, "/sealpod/guest/vmlinuz") {
		t.Fatalf("table: %v\n%s", err, table)
	}
}

// Nothing is written when any input fails, and the error names file, document, object, field.
func TestImageCreateAtomicOnError(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte(strings.Replace(appYAML, "valueFrom: {secretKeyRef: {name: creds, key: token}}", "value: x", 1)), 0o644)
	os.WriteFile(bad, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  containers: [{name: c, image: "+pinnedImage+"}]\n"), 0o644)
	keys, layout, out := filepath.Join(dir, "keys.json"), filepath.Join(dir, "layout"), filepath.Join(dir, "sealed.yaml")
	_, _, err := runSealctl(t, "", append(baseArgs(t, dir), "-f", good, "-f", bad, "--image", "r.local/app", "--oci-layout", layout, "--keys", keys, "--output-file", out)...)
	if err == nil {
		t.Fatal("sealed a pod with hostNetwork")
	}
	if !strings.Contains(err.Error(), bad+": document 0 (Pod p): spec.hostNetwork") {
		t.Fatalf("error %v", err)
	}
	for _, p := range []string{keys, layout, out} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s written despite the error", p)
		}
	}
}

func TestImageCreateFlagErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"image", "create"}, "missing required flags: -f (or -k), --guest, --tee, --kbs (or --kbs-dir/--kbs-config), --kbs-ca"},
		{append(baseArgs(t, dir), "-f", "x.yaml", "--keys", "k"), "missing required flag: --push (or --oci-layout/--tarball)"},
		{append(baseArgs(t, dir), "-f", "x.yaml", "--oci-layout", "l", "--keys", "k"), "missing required flag: --image (or --push)"},
		{append(baseArgs(t, dir), "-f", filepath.Join(dir, "nope.yaml"), "--push", "127.0.0.1:1/a", "--keys", "k"), "nope.yaml: no such file"},
		{[]string{"image", "create", "-f", "x", "--guest", "g", "--tee", "sgx", "--kbs", "https://k", "--kbs-ca", "c", "--push", "r/a", "--keys", "k"}, `unknown TEE "sgx"`},
	}
	for _, tt := range tests {
		_, _, err := runSealctl(t, "", tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want %q", tt.args, err, tt.want)
		}
	}
	// --allow-exec: malformed, and a container no template has (with the input on stdin).
	for _, tt := range []struct{ flag, want string }{
		{"server", "--allow-exec \"server\": want CONTAINER=ARGV"},
		{"server=sh -c 'date'", "write the argv as a JSON list"},
		{"db=/bin/sh", `--allow-exec db=["/bin/sh"]: no sealed pod template has a container named "db"`},
	} {
		_, _, err := runSealctl(t, appYAML, append(baseArgs(t, dir), "-f", "-", "--seal-secrets", "--push", "127.0.0.1:1/a", "--keys", filepath.Join(dir, "k"), "--allow-exec", tt.flag)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("--allow-exec %q: err = %v, want %q", tt.flag, err, tt.want)
		}
	}
	// A TEE the guest bundle has no measurement for.
	args := baseArgs(t, dir)
	args[5] = "tdx"
	_, _, err := runSealctl(t, appYAML, append(args, "-f", "-", "--seal-secrets", "--push", "127.0.0.1:1/a", "--keys", filepath.Join(dir, "k"))...)
	if err == nil || !strings.Contains(err.Error(), "measurements.tdx: missing") {
		t.Errorf("err = %v", err)
	}
}

func TestImageCreatePushesAndResolves(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	dir := t.TempDir()
	// Put a real image in the registry under a tag, and seal a pod that names it by tag.
	seed := filepath.Join(dir, "seed")
	if _, _, err := runSealctl(t, appYAML, append(baseArgs(t, dir), "-f", "-", "--seal-secrets", "--push", host+"/library/base:1.0", "--insecure-registry", "--keys", filepath.Join(dir, "k0"), "--output-file", seed)...); err != nil {
		t.Fatal(err)
	}
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: 'base:1.0'}]}\n"
	args := []string{"image", "create", "--guest", bundletest.Write(t), "--tee", "sim", "--kbs", "https://127.0.0.1:8443",
		"--kbs-ca", writeCA(t, dir), "-f", "-", "--mirror", "docker.io=" + host, "--insecure-registry",
		"--push", host + "/sealed/p:v1", "--keys", filepath.Join(dir, "k1")}
	stdout, stderr, err := runSealctl(t, pod, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "image: "+host+"/sealed/p@sha256:") {
		t.Fatalf("stdout:\n%s", stdout)
	}
	// The pushed image is there and inspectable by reference.
	ref := stdout[strings.Index(stdout, host+"/sealed/p@"):]
	ref = ref[:strings.IndexAny(ref, "\n ")]
	info, _, err := runSealctl(t, "", "image", "inspect", ref, "--insecure-registry", "-o", "yaml")
	if err != nil || !strings.Contains(info, "id: default.pod.p") {
		t.Fatalf("inspect %s: %v\n%s", ref, err, info)
	}
	// Resolution failure names the container field.
	_, _, err = runSealctl(t, strings.Replace(pod, "base:1.0", "base:2.0", 1), args...)
	if err == nil || !strings.Contains(err.Error(), `spec.containers[0].image: resolve "base:2.0" to a digest`) {
		t.Fatalf("err = %v", err)
	}
}

func TestHelpHasExamples(t *testing.T) {
	for _, args := range [][]string{{"image", "create", "--help"}, {"image", "inspect", "--help"}, {"verify", "--help"}} {
		out, _, err := runSealctl(t, "", args...)
		if err != nil || !strings.Contains(out, "Examples:") {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
}

// image create registers every workload with a real broker admin API over mTLS; the data
// key at the broker is the one that opens the envelope in the image.
func TestImageCreateRegistersWithBroker(t *testing.T) {
	kbs := admintest.Start(t)
	dir := t.TempDir()
	layout, out := filepath.Join(dir, "layout"), filepath.Join(dir, "sealed.yaml")
	args := []string{"image", "create", "-f", "-", "--seal-secrets", "--guest", bundletest.Write(t), "--tee", "sim",
		"--resolve=false", "--kbs-dir", kbs.Dir, "--snp-min-tcb", "3,0,8,115", "--image", "r.local/app", "--oci-layout", layout, "--output-file", out}
	_, stderr, err := runSealctl(t, appYAML, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "registered default.deployment.web at "+kbs.URL) {
		t.Errorf("stderr:\n%s", stderr)
	}
	w, err := kbs.Registry.Get(context.Background(), "default.deployment.web")
	if err != nil {
		t.Fatal(err)
	}
	img, cleanup, err := image.Load(context.Background(), layout, image.RegistryOptions{})
	defer cleanup()
	if err != nil {
		t.Fatal(err)
	}
	env := readEnvelope(t, img, w.ID)
	if w.EnvelopeDigest != envelope.Sum(env).String() {
		t.Fatalf("registered digest %s, envelope %s", w.EnvelopeDigest, envelope.Sum(env))
	}
	if _, _, err := envelope.Open(env, w.DataKey); err != nil {
		t.Fatalf("registered key does not open the envelope: %v", err)
	}
	hdr, _ := envelope.ParseHeader(env)
	if hdr.KBS.URL != kbs.URL {
		t.Errorf("envelope names broker %s, want %s (from the admin config)", hdr.KBS.URL, kbs.URL)
	}
	if want, _ := kbs.State.TLSCASHA256(); hdr.KBS.CASHA256 != want {
		t.Errorf("envelope pins CA %s, want the broker's %s", hdr.KBS.CASHA256, want)
	}
	if len(w.Measurements["sim"]) != 1 || w.MinTCB.SNP == nil || w.MinTCB.SNP.Microcode != 115 || w.SANs[0] != "spiffe://sealpod/ns/default/deployment/web" {
		t.Errorf("registered %+v", w)
	}
	// A registration the broker would refuse is caught before anything is pushed or written.
	out2 := filepath.Join(dir, "sealed2.yaml")
	bad := strings.Replace(appYAML, "metadata: {name: web}", "metadata: {name: web, annotations: {sealpod.io/sans: 'not a name!'}}", 1)
	_, _, err = runSealctl(t, bad, append(args[:len(args)-1], out2)...)
	if err == nil || !strings.Contains(err.Error(), "sans[0]") {
		t.Fatalf("err = %v", err)
	}
	if fileExists(out2) {
		t.Error("sealed manifests written although registration was refused")
	}
	// Without a broker config or --keys there is nowhere to put the keys.
	_, _, err = runSealctl(t, appYAML, "image", "create", "-f", "-", "--seal-secrets", "--guest", bundletest.Write(t), "--tee", "sim",
		"--resolve=false", "--kbs", "https://k:1", "--kbs-ca", writeCA(t, dir), "--push", "127.0.0.1:1/a")
	if err == nil || !strings.Contains(err.Error(), "missing required flag: --keys (or --kbs-dir/--kbs-config)") {
		t.Fatalf("err = %v", err)
	}
}

// -f DIR reads the directory's YAML/JSON files in name order; other files are ignored.
func TestImageCreateFromDirectory(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	os.Mkdir(in, 0o755)
	pod := func(name string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata: {name: " + name + "}\nspec: {containers: [{name: c, image: " + pinnedImage + "}]}\n"
	}
	os.WriteFile(filepath.Join(in, "b.yml"), []byte(pod("b")), 0o644)
	os.WriteFile(filepath.Join(in, "a.yaml"), []byte(pod("a")), 0o644)
	os.WriteFile(filepath.Join(in, "c.json"), []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"c"},"spec":{"containers":[{"name":"c","image":"`+pinnedImage+`"}]}}`), 0o644)
	os.WriteFile(filepath.Join(in, "notes.txt"), []byte("not a manifest"), 0o644)
	stdout, stderr, err := runSealctl(t, "", append(baseArgs(t, dir), "-f", in, "--image", "r.local/a", "--keys", filepath.Join(dir, "k"), "--oci-layout", filepath.Join(dir, "l"))...)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	ia, ib, ic := strings.Index(stdout, "default.pod.a"), strings.Index(stdout, "default.pod.b"), strings.Index(stdout, "default.pod.c")
	if ia < 0 || ib < ia || ic < ib {
		t.Fatalf("objects missing or out of order:\n%s", stdout)
	}
	_, _, err = runSealctl(t, "", append(baseArgs(t, dir), "-f", t.TempDir(), "--image", "r.local/a", "--oci-layout", filepath.Join(dir, "l2"), "--keys", "k")...)
	if err == nil || !strings.Contains(err.Error(), "no .yaml, .yml or .json files") {
		t.Fatalf("empty dir: %v", err)
	}
}
