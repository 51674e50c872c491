// Command guestprof samples where an emulated (TCG) guest's vCPU spends its time: it polls
// the vCPU's instruction pointer over QEMU's QMP socket ("info registers") and attributes the
// samples to the symbols of the guest kernel's System.map and of unstripped guest binaries.
//
//	guestprof sample --qmp /run/sealpod/<id>/qmp.sock --duration 3s --out samples.txt [--wait]
//	guestprof report --samples samples.txt --map build/System.map [--elf agent] [--window 100ms]
//
// How it found the kernel's byte-at-a-time copies and the init-memory poisoning (docs/guest.md):
// under TCG, QEMU writes the guest's RIP back at the end of a translation block, at helpers
// and at exceptions, so a sample names where the vCPU last synchronised. A REP-prefixed string
// instruction synchronises on every iteration and shows up exactly; straight-line code is
// charged to the last synchronising instruction before it (often an APIC write or a syscall).
// Read the boot's kernel phase with confidence and user space with care.
package main

import (
	"bufio"
	"context"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sealpod/sealpod/runtime-shim/qemu"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: guestprof sample|report [flags] (see the package comment)")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "sample":
		err = sample(os.Args[2:])
	case "report":
		err = report(os.Args[2:], os.Stdout)
	default:
		err = fmt.Errorf("unknown command %q (want sample or report)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "guestprof:", err)
		os.Exit(1)
	}
}

var ripRe = regexp.MustCompile(`RIP=([0-9a-f]{16})`)

func sample(args []string) error {
	fs := flag.NewFlagSet("sample", flag.ExitOnError)
	sock := fs.String("qmp", "", "QEMU's QMP socket (required)")
	dur := fs.Duration("duration", 3*time.Second, "how long to sample")
	interval := fs.Duration("interval", time.Millisecond, "pause between samples")
	out := fs.String("out", "samples.txt", "output: one \"<seconds> <hex rip>\" line per sample")
	wait := fs.Bool("wait", false, "wait up to 30 s for the socket to appear (start QEMU after guestprof)")
	_ = fs.Parse(args)
	if *sock == "" {
		return errors.New("sample: --qmp is required")
	}
	ctx := context.Background()
	var q *qemu.QMP
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		if q, err = qemu.DialQMP(ctx, *sock, 5*time.Second); err == nil {
			break
		}
		if !*wait || time.Now().After(deadline) {
			return fmt.Errorf("sample: %w", err)
		}
		time.Sleep(500 * time.Microsecond)
	}
	defer q.Close()
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	start, n := time.Now(), 0
	for time.Since(start) < *dur {
		var regs string
		if err := q.Execute(ctx, "human-monitor-command", map[string]string{"command-line": "info registers"}, &regs); err != nil {
			break // QEMU exited
		}
		if m := ripRe.FindStringSubmatch(regs); m != nil {
			fmt.Fprintf(w, "%.4f %s\n", time.Since(start).Seconds(), m[1])
			n++
		}
		time.Sleep(*interval)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "guestprof: %d samples in %v to %s\n", n, time.Since(start).Round(time.Millisecond), *out)
	return f.Close()
}

// symbol is one function of a symbol table, sorted by addr.
type symbol struct {
	addr uint64
	name string
}

type symtab []symbol

// lookup returns the symbol containing addr (the last one at or below it), or "".
func (s symtab) lookup(addr uint64) string {
	i := sort.Search(len(s), func(i int) bool { return s[i].addr > addr })
	if i == 0 {
		return ""
	}
	return s[i-1].name
}

// readSystemMap reads the text symbols of a kernel System.map ("<hex addr> <type> <name>").
func readSystemMap(r io.Reader) (symtab, error) {
	var s symtab
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || !strings.ContainsAny(f[1], "tTwW") {
			continue
		}
		a, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("System.map line %q: %w", sc.Text(), err)
		}
		s = append(s, symbol{a, f[2]})
	}
	return s, sc.Err()
}

// readELF reads the function symbols of an unstripped ELF binary (a static guest binary:
// its addresses are the ones the guest runs at).
func readELF(path string) (symtab, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("%s: %w (stripped?)", path, err)
	}
	var s symtab
	for _, y := range syms {
		if elf.ST_TYPE(y.Info) == elf.STT_FUNC && y.Value != 0 {
			s = append(s, symbol{y.Value, y.Name})
		}
	}
	return s, nil
}

func report(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	samples := fs.String("samples", "samples.txt", "samples from guestprof sample")
	maps := fs.String("map", "", "kernel System.map (from the kernel's build tree)")
	elfs := fs.String("elf", "", "comma-separated unstripped guest binaries (the agent, a workload)")
	window := fs.Duration("window", 0, "also print the top symbols per time window of this length")
	top := fs.Int("top", 30, "symbols to list")
	_ = fs.Parse(args)
	var tab symtab
	if *maps != "" {
		f, err := os.Open(*maps)
		if err != nil {
			return err
		}
		s, err := readSystemMap(f)
		f.Close()
		if err != nil {
			return err
		}
		tab = append(tab, s...)
	}
	for _, p := range strings.Split(*elfs, ",") {
		if p == "" {
			continue
		}
		s, err := readELF(p)
		if err != nil {
			return err
		}
		tab = append(tab, s...)
	}
	sort.Slice(tab, func(i, j int) bool { return tab[i].addr < tab[j].addr })
	data, err := os.ReadFile(*samples)
	if err != nil {
		return err
	}
	total := map[string]int{}
	byWindow := map[int]map[string]int{}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		ts, hex, ok := strings.Cut(line, " ")
		t, err1 := strconv.ParseFloat(ts, 64)
		a, err2 := strconv.ParseUint(hex, 16, 64)
		if !ok || err1 != nil || err2 != nil {
			return fmt.Errorf("%s: bad sample line %q", *samples, line)
		}
		name := tab.lookup(a)
		if name == "" {
			name = fmt.Sprintf("?%x", a)
		}
		total[name]++
		n++
		if *window > 0 {
			w := int(t / window.Seconds())
			if byWindow[w] == nil {
				byWindow[w] = map[string]int{}
			}
			byWindow[w][name]++
		}
	}
	fmt.Fprintf(out, "%d samples\n", n)
	for _, kv := range sorted(total, *top) {
		fmt.Fprintf(out, "%6d %5.1f%%  %s\n", kv.n, 100*float64(kv.n)/float64(n), kv.name)
	}
	if *window > 0 {
		ws := make([]int, 0, len(byWindow))
		for w := range byWindow {
			ws = append(ws, w)
		}
		sort.Ints(ws)
		for _, w := range ws {
			var parts []string
			for _, kv := range sorted(byWindow[w], 4) {
				parts = append(parts, fmt.Sprintf("%s:%d", kv.name, kv.n))
			}
			fmt.Fprintf(out, "%7.2fs  %s\n", float64(w)*window.Seconds(), strings.Join(parts, ", "))
		}
	}
	return nil
}

type count struct {
	name string
	n    int
}

func sorted(m map[string]int, top int) []count {
	out := make([]count, 0, len(m))
	for k, v := range m {
		out = append(out, count{k, v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].n != out[j].n {
			return out[i].n > out[j].n
		}
		return out[i].name < out[j].name
	})
	if len(out) > top {
		out = out[:top]
	}
	return out
}
