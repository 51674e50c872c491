package main

import (
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
	if err := shimPhases(p, off, s); err != nil {
		t.Fatal(err)
	}
	want := sample{"toRunning": 7615, "shim:network": 1, "shim:boot": 5401, "shim:attest": 28, "shim:key": 9, "shim:unseal": 476,
		"shim:pull": 1088, "shim:start": 145, "rss": 324, "other": 7615 - 1 - 5401 - 476 - 1088 - 145}
	for k, v := range want {
		if s[k] != v {
			t.Errorf("%s = %v, want %v", k, s[k], v)
		}
	}
	// Nothing logged since the offset: the pod was not sealed.
	if err := shimPhases(p, int64(len(ctrdLog)), sample{}); err == nil {
		t.Fatal("no error without phases")
	}
}

func TestMedian(t *testing.T) {
	ss := []sample{{"a": 3}, {"a": 1}, {"a": 2}, {"b": 1}}
	if got := median(ss, "a"); got != "2" {
		t.Fatalf("median a = %s", got)
	}
	if got := median(ss[:2], "a"); got != "2" {
		t.Fatalf("median of 1, 3 = %s", got)
	}
	if got := median(ss, "c"); got != "" {
		t.Fatalf("median of nothing = %q", got)
	}
}
