package cli

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/sealpod/sealpod/ctl/internal/verify"
	"github.com/sealpod/sealpod/guest-image/bundletest"
	"github.com/sealpod/sealpod/guest-image/measure"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/image"
	"github.com/sealpod/sealpod/internal/repopath"
	"github.com/sealpod/sealpod/internal/tee"
)

// podWithResources is a Deployment whose pod has the given container and init container
// resources blocks (YAML flow maps, "" = none).
func podWithResources(app, init, sidecar string) string {
	y := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n"
	if init != "" || sidecar != "" {
		y += "      initContainers:\n"
		if sidecar != "" {
			y += "      - {name: side, image: " + pinnedImage + ", restartPolicy: Always, resources: " + sidecar + "}\n"
		}
		if init != "" {
			y += "      - {name: setup, image: " + pinnedImage + ", resources: " + init + "}\n"
		}
	}
	y += "      containers:\n      - name: server\n        image: " + pinnedImage + "\n"
	if app != "" {
		y += "        resources: " + app + "\n"
	}
	return y
}

// bootGuest returns the guest.json workload id boots with, chosen as the shim chooses it: the
// workload's own (image.WorkloadGuestDir) if the image has one, else the bundle's.
func bootGuest(t *testing.T, img v1.Image, id string) *bundle.Config {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(h.Name, ".json") {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
	}
	raw, ok := files["sealpod/workload-guest/"+id+".json"]
	if !ok {
		raw = files["sealpod/guest/guest.json"]
	}
	c, err := bundle.ParseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sealToLayout seals yaml for tees with the guest bundle gdir into an OCI layout and returns
// the image and the keys file.
func sealToLayout(t *testing.T, yaml, gdir string, tees string, extra ...string) (v1.Image, keyFile, error) {
	t.Helper()
	dir := t.TempDir()
	keys, layout := filepath.Join(dir, "keys.json"), filepath.Join(dir, "layout")
	args := append([]string{"image", "create", "--guest", gdir, "--tee", tees, "--kbs", "https://127.0.0.1:8443",
		"--kbs-ca", writeCA(t, dir), "--resolve=false", "-f", "-", "--image", "registry.local:5000/app",
		"--oci-layout", layout, "--keys", keys, "--output-file", filepath.Join(dir, "sealed.yaml")}, extra...)
	_, stderr, err := runSealctl(t, yaml, args...)
	if err != nil {
		for _, p := range []string{keys, layout} {
			if _, serr := os.Stat(p); !os.IsNotExist(serr) {
				t.Errorf("%s written despite the error %v", p, err)
			}
		}
		return nil, keyFile{}, err
	}
	img, cleanup, err := image.Load(context.Background(), layout, image.RegistryOptions{})
	t.Cleanup(cleanup)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	var kf keyFile
	raw, _ := os.ReadFile(keys)
	if err := json.Unmarshal(raw, &kf); err != nil || len(kf.Workloads) != 1 {
		t.Fatalf("keys file %s: %v", raw, err)
	}
	return img, kf, nil
}

// TestImageCreateSizesGuestFromLimits: each workload's guest is sized from its pod's limits
// (sum of the containers', at least the largest init container's, + bundle.OverheadMiB,
// rounded up to 32 MiB; vCPUs = CPU limit rounded up), or the defaults without limits, and
// the registered measurement is the one for that size.
func TestImageCreateSizesGuestFromLimits(t *testing.T) {
	gdir := bundletest.Write(t)
	cases := []struct {
		name               string
		app, init, sidecar string
		flags              []string
		vcpus, mem         int
	}{
		{"limits 100Mi", "{limits: {memory: 100Mi}}", "", "", nil, 1, 224},
		{"limits 100Mi and 1500m", "{limits: {memory: 100Mi, cpu: 1500m}}", "", "", nil, 2, 224},
		{"no limits", "", "", "", nil, 1, 256},
		{"requests only", "{requests: {memory: 1Gi, cpu: 4}}", "", "", nil, 1, 256},
		{"no limits, defaults overridden", "", "", "", []string{"--default-guest-memory-mib", "384", "--default-guest-vcpus", "2"}, 2, 384},
		{"init container larger", "{limits: {memory: 100Mi}}", "{limits: {memory: 300Mi, cpu: 3}}", "", nil, 3, 416},
		{"sidecar adds", "{limits: {memory: 100Mi}}", "", "{limits: {memory: 50Mi}}", nil, 1, 256},
		{"cpu capped", "{limits: {cpu: 64}}", "", "", nil, bundle.MaxVCPUs, 256},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img, kf, err := sealToLayout(t, podWithResources(tc.app, tc.init, tc.sidecar), gdir, "sim", tc.flags...)
			if err != nil {
				t.Fatal(err)
			}
			rec := kf.Workloads[0]
			g := bootGuest(t, img, rec.ID)
			if g.VCPUs != tc.vcpus || g.MemoryMiB != tc.mem {
				t.Fatalf("guest of %s: %d vCPUs, %d MiB; want %d, %d", rec.ID, g.VCPUs, g.MemoryMiB, tc.vcpus, tc.mem)
			}
			b, err := bundle.Load(gdir)
			if err != nil {
				t.Fatal(err)
			}
			in := measure.BundleInputs(b, tee.Sim)
			in.VCPUs = tc.vcpus
			want, err := measure.Compute(in)
			if err != nil {
				t.Fatal(err)
			}
			if got := rec.Measurements["sim"]; len(got) != 1 || got[0] != want.Sim || g.Measurements.Sim != want.Sim {
				t.Errorf("sim measurement registered %v, in the image %s; want %s (%d vCPUs)", got, g.Measurements.Sim, want.Sim, tc.vcpus)
			}
		})
	}
}

// TestImageCreateRefusesLimitBelowFloor: a pod whose memory limit leaves its guest less than
// bundle.MinMemoryMiB is refused, naming the object and the field; nothing is written.
func TestImageCreateRefusesLimitBelowFloor(t *testing.T) {
	_, _, err := sealToLayout(t, podWithResources("{limits: {memory: 16Mi}}", "", ""), bundletest.Write(t), "sim")
	if err == nil {
		t.Fatal("sealed a pod whose 16Mi limit cannot hold a guest")
	}
	for _, want := range []string{"Deployment default/web", "spec.template.spec.containers[*].resources.limits.memory", "at least 32 MiB"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if _, _, err := sealToLayout(t, podWithResources("{limits: {memory: 32Mi}}", "", ""), bundletest.Write(t), "sim"); err != nil {
		t.Errorf("a 32Mi limit (the smallest accepted): %v", err)
	}
}

// snpBundle writes a guest bundle with an AmdSev OVMF (kernel hashes) measured for snp and
// sim at 1 vCPU, with SNP guest features feat.
func snpBundle(t *testing.T, feat uint64) string {
	t.Helper()
	fw, err := os.ReadFile(filepath.Join(repopath.Shared(t, "snp-measure"), "ovmf_AmdSev_suffix.bin"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b := &bundle.Bundle{Dir: dir, Config: bundle.Config{Version: 1, Cmdline: "console=hvc0", VCPUs: 1, MemoryMiB: 512},
		Kernel: []byte("stand-in kernel\n"), Initrd: []byte("stand-in initrd\n"), Firmware: fw}
	in := measure.BundleInputs(b, tee.SNP, tee.Sim)
	in.GuestFeatures = feat
	if b.Config.Measurements, err = measure.Compute(in); err != nil {
		t.Fatal(err)
	}
	cfg, _ := b.Config.Marshal()
	for name, data := range map[string][]byte{bundle.KernelFile: b.Kernel, bundle.InitrdFile: b.Initrd, bundle.FirmwareFile: fw, bundle.ConfigFile: cfg} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestImageCreateSNPMeasurementFollowsVCPUs: the SNP launch digest covers one VMSA per vCPU,
// so a pod with a 2-CPU limit is registered with the 2-vCPU digest, not the bundle's 1-vCPU
// one; a bundle whose digest sealctl cannot reproduce (other SNP guest features) is refused
// for another vCPU count, and accepted at its own.
func TestImageCreateSNPMeasurementFollowsVCPUs(t *testing.T) {
	gdir := snpBundle(t, measure.DefaultGuestFeatures)
	b, err := bundle.Load(gdir)
	if err != nil {
		t.Fatal(err)
	}
	one := b.Config.Measurements.SNP
	in := measure.BundleInputs(b, tee.SNP)
	in.VCPUs = 2
	m2, err := measure.Compute(in)
	if err != nil {
		t.Fatal(err)
	}
	if m2.SNP == one {
		t.Fatal("the SNP digest does not depend on the vCPU count")
	}
	for _, tc := range []struct {
		cpu  string
		want string
	}{{"1", one}, {"2", m2.SNP}, {"1500m", m2.SNP}} {
		img, kf, err := sealToLayout(t, podWithResources("{limits: {cpu: "+tc.cpu+"}}", "", ""), gdir, "snp")
		if err != nil {
			t.Fatal(err)
		}
		rec := kf.Workloads[0]
		if got := rec.Measurements["snp"]; len(got) != 1 || got[0] != tc.want {
			t.Errorf("cpu %s: registered snp %v, want %s", tc.cpu, got, tc.want)
		}
		if g := bootGuest(t, img, rec.ID); g.Measurements.SNP != tc.want {
			t.Errorf("cpu %s: guest.json snp %s, want %s", tc.cpu, g.Measurements.SNP, tc.want)
		}
	}
	odd := snpBundle(t, 0x21) // DebugSwap: not recorded in guest.json
	if _, _, err := sealToLayout(t, podWithResources("{limits: {cpu: 2}}", "", ""), odd, "snp"); err == nil ||
		!strings.Contains(err.Error(), "measurements.snp cannot be recomputed") {
		t.Errorf("unreproducible snp digest at 2 vCPUs: %v", err)
	}
	if _, _, err := sealToLayout(t, podWithResources("{limits: {cpu: 1}}", "", ""), odd, "snp"); err != nil {
		t.Errorf("unreproducible snp digest at its own vCPU count: %v", err)
	}
}

// TestVerifySizedGuest: `sealctl verify` compares the broker's measurements with the guest the
// workload boots (its own guest.json, here 2 vCPUs: another sim digest than the bundle's), not
// with the image's bundle guest.json.
func TestVerifySizedGuest(t *testing.T) {
	e := newVerifyEnv(t)
	e.seal(t, e.sealed, "--default-guest-vcpus", "2")
	stdout, stderr, err := runSealctl(t, "", e.args()...)
	if err != nil {
		t.Fatalf("verify: %v\n%s\n%s", err, stdout, stderr)
	}
	if r := e.report(t); !r.OK || !slices.Contains(checkIDs(r, verify.StatusOK), verify.CheckMeasurement) {
		t.Fatalf("report ok=%v\n%s", r.OK, stdout)
	}
}
