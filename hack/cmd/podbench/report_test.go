package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/sealpod/sealpod/internal/golden"
)

var update = flag.Bool("update", false, "rewrite testdata/report.golden.md")

func TestParseKBS(t *testing.T) {
	b, err := os.ReadFile("testdata/kbs-2026-11-22.txt")
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseKBS(string(b))
	if err != nil {
		t.Fatal(err)
	}
	want := []kbsRun{
		{Flow: "auth+attest+key+certificate", Clients: "child process", FlowsPerSec: 980, RequestP50Ms: 14.80, RequestP99Ms: 44.74, P384PerSec: 3753, WallRatio: 0.261, BrokerCPUPerFlow: 1.234, ServerCPURatio: 0.435},
		{Flow: "auth+attest+key+certificate", Clients: "in-process", FlowsPerSec: 1052, RequestP50Ms: 13.79, RequestP99Ms: 39.58, P384PerSec: 3765, WallRatio: 0.279},
	}
	if len(got) != len(want) {
		t.Fatalf("%d runs, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("run %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	b, err = os.ReadFile("testdata/kbs-two-request-format.txt")
	if err != nil {
		t.Fatal(err)
	}
	two, err := parseKBS(string(b))
	if err != nil {
		t.Fatal(err)
	}
	wantTwo := kbsRun{Flow: "auth+attest", Clients: "child process", FlowsPerSec: 1200, RequestP50Ms: 21, RequestP99Ms: 60, P384PerSec: 3700,
		WallRatio: 0.324, BrokerCPUPerFlow: 1.02, ServerCPURatio: 0.529, HalfRateOffered: 600, HalfRateRequestP50Ms: 3.1, HalfRateRequestP99Ms: 12.5}
	if len(two) != 1 || two[0] != wantTwo {
		t.Errorf("two-request format:\n got %+v\nwant %+v", two, wantTwo)
	}
	for _, bad := range []struct{ name, in, err string }{
		{"empty", "", "no key broker benchmark report"},
		{"go test failed", "--- FAIL: BenchmarkFullFlow\nFAIL\n", "no key broker benchmark report"},
		{"header only", "kbs full flow (...), clients in-process: 64 clients\n", "no flows/s line"},
	} {
		if _, err := parseKBS(bad.in); err == nil || !strings.Contains(err.Error(), bad.err) {
			t.Errorf("%s: error %v, want %q", bad.name, err, bad.err)
		}
	}
}

func TestParseSeal(t *testing.T) {
	b, err := os.ReadFile("testdata/seal.txt")
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseSeal(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if *got != (sealRun{PerCPUSecond: 1527, PerSecond: 1015}) {
		t.Errorf("seal = %+v", got)
	}
	for _, bad := range []string{"", "BenchmarkSealTemplates 12 98557475 ns/op\n", "FAIL\n"} {
		if _, err := parseSeal(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// testRoot is /proc of the 2-core dev machine.
func testRoot(t *testing.T) fstest.MapFS {
	t.Helper()
	cpuinfo, err := os.ReadFile("testdata/cpuinfo-2cpu.txt")
	if err != nil {
		t.Fatal(err)
	}
	return fstest.MapFS{
		"proc/cpuinfo":              {Data: cpuinfo},
		"proc/meminfo":              {Data: []byte("MemTotal:       24683748 kB\nMemFree:        1000 kB\n")},
		"proc/sys/kernel/osrelease": {Data: []byte("6.18.44-fc-v1272\n")},
		"proc/loadavg":              {Data: []byte("1.50 1.62 1.80 2/137 7709\n")},
	}
}

func TestReadMachine(t *testing.T) {
	m, err := readMachine(testRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	if want := (machineInfo{CPUModel: "AMD EPYC", CPUs: 2, Cores: 2, MemoryMiB: 24105, Kernel: "6.18.44-fc-v1272"}); m != want {
		t.Errorf("machine %+v, want %+v", m, want)
	}
	// One core with two threads: 2 CPUs, 1 core.
	ht := fstest.MapFS{"proc/cpuinfo": {Data: []byte("processor : 0\nmodel name : X\nphysical id : 0\ncore id : 0\n\nprocessor : 1\nmodel name : X\nphysical id : 0\ncore id : 0\n")}}
	if m, err := readMachine(ht); err != nil || m.CPUs != 2 || m.Cores != 1 {
		t.Errorf("hyperthreads: %+v %v", m, err)
	}
	if _, err := readMachine(fstest.MapFS{}); err == nil {
		t.Error("no error without /proc/cpuinfo")
	}
}

// benchRuns are the pod starts of 2026-11-22 08:01 (docs/benchmarks.md "Pod start"): the
// totals of each run; the sealed phases of the captured log for every sealed run.
func benchRuns(t *testing.T) *podstartResult {
	t.Helper()
	var runc, sealed []sample
	for _, total := range []float64{1612, 1729, 724} {
		runc = append(runc, sample{"scheduled": 93, "toRunning": total - 93 - 33, "toReady": 33, "total": total})
	}
	for _, total := range []float64{8892, 7913, 7893} {
		s := sample{"scheduled": 100, "toRunning": total - 100 - 178, "toReady": 178, "total": total}
		if _, err := shimPhases("testdata/containerd-bench-probes.log", 0, s, noRSS); err != nil {
			t.Fatal(err)
		}
		s["rssSettled"] = 120
		sealed = append(sealed, s)
	}
	return &podstartResult{Runs: 3, Runtimes: map[string]*runtimeResult{"runc": summarize(runc), "sealed": summarize(sealed)}}
}

func writeRunDir(t *testing.T, p *podstartResult) string {
	t.Helper()
	dir := t.TempDir()
	copyFile := func(src, dst string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	copyFile("testdata/kbs-2026-11-22.txt", "kbs.txt")
	copyFile("testdata/seal.txt", "seal.txt")
	copyFile("testdata/SOURCES.txt", "guest-SOURCES.txt")
	files := map[string]string{
		"qemu-version.txt": "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n",
		"loadavg-start":    "0.80 1.10 1.20 1/130 1000\n",
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	files["podstart.json"] = string(b)
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestReport(t *testing.T) {
	dir := writeRunDir(t, benchRuns(t))
	s, err := buildSummary(dir, testRoot(t), time.Date(2026, 12, 6, 1, 2, 3, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	st := s.Start
	if st == nil || st.SealedP50 != 7913 || st.SealedP90 != 8892 || st.RuncP50 != 1612 || st.RuncP90 != 1729 || st.RatioP50 != 7913.0/1612 {
		t.Errorf("start = %+v", st)
	}
	if s.GuestKernel["kernel-release"] != "6.1.0-41-amd64" || !strings.HasPrefix(s.QEMU, "QEMU emulator version 7.2.22") ||
		s.LoadStart != "0.80 1.10 1.20" || s.LoadEnd != "1.50 1.62 1.80" || len(s.Missing) != 0 || len(s.KBS) != 2 || s.Seal == nil {
		t.Errorf("summary = %+v", s)
	}
	var out bytes.Buffer
	printSummary(&out, s)
	golden.Check(t, filepath.Join("testdata", "report.golden.md"), out.Bytes(), *update)
	for _, line := range []string{
		"| pod start, kubectl create → Ready (sealed / runc) | sealed p50 7,913 / p90 8,892 ms; runc p50 1,612 / p90 1,729 ms; **4.91×** (p50), 5.14× (p90) | ≤ 3× | **no** |",
		"| · VM boot → agent ready (QEMU start → agent answers Ping) | **5,401 ms** (p90 5,401) | ≤ 1,500 ms | **no** |",
		"| QEMU RSS at Ready | 324 MiB (p90 324) |  | – |",
		"| QEMU RSS steady (read again `--rss-settle` after Ready) | **120 MiB** (p90 120) | ≤ 128 MiB | yes |",
		"**server CPU ratio 0.435** (broker CPU 1.234 ms/flow)",
		"| seal, one core | **1527 templates per CPU-second** (1015/s wall) | ≥ 2000 | **no** |",
		"- machine: AMD EPYC, 2 CPUs (2 cores), 23.5 GiB, Linux 6.18.44-fc-v1272",
		"- guest kernel: 6.1.0-41-amd64 (linux-image-6.1.0-41-amd64 6.1.158-1)",
		"- load average: 0.80 1.10 1.20 at start, 1.50 1.62 1.80 at end",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("table lacks %q", line)
		}
	}
}

// TestReportMissing: an empty run directory gives a table that says what was not measured.
func TestReportMissing(t *testing.T) {
	s, err := buildSummary(t.TempDir(), testRoot(t), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Missing, " "); got != "loadavg-start qemu-version.txt guest-SOURCES.txt kbs.txt seal.txt podstart.json" {
		t.Errorf("missing = %q", got)
	}
	var out bytes.Buffer
	printSummary(&out, s)
	for _, want := range []string{"pod start | not measured", "key broker | not measured", "seal | not measured", "guest kernel: unknown", "QEMU: unknown"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	// A file that is there but unreadable as a benchmark report is an error naming it.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "kbs.txt"), []byte("FAIL\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := buildSummary(dir, testRoot(t), time.Now()); err == nil || !strings.Contains(err.Error(), "kbs.txt") {
		t.Errorf("error %v, want one naming kbs.txt", err)
	}
}

// TestReportMain writes summary.json next to the run's files.
func TestReportMain(t *testing.T) {
	dir := writeRunDir(t, benchRuns(t))
	var out bytes.Buffer
	if err := reportMain([]string{"--dir", dir}, &out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s summary
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if s.Start == nil || s.Start.RatioP50 != 7913.0/1612 || len(s.Podstart.Runtimes["sealed"].Samples) != 3 || s.Machine.CPUs == 0 {
		t.Errorf("summary.json: %s", b)
	}
	if !strings.Contains(out.String(), "| measure | result | target | met |") {
		t.Errorf("no table:\n%s", out.String())
	}
}
