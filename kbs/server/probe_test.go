package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// The P-384 floor of BenchmarkFullFlowServerCPU is measured twice: before and after the run,
// alone (p384CPU), and during the run, under the same load as the broker, by floorProbe. On
// a shared machine the CPU time of the same instructions depends on what else runs (caches,
// interrupts, context switches: on the 2-core development VM the broker's own report
// signature check costs ~15% more CPU during the run than the same verify alone), so the
// in-run floor is the like-for-like denominator; both are printed.

// threadCPU is the calling OS thread's CPU time (the goroutine must be locked to it).
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// probeResult is what a floorProbe measured: n verifies with their mean and median thread
// CPU time, and the probe thread's whole CPU time (verifies, sleeps and wake-ups) to take
// off the broker's process CPU time.
type probeResult struct {
	n            int
	mean, median time.Duration
	total        time.Duration
}

// floorProbe runs one ECDSA P-384 verification (crypto/ecdsa.VerifyASN1 of a SHA-384 digest,
// as the broker's report signature check does) every interval on its own locked OS thread
// until stop is called.
type floorProbe struct {
	stopc chan struct{}
	done  chan probeResult
}

func startFloorProbe(interval time.Duration) *floorProbe {
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	digest := sha512.Sum384([]byte("report"))
	sig, _ := ecdsa.SignASN1(rand.Reader, key, digest[:])
	p := &floorProbe{stopc: make(chan struct{}), done: make(chan probeResult, 1)}
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		start := threadCPU()
		var samples []time.Duration
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.stopc:
				var r probeResult
				r.n, r.total = len(samples), threadCPU()-start
				if r.n > 0 {
					var sum time.Duration
					for _, d := range samples {
						sum += d
					}
					r.mean = sum / time.Duration(r.n)
					slices.Sort(samples)
					r.median = samples[r.n/2]
				}
				p.done <- r
				return
			case <-t.C:
			}
			c0 := threadCPU()
			if !ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig) {
				panic("P-384 probe: verify failed")
			}
			samples = append(samples, threadCPU()-c0)
		}
	}()
	return p
}

func (p *floorProbe) stop() probeResult {
	close(p.stopc)
	return <-p.done
}
