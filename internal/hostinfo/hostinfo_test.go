package hostinfo

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLoadAvg(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, content, want string }{
		{"linux", "0.80 1.10 1.20 2/345 6789\n", "0.80 1.10 1.20"},
		{"short", "0.80 1.10\n", "unknown"},
		{"missing", "", "unknown"},
	} {
		path := filepath.Join(dir, tc.name)
		if tc.content != "" {
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got := loadAvg(path); got != tc.want {
			t.Errorf("%s: loadAvg = %q, want %q", tc.name, got, tc.want)
		}
	}
}
