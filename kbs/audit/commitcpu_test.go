package audit_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/audit"
)

func procCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAuditCommitCPU appends from one caller, so every event is its own fsynced
// transaction, and reports the process CPU time per commit (getrusage).
func BenchmarkAuditCommitCPU(b *testing.B) {
	l := audit.New(openBolt(b))
	ctx := context.Background()
	c0 := procCPU()
	for b.Loop() {
		if err := l.Append(ctx, audit.Event{Kind: audit.KindKey, Workload: "bench", TEE: "snp", Result: audit.ResultOK, Remote: "127.0.0.1:1234"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((procCPU()-c0).Microseconds())/float64(b.N), "cpu-us/commit")
}
