package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// The targets of issue #18's acceptance (and docs/design.md#targets) the table checks.
const (
	targetStartRatio  = 3.0    // sealed / runc, kubectl create → Ready, medians
	targetBootMs      = 1500.0 // VM boot → agent ready, median
	targetRSSMiB      = 128.0  // QEMU RSS at Ready, median
	targetServerRatio = 0.5    // broker server-CPU ratio to the P-384 verify floor
	targetSealPerCPU  = 2000.0 // pod templates sealed per CPU-second
)

// printSummary writes the one table of hack/bench all (Markdown) and its header lines.
func printSummary(w io.Writer, s *summary) {
	m := s.Machine
	fmt.Fprintf(w, "## hack/bench all, %s\n\n", s.Date)
	fmt.Fprintf(w, "- machine: %s, %d CPUs (%d cores), %.1f GiB, Linux %s\n", orNone(m.CPUModel), m.CPUs, m.Cores, float64(m.MemoryMiB)/1024, orNone(m.Kernel))
	fmt.Fprintf(w, "- QEMU: %s\n", orNone(s.QEMU))
	fmt.Fprintf(w, "- guest kernel: %s\n", guestKernelLine(s.GuestKernel))
	fmt.Fprintf(w, "- load average: %s at start, %s at end\n\n", orNone(s.LoadStart), orNone(s.LoadEnd))

	fmt.Fprintln(w, "| measure | result | target | met |")
	fmt.Fprintln(w, "|---|---|---|---|")
	row := func(measure, result, target string, met *bool) {
		mt := "–"
		if met != nil {
			mt = map[bool]string{true: "yes", false: "**no**"}[*met]
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", measure, result, target, mt)
	}
	is := func(b bool) *bool { return &b }

	if st := s.Start; st != nil {
		row("pod start, kubectl create → Ready (sealed / runc)",
			fmt.Sprintf("sealed p50 %s / p90 %s ms; runc p50 %s / p90 %s ms; **%.2f×** (p50), %.2f× (p90)",
				ms(st.SealedP50), ms(st.SealedP90), ms(st.RuncP50), ms(st.RuncP90), st.RatioP50, st.RatioP90),
			fmt.Sprintf("≤ %g×", targetStartRatio), is(st.RatioP50 <= targetStartRatio))
	} else {
		row("pod start", "not measured (no podstart.json)", fmt.Sprintf("≤ %g×", targetStartRatio), nil)
	}
	if s.Podstart != nil && s.Podstart.Runtimes["sealed"] != nil {
		sealed := s.Podstart.Runtimes["sealed"]
		med := func(k string) (float64, bool) { v, ok := sealed.Median[k]; return v, ok }
		if v, ok := med("scheduled"); ok {
			row("· kubectl create → scheduled", fmt.Sprintf("%s ms (p90 %s)", ms(v), ms(sealed.P90["scheduled"])), "", nil)
		}
		if v, ok := med("shim:network"); ok {
			row("· pod network → tap (shim)", fmt.Sprintf("%s ms (p90 %s)", ms(v), ms(sealed.P90["shim:network"])), "", nil)
		}
		if v, ok := med("shim:boot"); ok {
			row("· VM boot → agent ready (QEMU start → agent answers Ping)", fmt.Sprintf("**%s ms** (p90 %s)", ms(v), ms(sealed.P90["shim:boot"])),
				fmt.Sprintf("≤ %s ms", ms(targetBootMs)), is(v <= targetBootMs))
		}
		for _, p := range []struct{ key, label string }{
			{"shim:unseal", "· agent ready → unsealed (auth, attest, key, open, certificate, pod set-up)"},
			{"shim:attest", "·· of which attested (evidence + attest)"},
			{"shim:key", "·· of which key released"},
			{"shim:pull", "· unsealed → images pulled + unpacked (in the guest)"},
			{"shim:start", "· images pulled → running (container start)"},
			{"other", "· the rest of scheduled → Running (kubelet, CRI sandbox, CNI, secure-image pull, QEMU exec)"},
			{"toReady", "· Running → Ready (first exec probe)"},
		} {
			if v, ok := med(p.key); ok {
				row(p.label, fmt.Sprintf("%s ms (p90 %s)", ms(v), ms(sealed.P90[p.key])), "", nil)
			}
		}
		if v, ok := med("rss"); ok {
			row("QEMU RSS at Ready", fmt.Sprintf("%.0f MiB (p90 %.0f)", v, sealed.P90["rss"]), "", nil)
		}
		if v, ok := med("rssSettled"); ok {
			row("QEMU RSS steady (read again `--rss-settle` after Ready)", fmt.Sprintf("**%.0f MiB** (p90 %.0f)", v, sealed.P90["rssSettled"]), fmt.Sprintf("≤ %g MiB", targetRSSMiB), is(v <= targetRSSMiB))
		}
	}
	for _, k := range s.KBS {
		res := fmt.Sprintf("%.0f flows/s; per request p50 %.1f / p99 %.1f ms; P-384 floor %.0f/s, wall ratio %.3f",
			k.FlowsPerSec, k.RequestP50Ms, k.RequestP99Ms, k.P384PerSec, k.WallRatio)
		name := "key broker"
		if k.Flow != "" {
			name += " (" + k.Flow + ")"
		}
		if k.ServerCPURatio > 0 {
			res = fmt.Sprintf("**server CPU ratio %.3f** (broker CPU %.3f ms/flow); ", k.ServerCPURatio, k.BrokerCPUPerFlow) + res
			row(name+", clients in a "+k.Clients, res, fmt.Sprintf("≥ %g", targetServerRatio), is(k.ServerCPURatio >= targetServerRatio))
		} else {
			row(name+", clients "+k.Clients, res, "", nil)
		}
		if k.HalfRateOffered > 0 {
			row(fmt.Sprintf("· open loop at half saturation (%.0f flows/s offered), per request", k.HalfRateOffered),
				fmt.Sprintf("p50 %.1f / **p99 %.1f ms**", k.HalfRateRequestP50Ms, k.HalfRateRequestP99Ms), "p99 < 20 ms", is(k.HalfRateRequestP99Ms < 20))
		}
	}
	if len(s.KBS) == 0 {
		row("key broker", "not measured (no kbs.txt)", fmt.Sprintf("≥ %g", targetServerRatio), nil)
	}
	if s.Seal != nil {
		row("seal, one core", fmt.Sprintf("**%.0f templates per CPU-second** (%.0f/s wall)", s.Seal.PerCPUSecond, s.Seal.PerSecond),
			fmt.Sprintf("≥ %.0f", targetSealPerCPU), is(s.Seal.PerCPUSecond >= targetSealPerCPU))
	} else {
		row("seal", "not measured (no seal.txt)", fmt.Sprintf("≥ %.0f", targetSealPerCPU), nil)
	}
	if p := s.Podstart; p != nil {
		fmt.Fprintf(w, "\npod start: %d runs per runtime, one pod at a time; p90 by nearest rank (with fewer than 10 runs, the slowest run).\n", p.Runs)
		rewatch := 0.0
		for _, rt := range p.Runtimes {
			for _, smp := range rt.Samples {
				rewatch += smp["rewatch"]
			}
		}
		if rewatch > 0 {
			fmt.Fprintf(w, "pod watches that ended and were resumed: %.0f\n", rewatch)
		}
	}
	if len(s.Missing) > 0 {
		fmt.Fprintf(w, "\nnot in this run's directory: %s\n", strings.Join(s.Missing, ", "))
	}
}

func ms(v float64) string {
	s := strconv.FormatFloat(v, 'f', 0, 64)
	if len(s) > 3 && !strings.HasPrefix(s, "-") {
		s = s[:len(s)-3] + "," + s[len(s)-3:]
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func guestKernelLine(g map[string]string) string {
	if len(g) == 0 {
		return "unknown (no SOURCES.txt in the guest bundle)"
	}
	if r, ok := g["kernel-release"]; ok {
		line := r
		if p, ok := g["kernel-package"]; ok {
			line += " (" + p + ")"
		}
		return line
	}
	keys := make([]string, 0, len(g))
	for k := range g {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+" "+g[k])
	}
	return strings.Join(parts, "; ")
}
