package main

import (
	"bytes"
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/hack/cmd/volbench/measure"
	"github.com/sealpod/sealpod/internal/golden"
)

var update = flag.Bool("update", false, "rewrite testdata/report.golden.md")

// fixture is a console of a 2-round run: synthetic numbers (not a measurement), chosen so that
// the medians and ratios are easy to check by hand (plain seq write 100 MB/s, sealed 25 MB/s).
func fixture() []string {
	res := func(disk string, round int, seqW, seqR, randW, randR int64) string {
		return measure.Line(measure.Result{Disk: disk, Round: round, SeqBytes: 64 << 20, RandOps: 2048,
			SeqWriteNs: seqW, SeqReadNs: seqR, RandWriteNs: randW, RandReadNs: randR})
	}
	const mib64 = 671088640 // ns for 64 MiB at 100 MB/s
	return []string{
		"[    0.000000] Linux version 6.1.192-sealpod",
		measure.Prefix + "sealed open formatted=true sectors=190000 ms=12345",
		measure.Prefix + "crypto xts(aes)=xts-aes-aesni hmac(sha256)=hmac(sha256-ni)",
		res("plain", 1, mib64, mib64/2, 838860800, 419430400),
		res("sealed", 1, 4*mib64, 2*mib64, 4*838860800, 2*419430400),
		res("plain", 2, mib64*3/2, mib64/2, 838860800, 419430400),
		res("sealed", 2, 4*mib64, 4*mib64, 4*838860800, 4*419430400),
		measure.Prefix + "done",
	}
}

func TestReportGolden(t *testing.T) {
	s := &Summary{Time: "2026-12-06T06:00:00Z", Machine: "AMD EPYC, 2 CPUs, 23.5 GiB, Linux 6.18.44",
		QEMU: "QEMU emulator version 7.2.22", Accel: "tcg", GuestKernel: "6.1.192-sealpod",
		LoadStart: "1.00 1.10 1.20", LoadEnd: "1.50 1.40 1.30", DiskBytes: diskBytes(64 << 20), Rounds: 2}
	if err := s.parse(fixture()); err != nil {
		t.Fatal(err)
	}
	if s.OpenMs != 12345 || len(s.Results) != 4 || s.GuestCrypto != "xts(aes)=xts-aes-aesni hmac(sha256)=hmac(sha256-ni)" {
		t.Fatalf("parsed open %d ms, %d results, crypto %q", s.OpenMs, len(s.Results), s.GuestCrypto)
	}
	var out bytes.Buffer
	s.Write(&out)
	golden.Check(t, filepath.Join("testdata", "report.golden.md"), out.Bytes(), *update)
	// By hand: sequential write medians 83.3 (of 100 and 66.7) vs 25 MB/s; random read 20 vs
	// 7.5 (of 10 and 5) MB/s.
	for _, l := range []string{"| sequential write (1 MiB requests, then fdatasync) | 83.3 MB/s | 25.0 MB/s | **0.30** |",
		"| random read (4 KiB requests) | 20.0 MB/s (4,883 IOPS) | 7.5 MB/s (1,831 IOPS) | **0.38** |"} {
		if !strings.Contains(out.String(), l) {
			t.Errorf("report lacks %q", l)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	good := fixture()
	for _, c := range []struct {
		name    string
		console []string
		want    string
	}{
		{"missing round", append(good[:4:4], good[5:]...), "3 results, want 4"},
		{"repeated round", append(append([]string(nil), good[:6]...), good[3], good[7]), "repeated"},
		{"no open line", append([]string{good[0]}, good[2:]...), "no \"sealed open"},
		{"bad record", append(append([]string(nil), good...), measure.Prefix+"result {\"disk\":\"plain\"}"), "volbench result"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &Summary{Rounds: 2}
			if err := s.parse(c.console); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("parse: %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestDiskBytes(t *testing.T) {
	if got := diskBytes(64 << 20); got != 112<<20 {
		t.Fatalf("diskBytes(64 MiB) = %d MiB, want 112", got>>20)
	}
}

func TestCell(t *testing.T) {
	for _, c := range []struct {
		mbps float64
		iops bool
		want string
	}{{1670.84, false, "1,670.8 MB/s"}, {14.8, true, "14.8 MB/s (3,613 IOPS)"}, {0.04, false, "0.0 MB/s"}} {
		if got := cell(c.mbps, c.iops); got != c.want {
			t.Errorf("cell(%v, %v) = %q, want %q", c.mbps, c.iops, got, c.want)
		}
	}
}

func TestGroup(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -4500: "-4,500"} {
		if got := group(in); got != want {
			t.Errorf("group(%d) = %q, want %q", in, got, want)
		}
	}
}
