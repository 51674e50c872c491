package image

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
)

func testInput(t *testing.T) Input {
	t.Helper()
	b := standInGuest(t)
	key, _ := envelope.NewKey()
	envs := map[string][]byte{}
	for _, id := range []string{"default.web", "default.db", "prod.api"} {
		env, err := envelope.Seal([]byte("secret spec of "+id), key, envelope.Header{
			Workload: id, TEEs: []string{"sim"},
			KBS: envelope.KBS{URL: "https://127.0.0.1:8443", CASHA256: strings.Repeat("0", 64)},
		})
		if err != nil {
			t.Fatal(err)
		}
		envs[id] = env
	}
	return Input{Guest: b, Envelopes: envs}
}

// standInGuest writes a guest bundle whose files boot nothing and loads it. The image
// carries guest.json as it is, so the measurements are stand-ins of the right shape (the
// real stand-in bundle with computed measurements is guest-image/bundletest, which
// imagebuilder does not import: guest-image imports imagebuilder/bundle).
func standInGuest(t *testing.T) *bundle.Bundle {
	t.Helper()
	meas := sha512.Sum384([]byte("stand-in guest measurement"))
	cfg := bundle.Config{Version: bundle.Version, Cmdline: "console=hvc0 quiet", VCPUs: 1, MemoryMiB: 512,
		Measurements: bundle.Measurements{Sim: hex.EncodeToString(meas[:])}}
	raw, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		bundle.KernelFile: []byte("stand-in kernel: boots nothing\n"), bundle.InitrdFile: []byte("stand-in initrd: boots nothing\n"),
		bundle.FirmwareFile: []byte("stand-in firmware"), bundle.ConfigFile: raw,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := bundle.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func digestOf(t *testing.T, in Input) string {
	t.Helper()
	img, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func TestDeterministic(t *testing.T) {
	in := testInput(t)
	first := digestOf(t, in)
	for i := 0; i < 5; i++ { // map order varies between runs
		if got := digestOf(t, in); got != first {
			t.Fatalf("build %d: digest %s, first %s", i, got, first)
		}
	}
	// Any input change changes the digest.
	changed := in
	changed.Envelopes = map[string][]byte{}
	for k, v := range in.Envelopes {
		changed.Envelopes[k] = v
	}
	env := bytes.Clone(in.Envelopes["default.web"])
	env[len(env)-3] ^= 1
	changed.Envelopes["default.web"] = env
	if digestOf(t, changed) == first {
		t.Fatal("changed envelope, same digest")
	}
	g := *in.Guest
	g.Kernel = append(bytes.Clone(g.Kernel), 0)
	if digestOf(t, Input{Guest: &g, Envelopes: in.Envelopes}) == first {
		t.Fatal("changed kernel, same digest")
	}
}

func TestBuildRejects(t *testing.T) {
	in := testInput(t)
	if _, err := Build(Input{Guest: in.Guest}); err == nil || !strings.Contains(err.Error(), "no sealed workloads") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Build(Input{Envelopes: in.Envelopes}); err == nil || !strings.Contains(err.Error(), "no guest") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Build(Input{Guest: in.Guest, Envelopes: map[string][]byte{"../x": {1}}}); err == nil || !strings.Contains(err.Error(), "DNS-1123") {
		t.Fatalf("err = %v", err)
	}
}

func checkInfo(t *testing.T, info *Info, in Input, wantDigest string) {
	t.Helper()
	if info.Digest != wantDigest {
		t.Fatalf("digest %s, want %s", info.Digest, wantDigest)
	}
	if len(info.Workloads) != len(in.Envelopes) {
		t.Fatalf("%d workloads, want %d", len(info.Workloads), len(in.Envelopes))
	}
	for _, w := range info.Workloads {
		if w.EnvelopeDigest != envelope.Sum(in.Envelopes[w.ID]).String() {
			t.Fatalf("workload %s: envelope digest %s", w.ID, w.EnvelopeDigest)
		}
	}
	if info.Guest.Measurements.Sim != in.Guest.Config.Measurements.Sim || len(info.Guest.Files) != 4 {
		t.Fatalf("guest = %+v", info.Guest)
	}
}

func TestLayoutTarballRegistryRoundTrip(t *testing.T) {
	in := testInput(t)
	img, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	ctx := context.Background()
	dir := t.TempDir()

	lay := filepath.Join(dir, "layout")
	if err := WriteLayout(lay, img, "example.test/app:v1"); err != nil {
		t.Fatal(err)
	}
	if err := WriteLayout(lay, img, "example.test/app:v1"); err != nil { // replace in place
		t.Fatal(err)
	}
	tb := filepath.Join(dir, "image.tar")
	if err := WriteTarball(tb, img, "example.test/app:v1"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/sealed/app:v1"
	var bar bytes.Buffer
	pushed, err := Push(ctx, ref, img, RegistryOptions{Insecure: true}, &bar)
	if err != nil {
		t.Fatal(err)
	}
	if pushed.DigestStr() != d.String() {
		t.Fatalf("pushed %s, built %s", pushed, d)
	}
	if !strings.Contains(bar.String(), "100%") {
		t.Fatalf("progress output %q lacks 100%%", bar.String())
	}
	for _, src := range []string{lay, tb, ref, pushed.String()} {
		got, cleanup, err := Load(ctx, src, RegistryOptions{Insecure: true})
		defer cleanup()
		if err != nil {
			t.Fatalf("load %s: %v", src, err)
		}
		info, err := Inspect(got)
		if err != nil {
			t.Fatalf("inspect %s: %v", src, err)
		}
		checkInfo(t, info, in, d.String())
	}
	// No plaintext of any sealed spec anywhere in the written outputs.
	for _, p := range []string{tb} {
		raw, _ := os.ReadFile(p)
		if bytes.Contains(raw, []byte("secret spec")) {
			t.Fatalf("%s contains plaintext", p)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("temporary %s left behind", e.Name())
		}
	}
}

func TestInspectRefusesOtherImages(t *testing.T) {
	in := testInput(t)
	img, _ := Build(in)
	cfg, _ := img.ConfigFile()
	cfg = cfg.DeepCopy()
	delete(cfg.Config.Labels, LabelFormat)
	other, err := mutateConfig(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Inspect(other); err == nil || !strings.Contains(err.Error(), "not a Sealpod secure image") {
		t.Fatalf("err = %v", err)
	}
}

// The entrypoint really runs on Linux/amd64 and explains itself.
func TestExplainEntrypoint(t *testing.T) {
	p := filepath.Join(t.TempDir(), "explain")
	if err := os.WriteFile(p, explainELF(), 0o755); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(p)
	cmd.Stderr = &stderr
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("run: %v (want exit status 1)", err)
	}
	if stderr.String() != ExplainMessage {
		t.Fatalf("stderr = %q", stderr.String())
	}
}

// The secure image runs as a numeric non-root user, so the kubelet's runAsNonRoot check
// passes for a placeholder without runAsUser (it refuses root and non-numeric users).
func TestNumericNonRootUser(t *testing.T) {
	img, err := Build(testInput(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	uid, gid, ok := strings.Cut(cfg.Config.User, ":")
	if !ok {
		t.Fatalf("USER %q: want UID:GID", cfg.Config.User)
	}
	for _, id := range []string{uid, gid} {
		n, err := strconv.ParseUint(id, 10, 32)
		if err != nil || n == 0 {
			t.Errorf("USER %q: %q is not a numeric non-root id", cfg.Config.User, id)
		}
	}
}
