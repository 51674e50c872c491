package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/sealpod/sealpod/internal/atomicfile"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/store"
)

// Retention: the log is bounded by age and size at hour granularity. Prune drops whole hour
// buckets, oldest first, and writes each one to an export segment before deleting it. The
// dropped events form one hash chain across all segments,
//
//	h_0 = 64 zero hex digits, h_i = SHA-256("sealpod-audit-v1\n" ‖ h_{i-1} ‖ "\n" ‖ key ‖ "\n" ‖ value)
//
// (h as lowercase hex, value the stored JSON bytes), and the store keeps the anchor: the
// number of segments written, of events dropped and the hash of the last dropped event. Each
// segment starts with the hash it continues from and ends with its last hash, so the export
// verifies on its own (VerifyExport) and against the anchor the broker holds: an edited,
// removed, reordered or truncated segment breaks the chain.
//
// The events still in the store are not chained (they are sealed one by one by the store,
// bound to their bucket and key); the anchor says where the exported history ends.

// Segment line formats (JSON lines).
type (
	segmentHeader struct {
		Segment uint64 `json:"segment"`
		Hour    string `json:"hour"`
		Prev    string `json:"prev"`
	}
	segmentTrailer struct {
		End    string `json:"end"`
		Events int    `json:"events"`
	}
)

// BucketRetention holds the retention anchor (key "anchor", JSON Anchor).
const (
	BucketRetention = "audit-retention"
	anchorKey       = "anchor"
	chainDomain     = "sealpod-audit-v1\n"
	// settle: an hour is only dropped once it ended this long ago (events are stamped when
	// enqueued and committed within commitTimeout).
	settle = commitTimeout + 30*time.Second
)

var zeroHash = hex.EncodeToString(make([]byte, sha256.Size))

// ErrExport is matched by errors.Is when an export does not verify.
var ErrExport = errors.New("audit export does not verify")

// ErrConcurrentPrune: another pruner (replica) advanced the anchor meanwhile.
var ErrConcurrentPrune = errors.New("audit retention anchor changed during prune (another replica prunes?)")

// Anchor is where the exported (dropped) part of the log ends (the wire type
// api.AuditAnchor, reported by the admin API's status).
type Anchor = api.AuditAnchor

// Retention bounds the log. Zero MaxAge and MaxBytes: no bound.
type Retention struct {
	// MaxAge: hours that ended more than MaxAge ago are dropped (events live at most
	// MaxAge + 1 h).
	MaxAge time.Duration
	// MaxBytes: oldest hours are dropped while the stored events (JSON bytes) exceed it. The
	// hour in progress is never dropped, so the log can exceed MaxBytes by up to one hour.
	MaxBytes int64
	// ExportDir receives one segment file per dropped hour (required).
	ExportDir string
}

// PruneResult says what one Prune dropped.
type PruneResult struct {
	Segments []string // files written (or completed) in ExportDir
	Events   int
	Bytes    int64
	Anchor   Anchor
}

// Usage is the size of the stored log (from the hour index).
type Usage struct {
	Bytes, Events int64
	Hours         int
}

// hourStats is the value of a BucketIndex entry: JSON bytes and events stored in the hour.
// Entries written before sizes were recorded hold one byte and count as empty.
type hourStats struct{ bytes, events int64 }

func decodeStats(b []byte) hourStats {
	if len(b) != 16 {
		return hourStats{}
	}
	return hourStats{int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:]))}
}

func (s hourStats) encode() []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, uint64(s.bytes))
	binary.BigEndian.PutUint64(b[8:], uint64(s.events))
	return b
}

// Usage returns the stored log's size.
func (l *Log) Usage(ctx context.Context) (Usage, error) {
	if err := l.Flush(ctx); err != nil {
		return Usage{}, err
	}
	var u Usage
	err := l.st.View(ctx, func(tx store.Tx) error {
		hours, err := tx.List(BucketIndex)
		if err != nil {
			return err
		}
		for _, h := range hours {
			s := decodeStats(h.Value)
			u.Bytes += s.bytes
			u.Events += s.events
		}
		u.Hours = len(hours)
		return nil
	})
	if err != nil {
		return Usage{}, fmt.Errorf("audit usage: %w", err)
	}
	return u, nil
}

// Anchor returns the retention anchor (zero hash and Seq 0 before the first prune).
func (l *Log) Anchor(ctx context.Context) (Anchor, error) {
	var a Anchor
	err := l.st.View(ctx, func(tx store.Tx) error {
		var err error
		a, err = readAnchor(tx)
		return err
	})
	return a, err
}

func readAnchor(tx store.Tx) (Anchor, error) {
	b, err := tx.Get(BucketRetention, anchorKey)
	if errors.Is(err, store.ErrNotFound) {
		return Anchor{Hash: zeroHash}, nil
	}
	if err != nil {
		return Anchor{}, fmt.Errorf("read audit retention anchor: %w", err)
	}
	var a Anchor
	if err := json.Unmarshal(b, &a); err != nil {
		return Anchor{}, fmt.Errorf("decode audit retention anchor: %w", err)
	}
	return a, nil
}

func chainHash(prev, key string, value []byte) string {
	h := sha256.New() // hash.Hash.Write never returns an error
	h.Write([]byte(chainDomain))
	h.Write([]byte(prev))
	h.Write([]byte("\n"))
	h.Write([]byte(key))
	h.Write([]byte("\n"))
	h.Write(value)
	return hex.EncodeToString(h.Sum(nil))
}

// Prune drops the hours the bound r excludes at time now, oldest first, each exported to a
// segment in r.ExportDir (fsynced) before its events are deleted. A prune interrupted by a
// crash resumes from the segment it had written.
func (l *Log) Prune(ctx context.Context, r Retention, now time.Time) (PruneResult, error) {
	var res PruneResult
	if r.ExportDir == "" {
		return res, errors.New("audit prune: no export directory: dropped events must be exported")
	}
	if r.MaxAge < 0 || r.MaxBytes < 0 {
		return res, fmt.Errorf("audit prune: negative bound (max age %v, max bytes %d)", r.MaxAge, r.MaxBytes)
	}
	if err := os.MkdirAll(r.ExportDir, 0o700); err != nil {
		return res, fmt.Errorf("audit prune: export directory: %w", err)
	}
	if err := l.Flush(ctx); err != nil {
		return res, err
	}
	var hours []store.KV
	err := l.st.View(ctx, func(tx store.Tx) error {
		var err error
		hours, err = tx.List(BucketIndex)
		return err
	})
	if err != nil {
		return res, fmt.Errorf("audit prune: list hours: %w", err)
	}
	var total int64
	for _, h := range hours {
		total += decodeStats(h.Value).bytes
	}
	now = now.UTC()
	for _, h := range hours {
		start, err := time.Parse(hourLayout, h.Key)
		if err != nil {
			return res, fmt.Errorf("audit prune: index entry %q: %w", h.Key, err)
		}
		end := start.Add(time.Hour)
		if end.Add(settle).After(now) {
			break // the hour in progress (or just ended) stays
		}
		tooOld := r.MaxAge > 0 && !end.After(now.Add(-r.MaxAge))
		tooBig := r.MaxBytes > 0 && total > r.MaxBytes
		if !tooOld && !tooBig {
			break // drop a prefix only: the chain has no gaps
		}
		seg, n, nb, a, err := l.pruneHour(ctx, r.ExportDir, h.Key, now)
		if err != nil {
			return res, err
		}
		total -= decodeStats(h.Value).bytes
		res.Segments = append(res.Segments, seg)
		res.Events += n
		res.Bytes += nb
		res.Anchor = a
	}
	if len(res.Segments) == 0 {
		res.Anchor, err = l.Anchor(ctx)
	}
	return res, err
}

// crashAfterExport (tests) fails a prune between writing a segment and deleting its events.
var crashAfterExport func() error

var segmentRE = regexp.MustCompile(`^audit-([0-9]{8})-([0-9]{10})\.jsonl$`)

func segmentName(seq uint64, hour string) string {
	return fmt.Sprintf("audit-%08d-%s.jsonl", seq, hour)
}

// pruneHour exports hour as segment anchor.Seq+1 (or reuses that segment when a previous
// prune wrote it and crashed), deletes its events and advances the anchor.
func (l *Log) pruneHour(ctx context.Context, dir, hour string, now time.Time) (string, int, int64, Anchor, error) {
	fail := func(err error) (string, int, int64, Anchor, error) {
		return "", 0, 0, Anchor{}, fmt.Errorf("audit prune hour %s: %w", hour, err)
	}
	prev, err := l.Anchor(ctx)
	if err != nil {
		return fail(err)
	}
	seq := prev.Seq + 1
	path := filepath.Join(dir, segmentName(seq, hour))
	seg, err := readSegment(path)
	switch {
	case err == nil && seg.header.Prev == prev.Hash && seg.header.Hour == hour:
		// resume: written before a crash; delete exactly its events
	case err == nil || errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrExport):
		var kvs []store.KV
		if err := l.st.View(ctx, func(tx store.Tx) error {
			var err error
			kvs, err = tx.List(bucketPrefix + hour)
			return err
		}); err != nil {
			return fail(err)
		}
		if seg, err = writeSegment(path, seq, hour, prev.Hash, kvs); err != nil {
			return fail(err)
		}
		if crashAfterExport != nil {
			if err := crashAfterExport(); err != nil {
				return fail(err)
			}
		}
	default:
		return fail(err)
	}
	var nb int64
	for i := 0; i < len(seg.keys); i += maxBatch {
		batch := seg.keys[i:min(i+maxBatch, len(seg.keys))]
		if err := l.st.Update(ctx, func(tx store.Tx) error {
			for _, k := range batch {
				if err := tx.Delete(bucketPrefix+hour, k); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fail(fmt.Errorf("delete exported events: %w", err))
		}
	}
	for _, n := range seg.sizes {
		nb += n
	}
	next := Anchor{Seq: seq, Events: prev.Events + uint64(len(seg.keys)), Hash: seg.end, Through: hour, Time: now}
	err = l.st.Update(ctx, func(tx store.Tx) error {
		cur, err := readAnchor(tx)
		if err != nil {
			return err
		}
		if cur.Seq != prev.Seq || cur.Hash != prev.Hash {
			return ErrConcurrentPrune
		}
		// Events that reached the hour after it was exported (none in normal operation)
		// stay, and the index keeps counting them.
		rest, err := tx.List(bucketPrefix + hour)
		if err != nil {
			return err
		}
		if len(rest) == 0 {
			if err := tx.Delete(BucketIndex, hour); err != nil {
				return err
			}
		} else {
			var s hourStats
			for _, kv := range rest {
				s.bytes += int64(len(kv.Value))
				s.events++
			}
			if err := tx.Put(BucketIndex, hour, s.encode()); err != nil {
				return err
			}
		}
		b, err := json.Marshal(next)
		if err != nil {
			return err
		}
		return tx.Put(BucketRetention, anchorKey, b)
	})
	if err != nil {
		return fail(err)
	}
	return path, len(seg.keys), nb, next, nil
}

type segment struct {
	header segmentHeader
	keys   []string
	sizes  []int64
	end    string
}

// writeSegment streams hour's events into path (atomicfile: temp file, fsync, rename, fsync dir).
func writeSegment(path string, seq uint64, hour, prev string, kvs []store.KV) (*segment, error) {
	seg := &segment{header: segmentHeader{Segment: seq, Hour: hour, Prev: prev}}
	err := atomicfile.WriteFunc(path, 0o600, func(f io.Writer) error {
		w := bufio.NewWriterSize(f, 1<<16)
		hb, _ := json.Marshal(seg.header)
		if _, err := w.Write(append(hb, '\n')); err != nil {
			return err
		}
		h := prev
		for _, kv := range kvs {
			if !json.Valid(kv.Value) || bytes.ContainsAny(kv.Value, "\n") {
				return fmt.Errorf("event %s: stored value is not one-line JSON", kv.Key)
			}
			h = chainHash(h, kv.Key, kv.Value)
			kb, _ := json.Marshal(kv.Key)
			// The stored bytes go out verbatim: the chain hashes exactly them.
			if _, err := fmt.Fprintf(w, `{"key":%s,"hash":"%s","event":%s}`+"\n", kb, h, kv.Value); err != nil {
				return err
			}
			seg.keys = append(seg.keys, kv.Key)
			seg.sizes = append(seg.sizes, int64(len(kv.Value)))
		}
		seg.end = h
		tb, _ := json.Marshal(segmentTrailer{End: h, Events: len(kvs)})
		if _, err := w.Write(append(tb, '\n')); err != nil {
			return err
		}
		return w.Flush()
	})
	if err != nil {
		return nil, err
	}
	return seg, nil
}

// MaxSegmentLine bounds one line of an export segment when reading it back.
const MaxSegmentLine = 64 << 10

// readSegment parses and checks one segment on its own (its internal chain from its header's
// prev to its trailer's end); errors match ErrExport (or os.ErrNotExist).
func readSegment(path string) (*segment, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseSegment(f, filepath.Base(path))
}

func parseSegment(r io.Reader, name string) (*segment, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: segment %s: %s", ErrExport, name, fmt.Sprintf(format, a...))
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), MaxSegmentLine)
	if !sc.Scan() {
		return nil, bad("empty")
	}
	seg := &segment{}
	dec := func(b []byte, v any) error {
		d := json.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		return d.Decode(v)
	}
	if err := dec(sc.Bytes(), &seg.header); err != nil || len(seg.header.Prev) != 64 {
		return nil, bad("header: %v", err)
	}
	h := seg.header.Prev
	for sc.Scan() {
		line := sc.Bytes()
		var tr segmentTrailer
		if bytes.HasPrefix(line, []byte(`{"end":`)) {
			if err := dec(line, &tr); err != nil {
				return nil, bad("trailer: %v", err)
			}
			if tr.End != h || tr.Events != len(seg.keys) {
				return nil, bad("trailer says %d events ending at %s, the chain has %d ending at %s", tr.Events, tr.End, len(seg.keys), h)
			}
			if sc.Scan() {
				return nil, bad("data after the trailer")
			}
			seg.end = h
			return seg, nil
		}
		var ev struct {
			Key   string          `json:"key"`
			Hash  string          `json:"hash"`
			Event json.RawMessage `json:"event"`
		}
		if err := dec(line, &ev); err != nil {
			return nil, bad("line %d: %v", len(seg.keys)+2, err)
		}
		h = chainHash(h, ev.Key, ev.Event)
		if ev.Hash != h {
			return nil, bad("event %s: hash %s, the chain gives %s", ev.Key, ev.Hash, h)
		}
		seg.keys = append(seg.keys, ev.Key)
		seg.sizes = append(seg.sizes, int64(len(ev.Event)))
	}
	if err := sc.Err(); err != nil {
		return nil, bad("%v", err)
	}
	return nil, bad("no trailer (truncated)")
}

// VerifyExport checks the segments in dir: numbered 1..n without gaps, each continuing the
// chain where the previous ended (the first from the zero hash), and the last ending at
// anchor (from the broker: `sealctl kbs audit export-anchor`... or Log.Anchor). It returns
// the number of events the export holds.
func VerifyExport(dir string, anchor Anchor) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrExport, err)
	}
	var names []string
	for _, e := range entries {
		if segmentRE.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	prev, events := zeroHash, 0
	for i, n := range names {
		seg, err := readSegment(filepath.Join(dir, n))
		if err != nil {
			if !errors.Is(err, ErrExport) {
				err = fmt.Errorf("%w: %v", ErrExport, err)
			}
			return events, err
		}
		if want := uint64(i + 1); seg.header.Segment != want || n != segmentName(want, seg.header.Hour) {
			return events, fmt.Errorf("%w: segment %s: expected segment %d here (missing or renamed segment)", ErrExport, n, want)
		}
		if seg.header.Prev != prev {
			return events, fmt.Errorf("%w: segment %s continues from %s, the previous segment ended at %s", ErrExport, n, seg.header.Prev, prev)
		}
		prev = seg.end
		events += len(seg.keys)
	}
	if uint64(len(names)) != anchor.Seq || prev != anchor.Hash || uint64(events) != anchor.Events {
		return events, fmt.Errorf("%w: export holds %d segments, %d events ending at %s; the broker's anchor says %d, %d, %s",
			ErrExport, len(names), events, prev, anchor.Seq, anchor.Events, anchor.Hash)
	}
	return events, nil
}

// RunRetention prunes with r now and then every interval until ctx is done; report (if not
// nil) gets each result.
func (l *Log) RunRetention(ctx context.Context, r Retention, interval time.Duration, report func(PruneResult, error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		res, err := l.Prune(ctx, r, time.Now())
		if report != nil && (err != nil || res.Events > 0) {
			report(res, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
