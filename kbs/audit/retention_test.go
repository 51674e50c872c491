package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/audit"
)

// fillHours appends perHour events in each of hours consecutive UTC hours from base.
func fillHours(t *testing.T, l *audit.Log, base time.Time, hours, perHour int) {
	t.Helper()
	ctx := context.Background()
	for h := range hours {
		for i := range perHour {
			e := audit.Event{Time: base.Add(time.Duration(h)*time.Hour + time.Duration(i)*time.Minute), Kind: audit.KindAttest,
				Workload: fmt.Sprintf("w-%02d-%02d", h, i), Result: audit.ResultOK, Reason: strings.Repeat("r", 100)}
			if err := l.Enqueue(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRetentionBoundsLog: Prune keeps the stored log under MaxBytes and MaxAge (at hour
// granularity), exports every dropped event to a segment file before deleting it, and the
// segments form one hash chain that ends at the anchor the store keeps.
func TestRetentionBoundsLog(t *testing.T) {
	ctx := context.Background()
	l := audit.New(openBolt(t))
	base := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	now := base.Add(10*time.Hour + 30*time.Minute)
	const hours, perHour = 10, 20
	fillHours(t, l, base, hours, perHour)
	u, err := l.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u.Events != hours*perHour || u.Bytes == 0 {
		t.Fatalf("usage before = %+v, want %d events", u, hours*perHour)
	}
	hourBytes := u.Bytes / hours
	export := filepath.Join(t.TempDir(), "export")

	// Size bound: 3.5 hours' worth keeps the 3 newest hours.
	maxBytes := hourBytes*3 + hourBytes/2
	res, err := l.Prune(ctx, audit.Retention{MaxBytes: maxBytes, ExportDir: export}, now)
	if err != nil {
		t.Fatal(err)
	}
	if u, _ = l.Usage(ctx); u.Bytes > maxBytes || u.Events != 3*perHour {
		t.Fatalf("after size prune: usage %+v, want <= %d bytes and %d events", u, maxBytes, 3*perHour)
	}
	if res.Events != 7*perHour || len(res.Segments) != 7 {
		t.Fatalf("size prune dropped %d events in %d segments, want %d in 7", res.Events, len(res.Segments), 7*perHour)
	}
	kept, err := l.List(ctx, time.Time{}, audit.MaxListLimit)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) != 3*perHour || kept[0].Workload != "w-07-00" {
		t.Fatalf("kept %d events, first %+v; want %d from hour 7", len(kept), kept[0], 3*perHour)
	}

	// Age bound: 2 h keeps the hours that end after now-2h (hour granularity: at most
	// MaxAge + 1 h of events).
	if _, err := l.Prune(ctx, audit.Retention{MaxAge: 2 * time.Hour, ExportDir: export}, now); err != nil {
		t.Fatal(err)
	}
	kept, _ = l.List(ctx, time.Time{}, audit.MaxListLimit)
	if len(kept) != 2*perHour || kept[0].Time.Before(now.Add(-3*time.Hour)) {
		t.Fatalf("after age prune: %d events, oldest %v; want %d, none before %v", len(kept), kept[0].Time, 2*perHour, now.Add(-3*time.Hour))
	}
	// Nothing more to drop: no new segment.
	if res, err := l.Prune(ctx, audit.Retention{MaxAge: 2 * time.Hour, MaxBytes: maxBytes, ExportDir: export}, now); err != nil || res.Events != 0 {
		t.Fatalf("idempotent prune = %+v, %v", res, err)
	}

	// The export holds every dropped event, chained, and ends at the store's anchor.
	anchor, err := l.Anchor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if anchor.Events != 8*perHour || anchor.Seq != 8 {
		t.Fatalf("anchor = %+v, want 8 segments, %d events", anchor, 8*perHour)
	}
	n, err := audit.VerifyExport(export, anchor)
	if err != nil || n != 8*perHour {
		t.Fatalf("VerifyExport = %d, %v; want %d events", n, err, 8*perHour)
	}

	// Tampering with, dropping or reordering the export, or a stale anchor, is detected.
	segs, _ := filepath.Glob(filepath.Join(export, "*.jsonl"))
	slices.Sort(segs)
	for _, tc := range []struct {
		name   string
		mutate func(t *testing.T, dir string)
		anchor audit.Anchor
	}{
		{"event edited", func(t *testing.T, dir string) {
			p := filepath.Join(dir, filepath.Base(segs[2]))
			b, _ := os.ReadFile(p)
			os.WriteFile(p, bytes.Replace(b, []byte("w-02-05"), []byte("w-02-06"), 1), 0o600)
		}, anchor},
		{"segment removed", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, filepath.Base(segs[3]))) }, anchor},
		{"last segment removed", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, filepath.Base(segs[7]))) }, anchor},
		{"line removed", func(t *testing.T, dir string) {
			p := filepath.Join(dir, filepath.Base(segs[0]))
			b, _ := os.ReadFile(p)
			lines := bytes.SplitAfter(b, []byte("\n"))
			os.WriteFile(p, bytes.Join(append(lines[:3:3], lines[4:]...), nil), 0o600)
		}, anchor},
		{"stale anchor", func(t *testing.T, dir string) {}, audit.Anchor{Seq: anchor.Seq, Events: anchor.Events, Hash: strings.Repeat("0", 64)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, s := range segs {
				b, _ := os.ReadFile(s)
				os.WriteFile(filepath.Join(dir, filepath.Base(s)), b, 0o600)
			}
			tc.mutate(t, dir)
			if _, err := audit.VerifyExport(dir, tc.anchor); !errors.Is(err, audit.ErrExport) {
				t.Fatalf("VerifyExport after %s = %v, want ErrExport", tc.name, err)
			}
		})
	}
}

// TestRetentionNeedsExportDir: dropping events without exporting them is refused.
func TestRetentionNeedsExportDir(t *testing.T) {
	l := audit.New(openBolt(t))
	if _, err := l.Prune(context.Background(), audit.Retention{MaxAge: time.Hour}, time.Now()); err == nil {
		t.Fatal("Prune without ExportDir succeeded")
	}
}
