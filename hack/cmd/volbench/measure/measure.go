// Package measure is the disk throughput measurement of `hack/bench volume` (issue 15 item 6)
// and its console record: the guest /init (hack/cmd/volbench/volbench-init) runs Run on the
// sealed volume's decrypted block device and on a plain virtio disk of the same VM and prints
// one Line per run on the console; the host runner (hack/cmd/volbench) reads them back with
// ParseLine, which treats the console as untrusted input (strict JSON, checked ranges).
//
// One run on a block device (or a file of at least Params.SeqBytes), all with O_DIRECT:
//
//   - sequential write of SeqBytes in 1 MiB requests, then fdatasync;
//   - sequential read of the same bytes in 1 MiB requests;
//   - random write of RandOps distinct 4 KiB blocks of that range (a fixed pseudo-random
//     order), then fdatasync;
//   - random read of the same blocks in another order.
//
// Every 4 KiB block written carries its offset (and a pass marker) in its first bytes, and
// every read checks it: a device that returned other data fails the run instead of being fast.
package measure

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// SeqBlock is the request size of the sequential passes.
	SeqBlock = 1 << 20
	// RandBlock is the request size of the random passes.
	RandBlock = 4096
	// MaxSeqBytes and MaxRandOps bound what a run may be asked for (and what a record may claim).
	MaxSeqBytes = 4 << 30
	MaxRandOps  = 1 << 20
	// Prefix starts every console line of the guest program.
	Prefix = "sealpod-volbench: "
	// resultWord follows Prefix on a result line.
	resultWord = "result "
)

// Params size one run.
type Params struct {
	// SeqBytes is the size of the sequential passes: a positive multiple of SeqBlock.
	SeqBytes int64
	// RandOps is the number of 4 KiB requests of each random pass, at most SeqBytes/RandBlock.
	RandOps int
}

// Validate checks the sizes.
func (p Params) Validate() error {
	if p.SeqBytes <= 0 || p.SeqBytes%SeqBlock != 0 || p.SeqBytes > MaxSeqBytes {
		return fmt.Errorf("volbench params: sequential size %d: want a positive multiple of %d up to %d", p.SeqBytes, SeqBlock, int64(MaxSeqBytes))
	}
	if p.RandOps <= 0 || int64(p.RandOps) > p.SeqBytes/RandBlock {
		return fmt.Errorf("volbench params: random requests %d: want 1..%d (distinct 4 KiB blocks of the sequential range)", p.RandOps, p.SeqBytes/RandBlock)
	}
	return nil
}

// Result is one run on one device.
type Result struct {
	// Disk names the device: "plain" or "sealed".
	Disk string `json:"disk"`
	// Round counts the runs of the same VM from 1.
	Round int `json:"round"`
	// SeqBytes and RandOps are the run's Params.
	SeqBytes int64 `json:"seqBytes"`
	RandOps  int   `json:"randOps"`
	// Durations of the four passes in nanoseconds (writes include the fdatasync).
	SeqWriteNs  int64 `json:"seqWriteNs"`
	SeqReadNs   int64 `json:"seqReadNs"`
	RandWriteNs int64 `json:"randWriteNs"`
	RandReadNs  int64 `json:"randReadNs"`
}

// Disks are the device names a Result may carry.
var Disks = []string{"plain", "sealed"}

// MBps returns bytes per second in MB/s (10^6 bytes) for n bytes in ns nanoseconds.
func MBps(n int64, ns int64) float64 { return float64(n) / (float64(ns) / 1e9) / 1e6 }

// SeqWriteMBps .. RandReadMBps are the run's throughputs in MB/s.
func (r Result) SeqWriteMBps() float64 { return MBps(r.SeqBytes, r.SeqWriteNs) }
func (r Result) SeqReadMBps() float64  { return MBps(r.SeqBytes, r.SeqReadNs) }
func (r Result) RandWriteMBps() float64 {
	return MBps(int64(r.RandOps)*RandBlock, r.RandWriteNs)
}
func (r Result) RandReadMBps() float64 {
	return MBps(int64(r.RandOps)*RandBlock, r.RandReadNs)
}

// Validate checks a record (from the console: untrusted).
func (r Result) Validate() error {
	known := false
	for _, d := range Disks {
		known = known || r.Disk == d
	}
	if !known {
		return fmt.Errorf("volbench result: disk %q: want one of %q", r.Disk, Disks)
	}
	if r.Round < 1 || r.Round > 1000 {
		return fmt.Errorf("volbench result %s: round %d: want 1..1000", r.Disk, r.Round)
	}
	if err := (Params{SeqBytes: r.SeqBytes, RandOps: r.RandOps}).Validate(); err != nil {
		return fmt.Errorf("volbench result %s round %d: %w", r.Disk, r.Round, err)
	}
	for name, ns := range map[string]int64{"seqWriteNs": r.SeqWriteNs, "seqReadNs": r.SeqReadNs, "randWriteNs": r.RandWriteNs, "randReadNs": r.RandReadNs} {
		if ns <= 0 || ns > int64(24*time.Hour) {
			return fmt.Errorf("volbench result %s round %d: %s %d: want 1ns..24h", r.Disk, r.Round, name, ns)
		}
	}
	return nil
}

// Line is r's console line: Prefix, "result ", compact JSON.
func Line(r Result) string {
	b, err := json.Marshal(r)
	if err != nil {
		panic(err) // a struct of strings and integers always marshals
	}
	return Prefix + resultWord + string(b)
}

// ErrNotResult is returned by ParseLine for a console line that is not a result line.
var ErrNotResult = errors.New("not a volbench result line")

// maxLine bounds a result line (a record is ~200 bytes).
const maxLine = 1024

// ParseLine parses a result line of the console: exactly the fields of Result, no others,
// checked by Validate. Other lines are ErrNotResult.
func ParseLine(line string) (Result, error) {
	rest, ok := strings.CutPrefix(line, Prefix+resultWord)
	if !ok {
		return Result{}, ErrNotResult
	}
	if len(line) > maxLine {
		return Result{}, fmt.Errorf("volbench result line: %d bytes, want at most %d", len(line), maxLine)
	}
	dec := json.NewDecoder(strings.NewReader(rest))
	dec.DisallowUnknownFields()
	var r Result
	if err := dec.Decode(&r); err != nil {
		return Result{}, fmt.Errorf("volbench result line: %w", err)
	}
	if dec.More() {
		return Result{}, errors.New("volbench result line: data after the record")
	}
	if err := r.Validate(); err != nil {
		return Result{}, err
	}
	return r, nil
}

// Run measures the device (or file) at path, which must hold at least p.SeqBytes; its
// content in that range is overwritten.
func Run(path, disk string, round int, p Params) (Result, error) {
	if err := p.Validate(); err != nil {
		return Result{}, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return Result{}, fmt.Errorf("volbench %s: %w", disk, err)
	}
	defer f.Close()
	size, err := f.Seek(0, 2)
	if err != nil {
		return Result{}, fmt.Errorf("volbench %s: size of %s: %w", disk, path, err)
	}
	if size < p.SeqBytes {
		return Result{}, fmt.Errorf("volbench %s: %s holds %d bytes, the run needs %d", disk, path, size, p.SeqBytes)
	}
	r := Result{Disk: disk, Round: round, SeqBytes: p.SeqBytes, RandOps: p.RandOps}
	rng := rand.New(rand.NewPCG(uint64(round), 0x5ea1))
	buf := alignedBuffer(SeqBlock)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	seqPass := uint64(round) << 32
	// Sequential write, fdatasync.
	start := time.Now()
	for off := int64(0); off < p.SeqBytes; off += SeqBlock {
		stamp(buf, off, seqPass)
		if _, err := f.WriteAt(buf, off); err != nil {
			return r, fmt.Errorf("volbench %s: sequential write at %d: %w", disk, off, err)
		}
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return r, fmt.Errorf("volbench %s: sequential write: fdatasync: %w", disk, err)
	}
	r.SeqWriteNs = time.Since(start).Nanoseconds()
	// Sequential read.
	start = time.Now()
	for off := int64(0); off < p.SeqBytes; off += SeqBlock {
		if _, err := f.ReadAt(buf, off); err != nil {
			return r, fmt.Errorf("volbench %s: sequential read at %d: %w", disk, off, err)
		}
		if err := check(buf, off, seqPass); err != nil {
			return r, fmt.Errorf("volbench %s: sequential read: %w", disk, err)
		}
	}
	r.SeqReadNs = time.Since(start).Nanoseconds()
	// Random write of distinct blocks, fdatasync; random read in another order.
	blocks := rng.Perm(int(p.SeqBytes / RandBlock))[:p.RandOps]
	randPass := seqPass | 1<<31
	small := buf[:RandBlock]
	start = time.Now()
	for _, b := range blocks {
		off := int64(b) * RandBlock
		stamp(small, off, randPass)
		if _, err := f.WriteAt(small, off); err != nil {
			return r, fmt.Errorf("volbench %s: random write at %d: %w", disk, off, err)
		}
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return r, fmt.Errorf("volbench %s: random write: fdatasync: %w", disk, err)
	}
	r.RandWriteNs = time.Since(start).Nanoseconds()
	rng.Shuffle(len(blocks), func(i, j int) { blocks[i], blocks[j] = blocks[j], blocks[i] })
	start = time.Now()
	for _, b := range blocks {
		off := int64(b) * RandBlock
		if _, err := f.ReadAt(small, off); err != nil {
			return r, fmt.Errorf("volbench %s: random read at %d: %w", disk, off, err)
		}
		if err := check(small, off, randPass); err != nil {
			return r, fmt.Errorf("volbench %s: random read: %w", disk, err)
		}
	}
	r.RandReadNs = time.Since(start).Nanoseconds()
	return r, nil
}

// stamp writes, at the start of each 4 KiB block of b (which goes to offset off), the block's
// offset and the pass.
func stamp(b []byte, off int64, pass uint64) {
	for i := 0; i < len(b); i += RandBlock {
		binary.LittleEndian.PutUint64(b[i:], uint64(off)+uint64(i))
		binary.LittleEndian.PutUint64(b[i+8:], pass)
	}
}

// check verifies the stamps of b read from offset off.
func check(b []byte, off int64, pass uint64) error {
	for i := 0; i < len(b); i += RandBlock {
		at, p := binary.LittleEndian.Uint64(b[i:]), binary.LittleEndian.Uint64(b[i+8:])
		if at != uint64(off)+uint64(i) || p != pass {
			return fmt.Errorf("block at %d reads back as block %d of pass %#x (want pass %#x): wrong data", off+int64(i), at, p, pass)
		}
	}
	return nil
}

// alignedBuffer returns n bytes aligned to 4096 (O_DIRECT).
func alignedBuffer(n int) []byte {
	b := make([]byte, n+4096)
	off := (4096 - int(uintptr(unsafe.Pointer(&b[0]))%4096)) % 4096
	return b[off : off+n]
}

// Median returns the median of xs (the mean of the two middle values for an even count); NaN
// for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
