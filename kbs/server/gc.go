package server

import (
	"os"
	"runtime/debug"
)

// DefaultGCPercent is the garbage collector target the broker runs with unless GOGC is set.
// The broker's live heap is a few MiB (sessions, pools, the bbolt page cache is mmapped), so
// Go's default of 100 collects every few MiB of allocation — a few hundred times a second at
// full load, about 10% of the broker's CPU with its write barriers and preemptions. At 400 the
// heap peaks at some tens of MiB and the broker needs 3–8% less CPU per full flow
// (BenchmarkFullFlowServerCPU on the 2-core development VM, GOGC=100 vs 400, see
// docs/benchmarks.md).
const DefaultGCPercent = 400

// TuneGC sets the garbage collector target to DefaultGCPercent unless the GOGC environment
// variable is set (then the runtime already applied it). It returns the percent in effect.
func TuneGC() int {
	if v, ok := os.LookupEnv("GOGC"); ok && v != "" {
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		return p
	}
	debug.SetGCPercent(DefaultGCPercent)
	return DefaultGCPercent
}
