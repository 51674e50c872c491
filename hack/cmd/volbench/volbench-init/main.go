// Command volbench-init is the guest /init of `hack/bench volume` (hack/cmd/volbench runs it):
// it opens a sealed volume (agent/volume: dm-crypt over dm-integrity, volumeMode Block,
// formatted on this first use) on the virtio disk with serial vb-sealed, and measures it and
// the plain virtio disk with serial vb-plain (same size, same host backing) with
// hack/cmd/volbench/measure, alternately, then powers the VM off. Build it with CGO_ENABLED=0
// and pack it as the /init of a guest bundle (mkguest --init).
//
// Environment (the kernel passes unknown name=value cmdline words to init):
//
//	SEALPOD_VOLBENCH_SEQ_MIB=N    sequential size in MiB (default 64)
//	SEALPOD_VOLBENCH_RAND_OPS=N   4 KiB random requests per pass (default 2048)
//	SEALPOD_VOLBENCH_ROUNDS=N     runs per disk, plain and sealed alternating (default 3)
//
// Console lines (prefix "sealpod-volbench: "): "sealed open formatted=... ms=...", one
// "result {json}" per run (measure.Line), then "done" or "FAIL <error>". The volume secret is
// random per boot (a benchmark: nothing is kept) and never printed.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/agent/volume"
	"github.com/sealpod/sealpod/hack/cmd/volbench/measure"
	"github.com/sealpod/sealpod/internal/guestinit"
)

var con = guestinit.Console(measure.Prefix)

func main() { con.Main(run) }

// envInt reads a small positive integer from the environment.
func envInt(name string, def, max int) (int, error) {
	s := os.Getenv(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		return 0, fmt.Errorf("%s=%q: want 1..%d", name, s, max)
	}
	return n, nil
}

func run() error {
	if err := guestinit.MountEarly(unix.MS_NOSUID | unix.MS_NOEXEC); err != nil {
		return err
	}
	seqMiB, err := envInt("SEALPOD_VOLBENCH_SEQ_MIB", 64, measure.MaxSeqBytes>>20)
	if err != nil {
		return err
	}
	ops, err := envInt("SEALPOD_VOLBENCH_RAND_OPS", 2048, measure.MaxRandOps)
	if err != nil {
		return err
	}
	rounds, err := envInt("SEALPOD_VOLBENCH_ROUNDS", 3, 20)
	if err != nil {
		return err
	}
	p := measure.Params{SeqBytes: int64(seqMiB) << 20, RandOps: ops}
	if err := p.Validate(); err != nil {
		return err
	}
	plain, err := guestinit.DiskBySerial("vb-plain")
	if err != nil {
		return err
	}
	sealedDisk, err := guestinit.DiskBySerial("vb-sealed")
	if err != nil {
		return err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	v, err := volume.Open(ctx, sealedDisk, secret, "bench/volume",
		volume.Options{Name: "bench", Mode: volume.ModeBlock, AllowFormat: true, Generations: &firstUse{}})
	if err != nil {
		return err
	}
	con.Say("sealed open formatted=%v sectors=%d ms=%d", v.Formatted, v.Sectors, time.Since(start).Milliseconds())
	con.Say("crypto xts(aes)=%s hmac(sha256)=%s", cryptoDriver("xts(aes)"), cryptoDriver("hmac(sha256)"))
	for round := 1; round <= rounds; round++ {
		for _, d := range []struct{ name, path string }{{"plain", plain}, {"sealed", v.Device}} {
			r, err := measure.Run(d.path, d.name, round, p)
			if err != nil {
				return errors.Join(err, v.Close())
			}
			fmt.Println(measure.Line(r))
		}
	}
	return v.Close()
}

// firstUse is the broker's side of the generation protocol for a volume nobody used before
// (committed 0): the benchmark formats a new volume on every boot and keeps nothing.
type firstUse struct{ committed uint64 }

func (g *firstUse) Begin(context.Context, string) (committed, pending uint64, err error) {
	return g.committed, g.committed + 1, nil
}

func (g *firstUse) Commit(_ context.Context, _ string, gen uint64) error {
	if gen != g.committed+1 {
		return fmt.Errorf("commit generation %d, pending %d", gen, g.committed+1)
	}
	g.committed = gen
	return nil
}

// cryptoDriver is the kernel's driver of the algorithm name with the highest priority in
// /proc/crypto (the one dm-crypt and dm-integrity instantiated), "unknown" if none.
func cryptoDriver(name string) string {
	b, err := os.ReadFile("/proc/crypto")
	if err != nil {
		return "unknown"
	}
	return bestDriver(string(b), name)
}

// bestDriver reads /proc/crypto's content.
func bestDriver(procCrypto, name string) string {
	best, bestPrio := "unknown", -1
	for _, entry := range strings.Split(procCrypto, "\n\n") {
		fields := map[string]string{}
		for _, l := range strings.Split(entry, "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok {
				fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
		prio, err := strconv.Atoi(fields["priority"])
		if fields["name"] == name && err == nil && prio > bestPrio {
			best, bestPrio = fields["driver"], prio
		}
	}
	return best
}
