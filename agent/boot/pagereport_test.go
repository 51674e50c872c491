package boot

import (
	"os"
	"path/filepath"
	"testing"
)

func TestTunePageReporting(t *testing.T) {
	for _, tc := range []struct{ name, before, after string }{
		{"pageblock order as 6.1 registers it", "10\n", "3"},
		{"already lower", "0\n", "0\n"},
		{"equal", "3\n", "3\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "page_reporting_order")
			if err := os.WriteFile(p, []byte(tc.before), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := tunePageReporting(p); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(p); string(got) != tc.after {
				t.Fatalf("order file %q, want %q", got, tc.after)
			}
		})
	}
	if err := tunePageReporting(filepath.Join(t.TempDir(), "absent")); err != nil {
		t.Fatalf("a guest without free page reporting: %v", err)
	}
}
