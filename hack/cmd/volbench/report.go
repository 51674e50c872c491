package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/sealpod/sealpod/hack/cmd/volbench/measure"
)

// Summary is one `hack/bench volume` run: where it ran and every record of the guest.
type Summary struct {
	Time        string           `json:"time"`
	Machine     string           `json:"machine"`
	QEMU        string           `json:"qemu"`
	Accel       string           `json:"accel"`
	GuestKernel string           `json:"guest_kernel"`
	LoadStart   string           `json:"load_start"`
	LoadEnd     string           `json:"load_end"`
	DiskBytes   int64            `json:"disk_bytes"`
	Rounds      int              `json:"rounds"`
	OpenMs      int64            `json:"sealed_open_ms"` // first open: format (wipe through dm-crypt) included
	GuestCrypto string           `json:"guest_crypto"`   // the guest kernel's drivers for xts(aes), hmac(sha256)
	Results     []measure.Result `json:"results"`
}

// row is one measure of the table: its label and how to read it from a record.
type row struct {
	label string
	mbps  func(measure.Result) float64
	iops  bool // also show requests per second (4 KiB)
}

var rows = []row{
	{"sequential write (1 MiB requests, then fdatasync)", measure.Result.SeqWriteMBps, false},
	{"sequential read (1 MiB requests)", measure.Result.SeqReadMBps, false},
	{"random write (4 KiB requests, then fdatasync)", measure.Result.RandWriteMBps, true},
	{"random read (4 KiB requests)", measure.Result.RandReadMBps, true},
}

// median of one measure over the rounds of one disk.
func (s *Summary) median(disk string, f func(measure.Result) float64) float64 {
	var xs []float64
	for _, r := range s.Results {
		if r.Disk == disk {
			xs = append(xs, f(r))
		}
	}
	return measure.Median(xs)
}

// Check says whether the summary has every round of both disks with the same sizes.
func (s *Summary) Check() error {
	if len(s.Results) != 2*s.Rounds {
		return fmt.Errorf("volbench: %d results, want %d (%d rounds of plain and sealed)", len(s.Results), 2*s.Rounds, s.Rounds)
	}
	seen := map[string]bool{}
	for _, r := range s.Results {
		k := fmt.Sprintf("%s/%d", r.Disk, r.Round)
		if seen[k] || r.Round > s.Rounds {
			return fmt.Errorf("volbench: result %s repeated or out of range", k)
		}
		seen[k] = true
		if r.SeqBytes != s.Results[0].SeqBytes || r.RandOps != s.Results[0].RandOps {
			return fmt.Errorf("volbench: result %s has other sizes than the first", k)
		}
	}
	return nil
}

// Write prints the run: header lines and one Markdown table, medians over the rounds, the
// sealed/plain ratio per measure.
func (s *Summary) Write(w io.Writer) {
	r0 := s.Results[0]
	fmt.Fprintf(w, "## hack/bench volume, %s\n\n", s.Time)
	fmt.Fprintf(w, "- machine: %s\n", s.Machine)
	fmt.Fprintf(w, "- QEMU: %s (accel %s)\n", s.QEMU, s.Accel)
	fmt.Fprintf(w, "- guest kernel: %s\n", s.GuestKernel)
	fmt.Fprintf(w, "- load average: %s at start, %s at end\n", s.LoadStart, s.LoadEnd)
	fmt.Fprintf(w, "- disks: two virtio-blk disks of %d MiB in the same VM, sparse files on the host, cache=none; in the guest O_DIRECT on the block devices; sealed = agent/volume (volumeMode Block: dm-crypt aes-xts-plain64 over dm-integrity hmac(sha256), data journal), plain = the other disk as is\n", s.DiskBytes>>20)
	fmt.Fprintf(w, "- sizes: sequential %d MiB, random %d × 4 KiB (distinct blocks of that range); rounds per disk: %d (plain and sealed alternating); medians\n", r0.SeqBytes>>20, r0.RandOps, s.Rounds)
	crypto := s.GuestCrypto
	if crypto == "" {
		crypto = "not reported"
	}
	fmt.Fprintf(w, "- guest crypto drivers: %s\n", crypto)
	fmt.Fprintf(w, "- sealed volume first open (format: every sector written once through dm-crypt): %s ms\n\n", group(s.OpenMs))
	fmt.Fprintln(w, "| measure | plain | sealed | sealed / plain |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, r := range rows {
		p, x := s.median("plain", r.mbps), s.median("sealed", r.mbps)
		fmt.Fprintf(w, "| %s | %s | %s | **%.2f** |\n", r.label, cell(p, r.iops), cell(x, r.iops), x/p)
	}
}

func cell(mbps float64, iops bool) string {
	whole, frac, _ := strings.Cut(fmt.Sprintf("%.1f", mbps), ".")
	n, _ := strconv.ParseInt(whole, 10, 64)
	s := group(n) + "." + frac + " MB/s"
	if iops {
		s += fmt.Sprintf(" (%s IOPS)", group(int64(mbps*1e6/measure.RandBlock+0.5)))
	}
	return s
}

// group formats n with thousands separators (1,234).
func group(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
