package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The shim's phase lines as containerd 1.6 writes them (logfmt), after an unrelated prefix.
const ctrdLog = `time="2026-11-22T08:00:00Z" level=info msg="earlier pod" phase=boot+unseal boot_ms=1
time="2026-11-22T08:01:40.1Z" level=info msg="sealpod phase" ms=1 phase=network shim=io.containerd.sealpod.v2 pid=1 tap=tap0_sealpod
time="2026-11-22T08:01:46.2Z" level=info msg="sealpod phase" attest_ms=28 boot_ms=5401 guest_unseal_ms=470 key_ms=9 phase=boot+unseal qemu_pid=999999999 qemu_rss_kib=331776 unseal_ms=476 workload=default.pod.bench
time="2026-11-22T08:01:47.3Z" level=info msg="sealpod phase" container=app guest_create_ms=1080 ms=1088 phase=pull
time="2026-11-22T08:01:47.4Z" level=info msg="sealpod phase" container=app exec="" ms=145 phase=start
`

func TestShimPhases(t *testing.T) {
	p := filepath.Join(t.TempDir(), "containerd.log")
	if err := os.WriteFile(p, []byte(ctrdLog), 0o644); err != nil {
		t.Fatal(err)
	}
	off := int64(len(`time="2026-11-22T08:00:00Z" level=info msg="earlier pod" phase=boot+unseal boot_ms=1` + "\n"))
	s := sample{"toRunning": 7615}
	pid, err := shimPhases(p, off, s, noRSS)
	if err != nil {
		t.Fatal(err)
	}
	if pid == "" {
		t.Error("no QEMU pid from the boot+unseal phase (the settled RSS is read from it)")
	}
	want := sample{"toRunning": 7615, "shim:network": 1, "shim:boot": 5401, "shim:attest": 28, "shim:key": 9, "shim:unseal": 476,
		"shim:pull": 1088, "shim:start": 145, "rss": 324, "other": 7615 - 1 - 5401 - 476 - 1088 - 145}
	for k, v := range want {
		if s[k] != v {
			t.Errorf("%s = %v, want %v", k, s[k], v)
		}
	}
	// Nothing logged since the offset: the pod was not sealed.
	if _, err := shimPhases(p, int64(len(ctrdLog)), sample{}, noRSS); err == nil {
		t.Fatal("no error without phases")
	}
}

// noRSS: the QEMU process of a captured log is gone (its pid may be another process now).
func noRSS(pid string) (float64, error) { return 0, fmt.Errorf("no process %s", pid) }

func TestMedianPercentile(t *testing.T) {
	ss := []sample{{"a": 3}, {"a": 1}, {"a": 2}, {"b": 1}}
	ten := []sample{}
	for i := 10; i >= 1; i-- {
		ten = append(ten, sample{"a": float64(i)})
	}
	for _, tc := range []struct {
		name     string
		ss       []sample
		key      string
		med, p90 float64
		ok       bool
	}{
		{"odd", ss, "a", 2, 3, true},
		{"even", ss[:2], "a", 2, 3, true},
		{"ten", ten, "a", 5.5, 9, true},
		{"one", ss[3:], "b", 1, 1, true},
		{"none", ss, "c", 0, 0, false},
	} {
		med, ok := median(tc.ss, tc.key)
		p90, ok2 := percentile(tc.ss, tc.key, 0.9)
		if med != tc.med || p90 != tc.p90 || ok != tc.ok || ok2 != tc.ok {
			t.Errorf("%s: median %v %v, p90 %v %v; want %v, %v (%v)", tc.name, med, ok, p90, ok2, tc.med, tc.p90, tc.ok)
		}
	}
}

// TestShimPhasesCaptured parses captured containerd logs: readiness-probe execs log
// phase=start too and must not replace the container's start; a pod with two containers
// pulls and starts twice (the durations add up: the kubelet creates them one after the other).
func TestShimPhasesCaptured(t *testing.T) {
	for _, tc := range []struct {
		file string
		want sample
	}{
		{"containerd-bench-probes.log", sample{"shim:network": 1, "shim:boot": 5401, "shim:attest": 28, "shim:key": 9, "shim:unseal": 476,
			"shim:pull": 1088, "shim:start": 145, "rss": 324}},
		{"containerd-e2e-2026-12-05.log", sample{"shim:boot": 7901, "shim:attest": 24, "shim:key": 10, "shim:unseal": 817,
			"shim:pull": 2687 + 2792, "shim:start": 42 + 15, "rss": 325068.0 / 1024}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			s := sample{"toRunning": 20000}
			if _, err := shimPhases(filepath.Join("testdata", tc.file), 0, s, noRSS); err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				if s[k] != v {
					t.Errorf("%s = %v, want %v", k, s[k], v)
				}
			}
		})
	}
}
