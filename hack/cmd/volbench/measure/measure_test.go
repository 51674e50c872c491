package measure

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var small = Params{SeqBytes: 4 * SeqBlock, RandOps: 64}

// TestRun runs the four passes on a sparse file (O_DIRECT on the test's file system) and checks
// the record and what is on the file afterwards: every block of the range carries a stamp
// of the last pass that wrote it.
func TestRun(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, small.SeqBytes+SeqBlock); err != nil {
		t.Fatal(err)
	}
	r, err := Run(p, "plain", 2, small)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("record of a real run: %v", err)
	}
	if r.Disk != "plain" || r.Round != 2 || r.SeqBytes != small.SeqBytes || r.RandOps != small.RandOps {
		t.Fatalf("record %+v", r)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	seq, random := uint64(2)<<32, uint64(2)<<32|1<<31
	counts := map[uint64]int{}
	for off := int64(0); off < small.SeqBytes; off += RandBlock {
		blk := b[off : off+RandBlock]
		pass := uint64(0)
		for _, want := range []uint64{seq, random} {
			if check(blk, off, want) == nil {
				pass = want
			}
		}
		if pass == 0 {
			t.Fatalf("block at %d carries no stamp of this run", off)
		}
		counts[pass]++
	}
	if counts[random] != small.RandOps {
		t.Fatalf("%d blocks carry the random pass's stamp, want %d (distinct blocks)", counts[random], small.RandOps)
	}
	for _, x := range b[small.SeqBytes:] {
		if x != 0 {
			t.Fatal("the run wrote past its range")
		}
	}
}

func TestRunRefuses(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, make([]byte, SeqBlock), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, path string
		p          Params
		want       string
	}{
		{"too small", short, small, "the run needs"},
		{"missing", filepath.Join(dir, "none"), small, "no such file"},
		{"unaligned size", short, Params{SeqBytes: SeqBlock + 1, RandOps: 1}, "multiple of"},
		{"too many random", short, Params{SeqBytes: SeqBlock, RandOps: SeqBlock/RandBlock + 1}, "distinct 4 KiB blocks"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Run(c.path, "plain", 1, c.p); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Run: %v, want an error containing %q", err, c.want)
			}
		})
	}
}

// TestCheckDetectsOtherData: a block from another offset or pass is wrong data.
func TestCheckDetectsOtherData(t *testing.T) {
	b := alignedBuffer(2 * RandBlock)
	stamp(b, 8192, 7)
	if err := check(b, 8192, 7); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		off  int64
		pass uint64
	}{{"other offset", 4096, 7}, {"other pass", 8192, 8}} {
		if err := check(b, c.off, c.pass); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}

func validResult() Result {
	return Result{Disk: "sealed", Round: 1, SeqBytes: 64 << 20, RandOps: 2048,
		SeqWriteNs: 4e9, SeqReadNs: 2e9, RandWriteNs: 3e9, RandReadNs: 1e9}
}

func TestLineRoundTrip(t *testing.T) {
	r := validResult()
	got, err := ParseLine(Line(r))
	if err != nil {
		t.Fatal(err)
	}
	if got != r {
		t.Fatalf("round trip %+v, want %+v", got, r)
	}
	if mb := got.SeqWriteMBps(); mb < 16.77 || mb > 16.78 {
		t.Fatalf("seq write %.3f MB/s, want 16.777 (64 MiB in 4 s)", mb)
	}
}

func TestParseLineRefuses(t *testing.T) {
	good := strings.TrimPrefix(Line(validResult()), Prefix+"result ")
	for _, c := range []struct{ name, line, want string }{
		{"other line", Prefix + "done", "not a volbench result"},
		{"no prefix", good, "not a volbench result"},
		{"unknown field", Prefix + "result " + strings.Replace(good, `{"disk"`, `{"x":1,"disk"`, 1), "unknown field"},
		{"unknown disk", Prefix + "result " + strings.Replace(good, `"sealed"`, `"other"`, 1), "disk \"other\""},
		{"zero duration", Prefix + "result " + strings.Replace(good, `"seqReadNs":2000000000`, `"seqReadNs":0`, 1), "seqReadNs 0"},
		{"negative size", Prefix + "result " + strings.Replace(good, `"seqBytes":67108864`, `"seqBytes":-1`, 1), "sequential size"},
		{"trailing", Prefix + "result " + good + " {}", "data after"},
		{"not json", Prefix + "result {", "volbench result line"},
		{"too long", Prefix + "result " + good + strings.Repeat(" ", maxLine), "at most"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseLine(c.line)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ParseLine: %v, want an error containing %q", err, c.want)
			}
			if c.want == "not a volbench result" && !errors.Is(err, ErrNotResult) {
				t.Fatalf("want ErrNotResult, got %v", err)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// FuzzParseLine: the console is the guest's; whatever a line holds, ParseLine returns a
// record that validates, or an error.
func FuzzParseLine(f *testing.F) {
	f.Add(Line(validResult()))
	f.Add(Prefix + "result {}")
	f.Add(Prefix + "done")
	f.Fuzz(func(t *testing.T, line string) {
		r, err := ParseLine(line)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("accepted an invalid record %+v: %v", r, err)
		}
		if r.SeqWriteMBps() <= 0 || r.RandReadMBps() <= 0 {
			t.Fatalf("accepted record with non-positive throughput %+v", r)
		}
	})
}
