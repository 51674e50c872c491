package golden

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recorder is a testing.TB that keeps the failures instead of failing the test.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, format)
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.errs = append(r.errs, format)
	panic(fatal{})
}

// fatal stops Check at a Fatalf, as FailNow would.
type fatal struct{}

func check(r *recorder, path string, got []byte, update bool) {
	defer func() {
		if v := recover(); v != nil && v != (fatal{}) {
			panic(v)
		}
	}()
	Check(r, path, got, update)
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	same := filepath.Join(dir, "same.golden")
	if err := os.WriteFile(same, []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		path    string
		got     string
		update  bool
		wantErr string
	}{
		{"equal", same, "a\n", false, ""},
		{"differs", same, "b\n", false, "differs"},
		{"missing", filepath.Join(dir, "none.golden"), "a\n", false, "-update writes it"},
		{"update writes", filepath.Join(dir, "sub", "new.golden"), "c\n", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{TB: t}
			check(r, tc.path, []byte(tc.got), tc.update)
			if tc.wantErr == "" && len(r.errs) != 0 || tc.wantErr != "" && (len(r.errs) != 1 || !strings.Contains(r.errs[0], tc.wantErr)) {
				t.Fatalf("failures %q, want one containing %q", r.errs, tc.wantErr)
			}
			if tc.update {
				if b, err := os.ReadFile(tc.path); err != nil || string(b) != tc.got {
					t.Fatalf("update wrote %q, %v", b, err)
				}
			}
		})
	}
}
