// Command podbench measures pod start on the local cluster (hack/bench podstart): it creates
// a pod with kubectl, watches it until Ready, deletes it, and repeats; for a sealed pod it
// adds the shim's phases from containerd's log (VM boot → agent ready, attestation, key,
// unseal, in-guest pull, start) and the QEMU process's RSS once the pod is Ready. It prints
// the median of each phase, sealed next to runc.
//
//	podbench --kubectl K --kubeconfig F --containerd-log L --runs 3 --sealed pod.sealed.yaml --runc pod.yaml
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

type flags struct {
	kubectl, kubeconfig, ctrdLog, sealed, runc string
	runs                                       int
	timeout                                    time.Duration
}

func main() {
	var f flags
	flag.StringVar(&f.kubectl, "kubectl", "kubectl", "kubectl binary")
	flag.StringVar(&f.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
	flag.StringVar(&f.ctrdLog, "containerd-log", "", "containerd's log file (the shim's phases)")
	flag.StringVar(&f.sealed, "sealed", "", "manifest of one sealed Pod (sealctl output)")
	flag.StringVar(&f.runc, "runc", "", "manifest of the same Pod for runc")
	flag.IntVar(&f.runs, "runs", 3, "pods started one after the other, per runtime")
	flag.DurationVar(&f.timeout, "timeout", 5*time.Minute, "per pod")
	flag.Parse()
	if f.sealed == "" || f.runc == "" || f.ctrdLog == "" {
		fmt.Fprintln(os.Stderr, "podbench: --sealed, --runc and --containerd-log are required")
		os.Exit(2)
	}
	if err := run(&f); err != nil {
		fmt.Fprintln(os.Stderr, "podbench:", err)
		os.Exit(1)
	}
}

// sample is one pod start; durations in milliseconds by phase.
type sample map[string]float64

// phases, in the order printed. The "shim:" ones exist for sealed pods only.
var phases = []struct{ key, label string }{
	{"scheduled", "kubectl create → scheduled"},
	{"toRunning", "scheduled → Running"},
	{"shim:network", "  pod network → tap (shim)"},
	{"shim:boot", "  VM boot → agent ready"},
	{"shim:attest", "  attested (evidence + attest)"},
	{"shim:key", "  key released"},
	{"shim:unseal", "  unsealed (incl. certificate, pod set-up)"},
	{"shim:pull", "  image pulled + unpacked in the guest"},
	{"shim:start", "  container started"},
	{"other", "  kubelet, CRI, CNI, secure-image pull"},
	{"toReady", "Running → Ready"},
	{"total", "kubectl create → Ready"},
	{"rss", "QEMU RSS at Ready (MiB)"},
}

func run(f *flags) error {
	results := map[string][]sample{}
	for _, rt := range []struct{ name, manifest string }{{"runc", f.runc}, {"sealed", f.sealed}} {
		podName, err := podNameOf(rt.manifest)
		if err != nil {
			return err
		}
		for i := 0; i < f.runs; i++ {
			s, err := startOnce(f, rt.manifest, podName, rt.name == "sealed")
			if err != nil {
				return fmt.Errorf("%s run %d: %w", rt.name, i+1, err)
			}
			fmt.Fprintf(os.Stderr, "%s run %d: %s\n", rt.name, i+1, s.short())
			results[rt.name] = append(results[rt.name], s)
		}
	}
	fmt.Printf("pod start, median of %d runs each (one pod at a time)\n", f.runs)
	fmt.Printf("%-44s %10s %10s\n", "phase", "sealed", "runc")
	for _, p := range phases {
		sv, rv := median(results["sealed"], p.key), median(results["runc"], p.key)
		if sv == "" && rv == "" {
			continue
		}
		unit := " ms"
		if p.key == "rss" {
			unit = ""
		}
		fmt.Printf("%-44s %10s %10s\n", p.label, orDash(sv, unit), orDash(rv, unit))
	}
	return nil
}

func (s sample) short() string {
	return fmt.Sprintf("scheduled %.0f ms, Running %.0f ms, Ready %.0f ms after create", s["scheduled"], s["scheduled"]+s["toRunning"], s["total"])
}

func orDash(v, unit string) string {
	if v == "" {
		return "-"
	}
	return v + unit
}

func median(ss []sample, key string) string {
	var v []float64
	for _, s := range ss {
		if x, ok := s[key]; ok {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return ""
	}
	slices.Sort(v)
	m := v[len(v)/2]
	if len(v)%2 == 0 {
		m = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return strconv.FormatFloat(m, 'f', 0, 64)
}

var nameRE = regexp.MustCompile(`(?m)^kind: Pod\s*$`)

func podNameOf(manifest string) (string, error) {
	b, err := os.ReadFile(manifest)
	if err != nil {
		return "", err
	}
	if !nameRE.Match(b) {
		return "", fmt.Errorf("%s: not a Pod manifest", manifest)
	}
	m := regexp.MustCompile(`(?m)^  name: (\S+)\s*$`).FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("%s: no metadata.name", manifest)
	}
	return string(m[1]), nil
}

func (f *flags) kubectlCmd(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, f.kubectl, append([]string{"--kubeconfig", f.kubeconfig}, args...)...)
}

// podStatus is the part of a Pod the watch needs.
type podStatus struct {
	Spec struct {
		NodeName string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		Phase      string `json:"phase"`
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
	} `json:"status"`
}

func startOnce(f *flags, manifest, pod string, sealed bool) (sample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	logOff := int64(0)
	if fi, err := os.Stat(f.ctrdLog); err == nil {
		logOff = fi.Size()
	}
	// Watch first, then create: every change is seen as it happens.
	// (a field selector: the watch starts before the pod exists)
	watch := f.kubectlCmd(ctx, "get", "pods", "--field-selector", "metadata.name="+pod, "--watch", "-o", "json")
	out, err := watch.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var werr bytes.Buffer
	watch.Stderr = &werr
	if err := watch.Start(); err != nil {
		return nil, err
	}
	defer func() { cancel(); _ = watch.Wait() }()
	time.Sleep(300 * time.Millisecond) // let the watch begin
	t0 := time.Now()
	if b, err := f.kubectlCmd(ctx, "create", "-f", manifest).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("kubectl create: %v: %s", err, b)
	}
	var tSched, tRun, tReady time.Time
	dec := json.NewDecoder(bufio.NewReader(out))
	for tReady.IsZero() {
		var p podStatus
		if err := dec.Decode(&p); err != nil {
			return nil, fmt.Errorf("watch pod %s: %v (%s)", pod, err, strings.TrimSpace(werr.String()))
		}
		now := time.Now()
		if tSched.IsZero() && p.Spec.NodeName != "" {
			tSched = now
		}
		if tRun.IsZero() && p.Status.Phase == "Running" {
			tRun = now
		}
		for _, c := range p.Status.Conditions {
			if c.Type == "Ready" && c.Status == "True" && !tRun.IsZero() {
				tReady = now
			}
		}
		if p.Status.Phase == "Failed" {
			return nil, fmt.Errorf("pod %s failed", pod)
		}
	}
	ms := func(a, b time.Time) float64 { return float64(b.Sub(a).Microseconds()) / 1000 }
	s := sample{"scheduled": ms(t0, tSched), "toRunning": ms(tSched, tRun), "toReady": ms(tRun, tReady), "total": ms(t0, tReady)}
	if sealed {
		if err := shimPhases(f.ctrdLog, logOff, s); err != nil {
			return nil, err
		}
	}
	if b, err := f.kubectlCmd(context.Background(), "delete", "pod", pod, "--wait=true", "--timeout=120s").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("kubectl delete: %v: %s", err, b)
	}
	return s, nil
}

var kvRE = regexp.MustCompile(`(\w+)=("[^"]*"|\S+)`)

// shimPhases adds the shim's phase durations logged since off, and the QEMU RSS now.
func shimPhases(path string, off int64, s sample) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	if _, err := fh.Seek(off, io.SeekStart); err != nil {
		return err
	}
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	seen := 0
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `msg="sealpod phase"`) {
			continue
		}
		kv := map[string]string{}
		for _, m := range kvRE.FindAllStringSubmatch(line, -1) {
			kv[m[1]] = strings.Trim(m[2], `"`)
		}
		num := func(k string) float64 { v, _ := strconv.ParseFloat(kv[k], 64); return v }
		switch kv["phase"] {
		case "network":
			s["shim:network"] = num("ms")
		case "boot+unseal":
			s["shim:boot"], s["shim:attest"], s["shim:key"], s["shim:unseal"] = num("boot_ms"), num("attest_ms"), num("key_ms"), num("unseal_ms")
			if pid := kv["qemu_pid"]; pid != "" {
				if rss, err := vmRSS(pid); err == nil {
					s["rss"] = rss / 1024
				} else {
					s["rss"] = num("qemu_rss_kib") / 1024
				}
			}
		case "pull":
			s["shim:pull"] = num("ms")
		case "start":
			s["shim:start"] = num("ms")
		default:
			continue
		}
		seen++
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if _, ok := s["shim:boot"]; !ok {
		return fmt.Errorf("no boot+unseal phase in %s since offset %d: was the pod sealed?", path, off)
	}
	sum := 0.0
	for _, k := range []string{"shim:network", "shim:boot", "shim:unseal", "shim:pull", "shim:start"} {
		sum += s[k]
	}
	s["other"] = s["toRunning"] - sum
	return nil
}

// vmRSS reads VmRSS (KiB) of a process.
func vmRSS(pid string) (float64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %s", pid)
}
