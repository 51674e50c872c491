// Command volbench is `hack/bench volume` (issue 15 item 6, docs/benchmarks.md): it boots one
// sim VM (runtime-shim/qemu, as the shim does) from a guest bundle whose /init is
// hack/cmd/volbench/volbench-init, with two virtio disks of the same size, and prints the
// sequential and random throughput of the sealed volume (agent/volume) against the plain
// disk as a Markdown table of medians and sealed/plain ratios, with the machine, QEMU, guest
// kernel and load average.
//
//	volbench --guest DIR [--dir DIR] [--seq-mib 64] [--rand-ops 2048] [--rounds 3] [--json FILE] [--console FILE]
//
// The guest's console is parsed as untrusted input (measure.ParseLine).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/sealpod/sealpod/hack/cmd/volbench/measure"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/hostinfo"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
	"github.com/sealpod/sealpod/tests/qemuvm"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "volbench:", err)
		os.Exit(1)
	}
}

type options struct {
	guest, dir, jsonOut, consoleOut string
	seqMiB, randOps, rounds         int
	timeout                         time.Duration
}

func run(args []string, w io.Writer) error {
	var o options
	fl := flag.NewFlagSet("volbench", flag.ContinueOnError)
	fl.StringVar(&o.guest, "guest", "", "guest bundle (mkguest --init volbench-init)")
	fl.StringVar(&o.dir, "dir", "", "directory for the two disk files (default: a temporary directory; needs O_DIRECT)")
	fl.IntVar(&o.seqMiB, "seq-mib", 64, "sequential size in MiB")
	fl.IntVar(&o.randOps, "rand-ops", 2048, "4 KiB random requests per pass")
	fl.IntVar(&o.rounds, "rounds", 3, "runs per disk (plain and sealed alternating); the table shows medians")
	fl.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up after this long")
	fl.StringVar(&o.jsonOut, "json", "", "also write the summary as JSON to this file")
	fl.StringVar(&o.consoleOut, "console", "", "also write the guest console to this file")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if o.guest == "" {
		return errors.New("--guest is required")
	}
	p := measure.Params{SeqBytes: int64(o.seqMiB) << 20, RandOps: o.randOps}
	if err := p.Validate(); err != nil {
		return err
	}
	if o.rounds < 1 || o.rounds > 20 {
		return fmt.Errorf("--rounds %d: want 1..20", o.rounds)
	}
	s, err := bench(o, p)
	if err != nil {
		return err
	}
	s.Write(w)
	if o.jsonOut != "" {
		b, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// diskBytes sizes both disks: the sequential range plus room for dm-integrity's tags (1/16)
// and journal, rounded to MiB.
func diskBytes(seq int64) int64 { return (seq + seq/4 + 32<<20) >> 20 << 20 }

func bench(o options, p measure.Params) (*Summary, error) {
	b, err := bundle.Load(o.guest)
	if err != nil {
		return nil, err
	}
	s := &Summary{
		Time: time.Now().UTC().Format(time.RFC3339), Machine: machine(), QEMU: qemuVersion(),
		Accel: string(qemu.AccelTCG), GuestKernel: guestKernel(o.guest), LoadStart: hostinfo.LoadAvg(),
		DiskBytes: diskBytes(p.SeqBytes), Rounds: o.rounds,
	}
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "volbench"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	sockDir, cleanup, err := qemuvm.ShortTempDir() // unix socket paths must stay short
	if err != nil {
		return nil, err
	}
	defer cleanup()

	cfg := qemu.Config{
		TEE: qemu.TEESim, Accel: qemu.AccelTCG, Guest: qemu.GuestFromBundle(b),
		AgentSocket: filepath.Join(sockDir, "agent.sock"), SimSPSocket: filepath.Join(sockDir, "sim-sp.sock"),
		Name: "sealpod-volbench",
	}
	cfg.Guest.Cmdline += fmt.Sprintf(" SEALPOD_VOLBENCH_SEQ_MIB=%d SEALPOD_VOLBENCH_RAND_OPS=%d SEALPOD_VOLBENCH_ROUNDS=%d",
		p.SeqBytes>>20, p.RandOps, o.rounds)
	for i, serial := range []string{"vb-plain", "vb-sealed"} {
		path := filepath.Join(dir, serial+".img")
		if err := sparse(path, s.DiskBytes); err != nil {
			return nil, err
		}
		defer os.Remove(path)
		id := "vb" + strconv.Itoa(i)
		cfg.ExtraArgs = append(cfg.ExtraArgs,
			"-drive", "file="+path+",format=raw,if=none,id="+id+",cache=none",
			"-device", "virtio-blk-pci,drive="+id+",serial="+serial)
	}

	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	vm, err := qemuvm.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer func() { _ = vm.Kill() }()
	end, err := vm.WaitMatch(ctx, "done or FAIL", func(l string) bool {
		return l == measure.Prefix+"done" || strings.HasPrefix(l, measure.Prefix+"FAIL")
	})
	if o.consoleOut != "" {
		if werr := os.WriteFile(o.consoleOut, []byte(strings.Join(vm.Lines(), "\n")+"\n"), 0o644); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	if err != nil {
		return nil, err
	}
	if end != measure.Prefix+"done" {
		return nil, fmt.Errorf("guest: %s%s", strings.TrimPrefix(end, measure.Prefix), vm.Tail())
	}
	if err := vm.Wait(ctx); err != nil {
		return nil, fmt.Errorf("guest did not power off cleanly: %w", err)
	}
	s.LoadEnd = hostinfo.LoadAvg()
	if err := s.parse(vm.Lines()); err != nil {
		return nil, err
	}
	return s, nil
}

var cryptoLine = regexp.MustCompile(`^` + regexp.QuoteMeta(measure.Prefix) + `crypto (xts\(aes\)=[a-z0-9()_-]{1,64} hmac\(sha256\)=[a-z0-9()_-]{1,64})$`)

var openLine = regexp.MustCompile(`^` + regexp.QuoteMeta(measure.Prefix) + `sealed open formatted=true sectors=[0-9]{1,12} ms=([0-9]{1,9})$`)

// parse reads the result lines and the sealed open line from the console.
func (s *Summary) parse(console []string) error {
	for _, l := range console {
		if m := openLine.FindStringSubmatch(l); m != nil {
			s.OpenMs, _ = strconv.ParseInt(m[1], 10, 64)
			continue
		}
		if m := cryptoLine.FindStringSubmatch(l); m != nil {
			s.GuestCrypto = m[1]
			continue
		}
		r, err := measure.ParseLine(l)
		if errors.Is(err, measure.ErrNotResult) {
			continue
		}
		if err != nil {
			return err
		}
		s.Results = append(s.Results, r)
	}
	if s.OpenMs == 0 {
		return errors.New("volbench: no \"sealed open formatted=true\" line on the console")
	}
	return s.Check()
}

func sparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// machine: CPU model, logical CPUs, memory, host kernel.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.1f GiB", float64(kb)/(1<<20))
		}
	}
	rel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s, %d CPUs%s, Linux %s", model, runtime.NumCPU(), mem, strings.TrimSpace(string(rel)))
}

func qemuVersion() string {
	out, err := exec.Command(qemu.BinaryX86, "--version").Output()
	if err != nil {
		return "unknown"
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(first)
}

// guestKernel is the kernel-release line of the bundle's SOURCES.txt ("unknown" without one).
func guestKernel(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "SOURCES.txt"))
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "kernel-release: "); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
