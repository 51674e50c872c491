// Package repopath locates the repository root and the shared test data beside it
// (../shared/testdata), for tests that run from any package directory.
package repopath

import (
	"os"
	"path/filepath"
	"testing"
)

// Root returns the directory holding go.mod, walking up from the working directory.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("repopath: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Shared returns ../shared/testdata/<elem...> beside the repository, failing the test when
// it is missing (CI checks the shared folder out beside the repository).
func Shared(t testing.TB, elem ...string) string {
	t.Helper()
	p := filepath.Join(append([]string{filepath.Dir(Root(t)), "shared", "testdata"}, elem...)...)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("shared test data: %v (the shared/ folder must sit beside the repository)", err)
	}
	return p
}
