// Package golden compares test output with golden files under testdata/. Only tests import it.
package golden

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Check compares got with the golden file at path: if they differ it fails t with Errorf (the
// test goes on); if the file is missing, with Fatalf. With update (the test package's -update flag) it
// first writes got to path, making its directory.
func Check(t testing.TB, path string, got []byte, update bool) {
	t.Helper()
	if update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it, then read the diff):\n--- got ---\n%s--- want ---\n%s", path, got, want)
	}
}
