package main

// podbench report: the one table of `hack/bench all`, from the files that run left in its
// output directory (hack/bench writes them):
//
//	kbs.txt            hack/bench kbs output (broker full flow vs the P-384 floor)
//	seal.txt           hack/bench seal output (go test -bench SealTemplates)
//	podstart.json      podbench --json (every pod start, medians, p90s)
//	guest-SOURCES.txt  the guest bundle's SOURCES.txt (guest kernel), when there is one
//	qemu-version.txt   `qemu-system-x86_64 --version`
//	loadavg-start      /proc/loadavg when the run began
//
// It prints the table (Markdown, for docs/benchmarks.md) and writes summary.json next to them.
// What is missing is named in the table and in the JSON, not guessed.

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// machineInfo is the host the run measured.
type machineInfo struct {
	CPUModel  string `json:"cpu_model"`
	CPUs      int    `json:"cpus"`  // logical CPUs
	Cores     int    `json:"cores"` // physical cores
	MemoryMiB int    `json:"memory_mib"`
	Kernel    string `json:"kernel"`
}

// kbsRun is one block of hack/bench kbs.
type kbsRun struct {
	Flow             string  `json:"flow"`    // the requests of one flow, e.g. "auth+attest"
	Clients          string  `json:"clients"` // "child process" or "in-process"
	FlowsPerSec      float64 `json:"flows_per_s"`
	RequestP50Ms     float64 `json:"request_p50_ms"`
	RequestP99Ms     float64 `json:"request_p99_ms"`
	P384PerSec       float64 `json:"p384_verifies_per_s"`
	WallRatio        float64 `json:"wall_ratio"`
	BrokerCPUPerFlow float64 `json:"broker_cpu_ms_per_flow,omitempty"` // child process only
	ServerCPURatio   float64 `json:"server_cpu_ratio,omitempty"`       // child process only
	// The open-loop run at half the saturation rate, when the benchmark made one.
	HalfRateOffered      float64 `json:"half_rate_offered_flows_per_s,omitempty"`
	HalfRateRequestP50Ms float64 `json:"half_rate_request_p50_ms,omitempty"`
	HalfRateRequestP99Ms float64 `json:"half_rate_request_p99_ms,omitempty"`
}

// sealRun is hack/bench seal's result.
type sealRun struct {
	PerCPUSecond float64 `json:"templates_per_cpu_s"`
	PerSecond    float64 `json:"templates_per_s"`
}

// startRatio compares sealed and runc pod start (kubectl create → Ready, ms).
type startRatio struct {
	SealedP50 float64 `json:"sealed_p50_ms"`
	SealedP90 float64 `json:"sealed_p90_ms"`
	RuncP50   float64 `json:"runc_p50_ms"`
	RuncP90   float64 `json:"runc_p90_ms"`
	RatioP50  float64 `json:"ratio_p50"`
	RatioP90  float64 `json:"ratio_p90"`
}

// summary is summary.json.
type summary struct {
	Date        string            `json:"date"`
	Machine     machineInfo       `json:"machine"`
	LoadStart   string            `json:"load_average_start,omitempty"`
	LoadEnd     string            `json:"load_average_end"`
	QEMU        string            `json:"qemu,omitempty"`
	GuestKernel map[string]string `json:"guest_kernel,omitempty"` // the kernel-* lines of SOURCES.txt
	KBS         []kbsRun          `json:"kbs,omitempty"`
	Seal        *sealRun          `json:"seal,omitempty"`
	Start       *startRatio       `json:"start,omitempty"`
	Podstart    *podstartResult   `json:"podstart,omitempty"`
	Missing     []string          `json:"missing,omitempty"`
}

func reportMain(args []string, w io.Writer) error {
	fl := flag.NewFlagSet("report", flag.ContinueOnError)
	dir := fl.String("dir", "", "output directory of the hack/bench run")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	s, err := buildSummary(*dir, os.DirFS("/"), time.Now())
	if err != nil {
		return err
	}
	printSummary(w, s)
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	out := filepath.Join(*dir, "summary.json")
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}

// buildSummary reads the run's files in dir and the machine from root (a view of /).
func buildSummary(dir string, root fs.FS, now time.Time) (*summary, error) {
	m, err := readMachine(root)
	if err != nil {
		return nil, err
	}
	s := &summary{Date: now.UTC().Format(time.RFC3339), Machine: m}
	if b, err := fs.ReadFile(root, "proc/loadavg"); err == nil {
		s.LoadEnd = loadAvg(string(b))
	}
	read := func(name string) ([]byte, bool, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			s.Missing = append(s.Missing, name)
			return nil, false, nil
		}
		return b, err == nil, err
	}
	if b, ok, err := read("loadavg-start"); err != nil {
		return nil, err
	} else if ok {
		s.LoadStart = loadAvg(string(b))
	}
	if b, ok, err := read("qemu-version.txt"); err != nil {
		return nil, err
	} else if ok {
		s.QEMU, _, _ = strings.Cut(strings.TrimSpace(string(b)), "\n")
	}
	if b, ok, err := read("guest-SOURCES.txt"); err != nil {
		return nil, err
	} else if ok {
		s.GuestKernel = guestKernel(string(b))
	}
	if b, ok, err := read("kbs.txt"); err != nil {
		return nil, err
	} else if ok {
		if s.KBS, err = parseKBS(string(b)); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "kbs.txt"), err)
		}
	}
	if b, ok, err := read("seal.txt"); err != nil {
		return nil, err
	} else if ok {
		if s.Seal, err = parseSeal(string(b)); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "seal.txt"), err)
		}
	}
	if b, ok, err := read("podstart.json"); err != nil {
		return nil, err
	} else if ok {
		var p podstartResult
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "podstart.json"), err)
		}
		s.Podstart = &p
		sealed, runc := p.Runtimes["sealed"], p.Runtimes["runc"]
		if sealed != nil && runc != nil && runc.Median["total"] > 0 && runc.P90["total"] > 0 {
			s.Start = &startRatio{SealedP50: sealed.Median["total"], SealedP90: sealed.P90["total"],
				RuncP50: runc.Median["total"], RuncP90: runc.P90["total"],
				RatioP50: sealed.Median["total"] / runc.Median["total"], RatioP90: sealed.P90["total"] / runc.P90["total"]}
		}
	}
	return s, nil
}

func loadAvg(s string) string {
	f := strings.Fields(s)
	if len(f) < 3 {
		return strings.TrimSpace(s)
	}
	return strings.Join(f[:3], " ")
}

// readMachine reads the CPU, memory and kernel from /proc.
func readMachine(root fs.FS) (machineInfo, error) {
	var m machineInfo
	cpuinfo, err := fs.ReadFile(root, "proc/cpuinfo")
	if err != nil {
		return m, fmt.Errorf("machine: %w", err)
	}
	cores := map[string]bool{}
	phys := ""
	for _, l := range strings.Split(string(cpuinfo), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "processor":
			m.CPUs++
		case "model name", "cpu": // x86; ppc64le names the CPU "cpu"
			if m.CPUModel == "" {
				m.CPUModel = v
			}
		case "physical id":
			phys = v
		case "core id":
			cores[phys+"/"+v] = true
		}
	}
	m.Cores = len(cores)
	if m.Cores == 0 {
		m.Cores = m.CPUs
	}
	if b, err := fs.ReadFile(root, "proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				kib, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
				m.MemoryMiB = kib / 1024
			}
		}
	}
	if b, err := fs.ReadFile(root, "proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m, nil
}

// guestKernel keeps the kernel-* lines of a guest bundle's SOURCES.txt.
func guestKernel(sources string) map[string]string {
	g := map[string]string{}
	for _, l := range strings.Split(sources, "\n") {
		k, v, ok := strings.Cut(l, ": ")
		if ok && strings.HasPrefix(k, "kernel") {
			g[k] = strings.TrimSpace(v)
		}
	}
	return g
}

var (
	firstNum = regexp.MustCompile(`^[-+]?[0-9]*\.?[0-9]+`)
	p50p99   = regexp.MustCompile(`p50 ([0-9.]+) ms\s+p99 ([0-9.]+) ms`)
)

var flowRE = regexp.MustCompile(`^kbs full flow \(([^,]+),`)

// parseKBS reads the report blocks of hack/bench kbs (kbs/server bench_test.go writes them):
// a header line, "  label: value" lines, and nested "    " lines under the open-loop run at
// half the saturation rate.
func parseKBS(out string) ([]kbsRun, error) {
	var runs []kbsRun
	var cur *kbsRun
	halfRate := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, " ") {
			switch {
			case strings.Contains(line, "clients in a separate process"):
				runs = append(runs, kbsRun{Clients: "child process"})
			case strings.Contains(line, "clients in-process"):
				runs = append(runs, kbsRun{Clients: "in-process"})
			default:
				cur = nil
				continue
			}
			cur = &runs[len(runs)-1]
			if m := flowRE.FindStringSubmatch(line); m != nil {
				cur.Flow = m[1]
			}
			halfRate = false
			continue
		}
		if cur == nil {
			continue
		}
		nested := strings.HasPrefix(line, "   ")
		label, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		num := func() float64 { v, _ := strconv.ParseFloat(firstNum.FindString(val), 64); return v }
		if nested {
			if halfRate && label == "per request" {
				if m := p50p99.FindStringSubmatch(val); m != nil {
					cur.HalfRateRequestP50Ms, _ = strconv.ParseFloat(m[1], 64)
					cur.HalfRateRequestP99Ms, _ = strconv.ParseFloat(m[2], 64)
				}
			}
			continue
		}
		halfRate = false
		switch label {
		case "flows/s":
			cur.FlowsPerSec = num()
		case "per request":
			if m := p50p99.FindStringSubmatch(val); m != nil {
				cur.RequestP50Ms, _ = strconv.ParseFloat(m[1], 64)
				cur.RequestP99Ms, _ = strconv.ParseFloat(m[2], 64)
			}
		case "P-384 verifies/s":
			cur.P384PerSec = num()
		case "ratio":
			cur.WallRatio = num()
		case "server CPU ratio":
			cur.ServerCPURatio = num()
		case "broker CPU/flow":
			d, _, _ := strings.Cut(val, ";")
			if pd, err := time.ParseDuration(strings.TrimSpace(d)); err == nil {
				cur.BrokerCPUPerFlow = float64(pd.Microseconds()) / 1000
			}
		case "open loop at half the saturation rate above":
			halfRate, cur.HalfRateOffered = true, num()
		}
	}
	if len(runs) == 0 {
		return nil, errors.New("no key broker benchmark report in it")
	}
	for _, r := range runs {
		if r.FlowsPerSec == 0 {
			return nil, fmt.Errorf("key broker run with clients %s: no flows/s line", r.Clients)
		}
	}
	return runs, nil
}

// parseSeal reads the BenchmarkSealTemplates line of go test -bench.
func parseSeal(out string) (*sealRun, error) {
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "BenchmarkSealTemplates") {
			continue
		}
		f := strings.Fields(l)
		r := &sealRun{}
		for i := 1; i+1 < len(f); i++ {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "templates/cpu-s":
				r.PerCPUSecond = v
			case "templates/s":
				r.PerSecond = v
			}
		}
		if r.PerCPUSecond == 0 {
			return nil, fmt.Errorf("BenchmarkSealTemplates line without templates/cpu-s: %q", l)
		}
		return r, nil
	}
	return nil, errors.New("no BenchmarkSealTemplates line in it")
}
