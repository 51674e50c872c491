package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReport: samples are charged to the symbol that contains them (the last one at or below
// the address), unknown addresses are listed as such, and windows split by time.
func TestReport(t *testing.T) {
	dir := t.TempDir()
	sm := filepath.Join(dir, "System.map")
	if err := os.WriteFile(sm, []byte("ffffffff81000000 T _text\nffffffff8117cabc T free_reserved_area\nffffffff8117cc00 t next_fn\nffffffff81200000 D some_data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	samples := filepath.Join(dir, "samples.txt")
	lines := "0.0010 ffffffff8117cb72\n0.0030 ffffffff8117cb72\n0.1500 ffffffff8117cc10\n0.1600 0000000000401000\n"
	if err := os.WriteFile(samples, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := report([]string{"--samples", samples, "--map", sm, "--window", "100ms"}, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"4 samples", "2  50.0%  free_reserved_area", "1  25.0%  next_fn", "?401000", "0.00s  free_reserved_area:2", "0.10s  ?401000:1, next_fn:1"} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if err := os.WriteFile(samples, []byte("0.1 zz\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := report([]string{"--samples", samples, "--map", sm}, &out); err == nil {
		t.Error("a bad sample line was taken")
	}
}
