package shim

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
)

// guestBundle loads $SEALPOD_GUEST_DIR or the repository's out/guest (`make agent guest`).
func guestBundle(b *testing.B) *bundle.Bundle {
	b.Helper()
	if d := os.Getenv("SEALPOD_GUEST_DIR"); d != "" {
		g, err := bundle.Load(d)
		if err != nil {
			b.Fatal(err)
		}
		return g
	}
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		if filepath.Dir(dir) == dir {
			b.Skip("go.mod not found")
		}
		dir = filepath.Dir(dir)
	}
	g, err := bundle.Load(filepath.Join(dir, "out", "guest"))
	if err != nil {
		b.Skipf("no guest bundle in out/guest (make agent guest): %v", err)
	}
	return g
}

// BenchmarkBootToAgentReady measures what the shim does for a pod's first container before
// Unseal: build the QEMU command (runtime-shim/qemu), start QEMU (TCG here), dial the agent
// port and wait for Ping. Reports QEMU's RSS once the agent answers.
func BenchmarkBootToAgentReady(b *testing.B) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		b.Skip("qemu-system-x86_64 not installed")
	}
	g := guestBundle(b)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var rssSum uint64
	for i := 0; i < b.N; i++ {
		dir, err := os.MkdirTemp("", "spb")
		if err != nil {
			b.Fatal(err)
		}
		// As the shim boots a pod: the guest files copied into the state directory, QEMU
		// unprivileged and reading them through its group.
		spec := testVMSpec("qemu-system-x86_64", dir, copyGuest(b, g, filepath.Join(dir, "guest")))
		spec.Name = "sealpod-bench"
		q, err := startQEMU(spec, log)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
		conn, err := dialUnix(ctx, spec.agentSocket())
		if err != nil {
			b.Fatal(err)
		}
		c := ttrpc.NewClient(conn)
		a := api.NewAgentClient(c)
		_, err = a.Ping(ctx, &api.PingRequest{})
		if err != nil {
			console, _ := os.ReadFile(spec.consoleLog())
			_ = q.Stop(time.Second)
			os.RemoveAll(dir)
			b.Fatalf("agent did not answer: %v\nconsole:\n%s", err, console)
		}
		rss, _ := q.RSS()
		rssSum += rss
		b.StopTimer()
		c.Close()
		cancel()
		if err := q.Stop(5 * time.Second); err != nil {
			b.Fatal(err)
		}
		os.RemoveAll(dir)
		b.StartTimer()
	}
	b.ReportMetric(float64(rssSum)/float64(b.N)/(1<<20), "qemu-rss-MiB")
}

// copyGuest copies a guest bundle's files into dir and loads the copy.
func copyGuest(b *testing.B, g *bundle.Bundle, dir string) *bundle.Bundle {
	b.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	for _, f := range guestFiles {
		data, err := os.ReadFile(filepath.Join(g.Dir, f.name))
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), data, 0o400); err != nil {
			b.Fatal(err)
		}
	}
	c, err := bundle.Load(dir)
	if err != nil {
		b.Fatal(err)
	}
	return c
}
