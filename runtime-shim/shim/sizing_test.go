package shim

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/image"
	"github.com/sealpod/sealpod/runtime-shim/config"
)

// TestCheckGuestFitsSealedSize: a guest sealctl sized for the pod's limits (the limit plus the
// guest overhead, bundle.SizeFor) boots under exactly those limits; one step larger, or a vCPU
// more than the CPU limit rounded up, is refused.
func TestCheckGuestFitsSealedSize(t *testing.T) {
	cfg := &config.Config{TEE: "sim", SimKey: "/k"}
	cfg.Defaults()
	for _, tc := range []struct {
		name     string
		memBytes int64
		milliCPU int64
	}{
		{"100Mi 1 CPU", 100 * mib, 1000},
		{"32Mi 250m", 32 * mib, 250},
		{"1Gi 1500m", gib, 1500},
		{"300000000 bytes 2 CPUs", 300000000, 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sz, err := bundle.SizeFor(bundle.Limits{MemoryBytes: tc.memBytes, MilliCPU: tc.milliCPU}, bundle.Size{})
			if err != nil {
				t.Fatal(err)
			}
			// The kubelet's CFS quota for a CPU limit (period 100 ms).
			ann := map[string]string{AnnotationSandboxMemory: strconv.FormatInt(tc.memBytes, 10),
				AnnotationSandboxCPUQuota: strconv.FormatInt(tc.milliCPU*100, 10), AnnotationSandboxCPUPeriod: "100000"}
			if err := checkGuestFits(bundle.Config{VCPUs: sz.VCPUs, MemoryMiB: sz.MemoryMiB}, ann, cfg); err != nil {
				t.Fatalf("sealed size %+v refused: %v", sz, err)
			}
			// The shim allows bundle.MaxOverheadMiB over the limit (so that sealctl's overhead
			// may be tuned); a step more is refused.
			over := int(bundle.MaxMemoryMiBFor(tc.memBytes)) + bundle.MemoryStepMiB
			if over <= sz.MemoryMiB || over > sz.MemoryMiB+3*bundle.MemoryStepMiB {
				t.Fatalf("shim maximum %d MiB for a sealed %d MiB guest", over-bundle.MemoryStepMiB, sz.MemoryMiB)
			}
			err = checkGuestFits(bundle.Config{VCPUs: sz.VCPUs, MemoryMiB: over}, ann, cfg)
			if err == nil || !strings.Contains(err.Error(), "memoryMiB") || !strings.Contains(err.Error(), AnnotationSandboxMemory) {
				t.Errorf("a guest of %d MiB: %v", over, err)
			}
			if err := checkGuestFits(bundle.Config{VCPUs: sz.VCPUs + 1, MemoryMiB: sz.MemoryMiB}, ann, cfg); err == nil || !strings.Contains(err.Error(), "vcpus") {
				t.Errorf("a vCPU over the CPU limit: %v", err)
			}
		})
	}
}

// TestLoadSecureImageWorkloadGuest: the workload's own guest.json (image.WorkloadGuestDir)
// is the one the VM boots; without one, the bundle's; a special file in its place is refused.
func TestLoadSecureImageWorkloadGuest(t *testing.T) {
	const id = "default.pod.web"
	load := func(t *testing.T, b string) (*bundle.Config, error) {
		out := filepath.Join(t.TempDir(), "guest")
		if _, err := loadSecureImage(&taskAPI.CreateTaskRequest{Bundle: b}, id, out); err != nil {
			return nil, err
		}
		raw, err := os.ReadFile(filepath.Join(out, bundle.ConfigFile))
		if err != nil {
			t.Fatal(err)
		}
		return bundle.ParseConfig(raw)
	}
	writeWorkloadGuest := func(t *testing.T, b string, vcpus, mem int) string {
		bc, err := os.ReadFile(filepath.Join(b, "rootfs", image.GuestDir, bundle.ConfigFile))
		if err != nil {
			t.Fatal(err)
		}
		c, err := bundle.ParseConfig(bc)
		if err != nil {
			t.Fatal(err)
		}
		c.VCPUs, c.MemoryMiB = vcpus, mem
		data, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(b, "rootfs", image.WorkloadGuestDir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, id+".json")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("own guest.json", func(t *testing.T) {
		b := secureRootfs(t, id, []byte(`{}`))
		writeWorkloadGuest(t, b, 2, 224)
		c, err := load(t, b)
		if err != nil || c.VCPUs != 2 || c.MemoryMiB != 224 {
			t.Fatalf("guest.json %+v, %v; want the workload's 2 vCPUs / 224 MiB", c, err)
		}
	})
	t.Run("bundle guest.json", func(t *testing.T) {
		c, err := load(t, secureRootfs(t, id, []byte(`{}`)))
		if err != nil || c.MemoryMiB != 512 {
			t.Fatalf("guest.json %+v, %v; want the bundle's 512 MiB", c, err)
		}
	})
	t.Run("another workload's guest.json is not used", func(t *testing.T) {
		b := secureRootfs(t, id, []byte(`{}`))
		p := writeWorkloadGuest(t, b, 2, 224)
		if err := os.Rename(p, filepath.Join(filepath.Dir(p), "default.pod.other.json")); err != nil {
			t.Fatal(err)
		}
		c, err := load(t, b)
		if err != nil || c.MemoryMiB != 512 {
			t.Fatalf("guest.json %+v, %v; want the bundle's", c, err)
		}
	})
	t.Run("symlink refused", func(t *testing.T) {
		b := secureRootfs(t, id, []byte(`{}`))
		p := writeWorkloadGuest(t, b, 2, 224)
		os.Remove(p)
		if err := os.Symlink("../guest/guest.json", p); err != nil {
			t.Fatal(err)
		}
		if _, err := load(t, b); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Fatalf("symlinked workload guest.json: %v", err)
		}
	})
	t.Run("FIFO refused", func(t *testing.T) {
		b := secureRootfs(t, id, []byte(`{}`))
		p := writeWorkloadGuest(t, b, 2, 224)
		mkfifo(t, p)
		err := withTimeout(t, 10*time.Second, "load a secure image with a FIFO guest.json", func() error { _, err := load(t, b); return err })
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("FIFO workload guest.json: %v", err)
		}
	})
}
