// Command podbench measures pod start on the local cluster (hack/bench podstart): it creates
// a pod with kubectl, watches it (list+watch, watching again from the last resourceVersion when
// a stream ends) until Ready, deletes it, and repeats; for a sealed pod it adds the shim's phases
// from containerd's log (VM boot → agent ready, attestation, key, unseal, in-guest pull, start)
// and the QEMU process's RSS once the pod is Ready. It prints the median and p90 of each phase,
// sealed next to runc, and with --json writes every run.
//
//	podbench --kubectl K --kubeconfig F --containerd-log L --runs 5 --sealed pod.sealed.yaml --runc pod.yaml [--json podstart.json]
//	podbench report --dir OUT   (the one table of `hack/bench all`, from the files of one run; see report.go)
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

type flags struct {
	kubectl, kubeconfig, ctrdLog, sealed, runc, json string
	runs                                             int
	timeout, rssSettle                               time.Duration
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "report" {
		if err := reportMain(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "podbench report:", err)
			os.Exit(1)
		}
		return
	}
	var f flags
	flag.StringVar(&f.kubectl, "kubectl", "kubectl", "kubectl binary")
	flag.StringVar(&f.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
	flag.StringVar(&f.ctrdLog, "containerd-log", "", "containerd's log file (the shim's phases)")
	flag.StringVar(&f.sealed, "sealed", "", "manifest of one sealed Pod (sealctl output)")
	flag.StringVar(&f.runc, "runc", "", "manifest of the same Pod for runc")
	flag.StringVar(&f.json, "json", "", "also write every run, medians and p90s to this JSON file")
	flag.IntVar(&f.runs, "runs", 5, "pods started one after the other, per runtime")
	flag.DurationVar(&f.timeout, "timeout", 5*time.Minute, "per pod")
	flag.DurationVar(&f.rssSettle, "rss-settle", 10*time.Second, "read QEMU's RSS again this long after Ready (steady state: free page reporting has returned what the boot freed); 0 = only at Ready")
	flag.Parse()
	if f.sealed == "" || f.runc == "" || f.ctrdLog == "" || f.runs < 1 {
		fmt.Fprintln(os.Stderr, "podbench: --sealed, --runc and --containerd-log are required, --runs at least 1")
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
	{"shim:unseal", "  agent ready → unsealed"},
	{"shim:attest", "    of which attested (evidence + attest)"},
	{"shim:key", "    of which key released"},
	{"shim:pull", "  unsealed → images pulled (in the guest)"},
	{"shim:start", "  images pulled → running (container start)"},
	{"other", "  kubelet, CRI, CNI, secure-image pull"},
	{"toReady", "Running → Ready"},
	{"total", "kubectl create → Ready"},
	{"rss", "QEMU RSS at Ready (MiB)"},
	{"rssSettled", "QEMU RSS settled after Ready (MiB)"},
}

// runtimeResult is what podbench measured for one runtime (JSON in --json and report).
type runtimeResult struct {
	Samples []sample           `json:"samples"`
	Median  map[string]float64 `json:"median"`
	P90     map[string]float64 `json:"p90"`
}

// podstartResult is the --json file.
type podstartResult struct {
	Runs     int                       `json:"runs"`
	Runtimes map[string]*runtimeResult `json:"runtimes"` // "sealed", "runc"
}

func run(f *flags) error {
	res := podstartResult{Runs: f.runs, Runtimes: map[string]*runtimeResult{}}
	for _, rt := range []struct{ name, manifest string }{{"runc", f.runc}, {"sealed", f.sealed}} {
		pod, err := podRefOf(rt.manifest)
		if err != nil {
			return err
		}
		var ss []sample
		for i := 0; i < f.runs; i++ {
			s, err := startOnce(f, rt.manifest, pod, rt.name == "sealed")
			if err != nil {
				return fmt.Errorf("%s run %d: %w", rt.name, i+1, err)
			}
			fmt.Fprintf(os.Stderr, "%s run %d: %s\n", rt.name, i+1, s.short())
			ss = append(ss, s)
		}
		res.Runtimes[rt.name] = summarize(ss)
	}
	printPodstart(os.Stdout, &res)
	if f.json != "" {
		b, err := json.MarshalIndent(&res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(f.json, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", f.json, err)
		}
	}
	return nil
}

// summarize computes the median and p90 of every phase over the runs.
func summarize(ss []sample) *runtimeResult {
	r := &runtimeResult{Samples: ss, Median: map[string]float64{}, P90: map[string]float64{}}
	for _, s := range ss {
		for k := range s {
			if _, done := r.Median[k]; done {
				continue
			}
			r.Median[k], _ = median(ss, k)
			r.P90[k], _ = percentile(ss, k, 0.9)
		}
	}
	return r
}

func printPodstart(w io.Writer, res *podstartResult) {
	sealed, runc := res.Runtimes["sealed"], res.Runtimes["runc"]
	fmt.Fprintf(w, "pod start, %d runs each (one pod at a time); p90 by nearest rank (with fewer than 10 runs: the slowest)\n", res.Runs)
	fmt.Fprintf(w, "%-44s %10s %10s %10s %10s\n", "phase", "sealed p50", "p90", "runc p50", "p90")
	get := func(r *runtimeResult, m func(*runtimeResult) map[string]float64, k string) string {
		if r == nil {
			return "-"
		}
		v, ok := m(r)[k]
		if !ok {
			return "-"
		}
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	med := func(r *runtimeResult) map[string]float64 { return r.Median }
	p90 := func(r *runtimeResult) map[string]float64 { return r.P90 }
	for _, p := range phases {
		row := []string{get(sealed, med, p.key), get(sealed, p90, p.key), get(runc, med, p.key), get(runc, p90, p.key)}
		if slices.Equal(row, []string{"-", "-", "-", "-"}) {
			continue
		}
		fmt.Fprintf(w, "%-44s %10s %10s %10s %10s\n", p.label, row[0], row[1], row[2], row[3])
	}
	if sealed != nil && runc != nil && runc.Median["total"] > 0 && runc.P90["total"] > 0 {
		fmt.Fprintf(w, "sealed / runc, kubectl create → Ready: %.2f× (p50), %.2f× (p90)\n",
			sealed.Median["total"]/runc.Median["total"], sealed.P90["total"]/runc.P90["total"])
	}
}

func (s sample) short() string {
	r := ""
	if s["rewatch"] > 0 || s["relist"] > 0 {
		r = fmt.Sprintf(" (watched again %.0f×, listed again %.0f×)", s["rewatch"], s["relist"])
	}
	return fmt.Sprintf("scheduled %.0f ms, Running %.0f ms, Ready %.0f ms after create%s", s["scheduled"], s["scheduled"]+s["toRunning"], s["total"], r)
}

func values(ss []sample, key string) []float64 {
	var v []float64
	for _, s := range ss {
		if x, ok := s[key]; ok {
			v = append(v, x)
		}
	}
	slices.Sort(v)
	return v
}

// median of key over the samples that have it (the mean of the middle two for an even count).
func median(ss []sample, key string) (float64, bool) {
	v := values(ss, key)
	if len(v) == 0 {
		return 0, false
	}
	if len(v)%2 == 0 {
		return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
	}
	return v[len(v)/2], true
}

// percentile of key by nearest rank: the smallest value with at least q of the samples at or below it.
func percentile(ss []sample, key string, q float64) (float64, bool) {
	v := values(ss, key)
	if len(v) == 0 {
		return 0, false
	}
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return v[max(i, 0)], true
}

// podRef names a pod.
type podRef struct{ namespace, name string }

func (p podRef) String() string { return p.namespace + "/" + p.name }

func podRefOf(manifest string) (podRef, error) {
	b, err := os.ReadFile(manifest)
	if err != nil {
		return podRef{}, err
	}
	var m struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(b, &m); err != nil {
		return podRef{}, fmt.Errorf("manifest %s: %w", manifest, err)
	}
	if m.Kind != "Pod" {
		return podRef{}, fmt.Errorf("manifest %s: kind %q, want one Pod", manifest, m.Kind)
	}
	if m.Metadata.Name == "" {
		return podRef{}, fmt.Errorf("manifest %s: no metadata.name", manifest)
	}
	if m.Metadata.Namespace == "" {
		m.Metadata.Namespace = "default"
	}
	return podRef{m.Metadata.Namespace, m.Metadata.Name}, nil
}

func (f *flags) kubectlCmd(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, f.kubectl, append([]string{"--kubeconfig", f.kubeconfig}, args...)...)
}

func startOnce(f *flags, manifest string, pod podRef, sealed bool) (sample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	logOff := int64(0)
	if fi, err := os.Stat(f.ctrdLog); err == nil {
		logOff = fi.Size()
	}
	// List, then watch from the list's resourceVersion, then create: every change is seen.
	src := kubectlSource{f: f, namespace: pod.namespace, name: pod.name}
	items, rv, err := src.list(ctx)
	if err != nil {
		return nil, err
	}
	if len(items) > 0 {
		return nil, fmt.Errorf("pod %s exists already (delete it first)", pod)
	}
	w := &podWatch{src: src, now: time.Now, retries: 5, backoff: 500 * time.Millisecond,
		logf: func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "podbench: pod %s: "+format+"\n", append([]any{pod}, args...)...)
		}}
	seen := make(chan podSeen, 64)
	wctx, wcancel := context.WithCancel(ctx)
	werr := make(chan error, 1)
	go func() { werr <- w.run(wctx, rv, seen); close(werr) }()
	defer func() { // the watch ends with the context; its error is the cancel
		wcancel()
		for range werr {
		}
	}()
	t0 := time.Now()
	b, err := f.kubectlCmd(ctx, "create", "-f", manifest, "-o", "jsonpath={.metadata.uid}").Output()
	if err != nil {
		return nil, fmt.Errorf("kubectl create -f %s: %w", manifest, exitDetail(err))
	}
	tl, err := timeline(ctx, pod, strings.TrimSpace(string(b)), seen, werr)
	if err != nil {
		return nil, err
	}
	ms := func(a, b time.Time) float64 { return float64(b.Sub(a).Microseconds()) / 1000 }
	s := sample{"scheduled": ms(t0, tl.scheduled), "toRunning": ms(tl.scheduled, tl.running), "toReady": ms(tl.running, tl.ready),
		"total": ms(t0, tl.ready), "rewatch": float64(w.rewatches), "relist": float64(w.relists)}
	if sealed {
		pid, err := shimPhases(f.ctrdLog, logOff, s, vmRSS)
		if err != nil {
			return nil, err
		}
		if pid != "" && f.rssSettle > 0 {
			time.Sleep(f.rssSettle)
			if v, err := vmRSS(pid); err == nil {
				s["rssSettled"] = v / 1024
			}
		}
	}
	if b, err := f.kubectlCmd(context.Background(), "delete", "pod", "-n", pod.namespace, pod.name, "--wait=true", "--timeout=120s").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("kubectl delete pod %s: %v: %s", pod, err, b)
	}
	return s, nil
}

func exitDetail(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return err
}

// times of one pod start, as seen through the watch.
type times struct{ scheduled, running, ready time.Time }

// timeline reads the pod's states (those of the pod with uid; a pod of the same name from an
// earlier run is ignored) until it is Ready, and returns when it was first seen scheduled,
// Running and Ready. A state that is all three at once (seen by a re-list) sets all three.
// werr carries the watch's one error, then is closed.
func timeline(ctx context.Context, pod podRef, uid string, seen <-chan podSeen, werr <-chan error) (times, error) {
	var t times
	last := "not seen"
	for t.ready.IsZero() {
		var s podSeen
		select {
		case s = <-seen:
		case err := <-werr:
			return t, fmt.Errorf("watch pod %s: %w", pod, err)
		case <-ctx.Done():
			return t, fmt.Errorf("pod %s not Ready: %w (last state: %s)", pod, ctx.Err(), last)
		}
		if uid != "" && s.pod.Metadata.UID != uid {
			continue
		}
		p := &s.pod
		last = fmt.Sprintf("%s phase %q node %q ready %v", s.typ, p.Status.Phase, p.Spec.NodeName, p.ready())
		switch {
		case s.typ == "DELETED":
			return t, fmt.Errorf("pod %s deleted while starting (last state: %s)", pod, last)
		case p.Status.Phase == "Failed" || p.Status.Phase == "Succeeded":
			return t, fmt.Errorf("pod %s ended: phase %s", pod, p.Status.Phase)
		}
		if t.scheduled.IsZero() && p.Spec.NodeName != "" {
			t.scheduled = s.at
		}
		if t.running.IsZero() && p.Status.Phase == "Running" {
			t.running = s.at
		}
		if !t.running.IsZero() && p.ready() {
			t.ready = s.at
		}
	}
	return t, nil
}

var kvRE = regexp.MustCompile(`(\w+)=("[^"]*"|\S+)`)

// shimPhases adds the shim's phase durations logged since off, and the QEMU RSS (rss reads
// it now from /proc; the size logged at unseal is the fallback). Containers' pulls and starts
// add up (the kubelet creates a pod's containers one after the other); execs (readiness
// probes) log phase=start too and are not the container's start.
func shimPhases(path string, off int64, s sample, rss func(pid string) (float64, error)) (qemuPID string, err error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	if _, err := fh.Seek(off, io.SeekStart); err != nil {
		return "", err
	}
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
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
				qemuPID = pid
				if v, err := rss(pid); err == nil {
					s["rss"] = v / 1024
				} else {
					s["rss"] = num("qemu_rss_kib") / 1024
				}
			}
		case "pull":
			s["shim:pull"] += num("ms")
		case "start":
			if kv["exec"] == "" {
				s["shim:start"] += num("ms")
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if _, ok := s["shim:boot"]; !ok {
		return "", fmt.Errorf("no boot+unseal phase in %s since offset %d: was the pod sealed?", path, off)
	}
	sum := 0.0
	for _, k := range []string{"shim:network", "shim:boot", "shim:unseal", "shim:pull", "shim:start"} {
		sum += s[k]
	}
	s["other"] = s["toRunning"] - sum
	return qemuPID, nil
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
