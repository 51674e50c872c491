package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
)

// TestMeasureRSS is a measurement, not a check (docs/runtime.md#qemu-memory): with
// SEALPOD_MEASURE_RSS=1 and SEALPOD_GUEST_DIR set it boots that guest under the sim command
// line at each size of SEALPOD_MEASURE_MIB (default 512,256,128), waits for the agent's Ping,
// and logs QEMU's RSS then and after SEALPOD_MEASURE_SETTLE (default 15s) of idle, with the
// guest's own view of its memory (virtio-balloon statistics: total, available). Run with -v.
func TestMeasureRSS(t *testing.T) {
	if os.Getenv("SEALPOD_MEASURE_RSS") == "" {
		t.Skip("a measurement: set SEALPOD_MEASURE_RSS=1 and SEALPOD_GUEST_DIR")
	}
	gdir := os.Getenv("SEALPOD_GUEST_DIR")
	b, err := bundle.Load(gdir)
	if err != nil {
		t.Fatalf("SEALPOD_GUEST_DIR: %v", err)
	}
	qemuPath, err := exec.LookPath(BinaryX86)
	if err != nil {
		t.Skip(err)
	}
	sizes := os.Getenv("SEALPOD_MEASURE_MIB")
	if sizes == "" {
		sizes = "512,256,128"
	}
	settle := 15 * time.Second
	if v := os.Getenv("SEALPOD_MEASURE_SETTLE"); v != "" {
		if settle, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range strings.Split(sizes, ",") {
		mem, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(s+"MiB", func(t *testing.T) {
			sock, err := os.MkdirTemp("", "spm")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(sock)
			cfg := Config{Binary: qemuPath, TEE: TEESim, Guest: GuestFromBundle(b),
				AgentSocket: filepath.Join(sock, "a.sock"), SimSPSocket: filepath.Join(sock, "s.sock"), QMPSocket: filepath.Join(sock, "q.sock")}
			cfg.Guest.MemoryMiB = mem
			if v := os.Getenv("SEALPOD_MEASURE_TB_MIB"); v != "" {
				cfg.TBSizeMiB, _ = strconv.Atoi(v)
			}
			vm, err := Start(cfg, StartOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer vm.Kill()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
			defer cancel()
			agent, closeAgent := agentClient(t, ctx, vm, cfg)
			defer closeAgent()
			if _, err := agent.Ping(ctx, &api.PingRequest{}); err != nil {
				t.Fatal(err)
			}
			ready := time.Since(vm.Started())
			rss0, _ := vm.RSS()
			q, err := DialQMP(ctx, cfg.QMPSocket, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			if err := q.Execute(ctx, "qom-set", map[string]any{"path": "/machine/peripheral/balloon0", "property": "guest-stats-polling-interval", "value": 2}, nil); err != nil {
				t.Logf("balloon statistics unavailable: %v", err)
			}
			time.Sleep(settle)
			rss1, _ := vm.RSS()
			stats := "-"
			var gs struct {
				Stats map[string]float64 `json:"stats"`
			}
			if err := q.Execute(ctx, "qom-get", map[string]any{"path": "/machine/peripheral/balloon0", "property": "guest-stats"}, &gs); err == nil {
				st := gs.Stats
				stats = fmt.Sprintf("guest total %.1f MiB, available %.1f MiB, free %.1f MiB (in use %.1f MiB)",
					st["stat-total-memory"]/(1<<20), st["stat-available-memory"]/(1<<20), st["stat-free-memory"]/(1<<20),
					(st["stat-total-memory"]-st["stat-available-memory"])/(1<<20))
			}
			t.Logf("QEMU RSS by mapping after settling: %s", rssByMapping(vm))
			t.Logf("guest %d MiB, args %q: agent ready %v, QEMU RSS %.1f MiB at ready, %.1f MiB after %v; %s",
				mem, strings.Join(mustArgs(t, &cfg), " "), ready.Round(time.Millisecond), float64(rss0)/(1<<20), float64(rss1)/(1<<20), settle, stats)
		})
	}
}

func mustArgs(t *testing.T, c *Config) []string {
	cmd, err := c.Command()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i, a := range cmd.Args {
		if i > 0 && (cmd.Args[i-1] == "-machine" || cmd.Args[i-1] == "-accel" || cmd.Args[i-1] == "-m" || cmd.Args[i-1] == "-device") {
			out = append(out, a)
		}
	}
	return out
}

// smapsMapping is one mapping of /proc/<pid>/smaps: its path ("" for anonymous memory),
// permissions, and Size and Rss in KiB.
type smapsMapping struct {
	path, perms string
	size, rss   int
}

// readSmaps reads pid's mappings from /proc/<pid>/smaps (mapping lines split by mapsLine).
func readSmaps(pid int) ([]smapsMapping, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, err
	}
	var maps []smapsMapping
	for _, line := range strings.Split(string(data), "\n") {
		if rng, perms, path := mapsLine(line); strings.Contains(rng, "-") && len(perms) == 4 {
			maps = append(maps, smapsMapping{path: path, perms: perms})
			continue
		}
		if f := strings.Fields(line); len(f) == 3 && len(maps) > 0 {
			n, _ := strconv.Atoi(f[1])
			switch f[0] {
			case "Size:":
				maps[len(maps)-1].size = n
			case "Rss:":
				maps[len(maps)-1].rss = n
			}
		}
	}
	return maps, nil
}

// rssByMapping sums QEMU's resident memory per mapping (/proc/<pid>/smaps) and names the five
// largest: guest RAM (the mapping of the memory size), the TCG cache (rwx, tb-size), arenas,
// the mapped initrd, QEMU's binary.
func rssByMapping(vm *VM) string {
	maps, err := readSmaps(vm.PID())
	if err != nil {
		return err.Error()
	}
	sort.Slice(maps, func(i, j int) bool { return maps[i].rss > maps[j].rss })
	var out []string
	total := 0
	for i, x := range maps {
		total += x.rss
		if i < 5 {
			name := x.path
			if name == "" {
				name = "[anon " + x.perms + "]"
			}
			out = append(out, fmt.Sprintf("%s %dM rss %.1f", name, x.size>>10, float64(x.rss)/1024))
		}
	}
	return fmt.Sprintf("total %.1f MiB; %s", float64(total)/1024, strings.Join(out, "; "))
}
