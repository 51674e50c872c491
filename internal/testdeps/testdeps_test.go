package testdeps

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// childEnv selects the child mode of TestMissingBinary: the child asks for the binary named by
// it, as a suite would.
const childEnv = "SEALPOD_TESTDEPS_CHILD_BINARY"

func TestChildBinary(t *testing.T) {
	name := os.Getenv(childEnv)
	if name == "" {
		t.Skip("child process of TestMissingBinary only")
	}
	Binary(t, name, "Debian package demo-package")
	t.Log("dependency present")
}

// TestMissingBinary runs this test binary again as a child that needs a binary, with PATH
// holding only a directory that has it or not, and CI set or not: present passes, absent skips
// without CI and fails naming it with CI=true.
func TestMissingBinary(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	withTool := t.TempDir()
	if err := os.WriteFile(filepath.Join(withTool, "sealpod-fake-qemu"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	for _, tc := range []struct {
		name, path, ci string
		wantFail       bool
		want           []string
	}{
		{"present, CI", withTool, "true", false, []string{"--- PASS: TestChildBinary", "dependency present"}},
		{"present, no CI", withTool, "", false, []string{"--- PASS: TestChildBinary"}},
		{"absent, no CI", empty, "", false, []string{"--- SKIP: TestChildBinary", "missing test dependency: sealpod-fake-qemu not on PATH (Debian package demo-package)"}},
		{"absent, CI=false", empty, "false", false, []string{"--- SKIP: TestChildBinary"}},
		{"absent, CI=true", empty, "true", true, []string{"--- FAIL: TestChildBinary", "missing test dependency: sealpod-fake-qemu not on PATH (Debian package demo-package)", "CI=true"}},
		{"absent, CI=1", empty, "1", true, []string{"--- FAIL: TestChildBinary", "sealpod-fake-qemu"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(self, "-test.run", "^TestChildBinary$", "-test.v")
			cmd.Env = []string{"PATH=" + tc.path, "CI=" + tc.ci, childEnv + "=sealpod-fake-qemu", "HOME=" + t.TempDir()}
			out, err := cmd.CombinedOutput()
			if failed := err != nil; failed != tc.wantFail {
				t.Fatalf("child failed=%v (%v), want %v:\n%s", failed, err, tc.wantFail, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("child output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestGoTestFailsUnderCI is the acceptance check end to end: `go test` of a package whose test
// needs a binary that is not installed fails under CI=true and names it, and passes (skipping)
// without CI.
func TestGoTestFailsUnderCI(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs go test in a child")
	}
	goBin := Binary(t, "go", "the Go toolchain")
	for _, tc := range []struct {
		ci       string
		wantFail bool
		want     string
	}{
		{"", false, "--- SKIP: TestChildBinary"},
		{"true", true, "--- FAIL: TestChildBinary"},
	} {
		cmd := exec.Command(goBin, "test", "-count=1", "-v", "-run", "^TestChildBinary$", ".")
		// PATH keeps only the Go toolchain's directory: the binary the child needs is not there.
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(goBin), "CI="+tc.ci, childEnv+"=sealpod-not-installed-binary")
		out, err := cmd.CombinedOutput()
		if failed := err != nil; failed != tc.wantFail {
			t.Fatalf("CI=%q: go test failed=%v (%v), want %v:\n%s", tc.ci, failed, err, tc.wantFail, out)
		}
		for _, w := range []string{tc.want, "missing test dependency: sealpod-not-installed-binary not on PATH"} {
			if !strings.Contains(string(out), w) {
				t.Errorf("CI=%q: go test output lacks %q:\n%s", tc.ci, w, out)
			}
		}
	}
}

func TestStrict(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want bool
	}{{"", false}, {"true", true}, {"TRUE", true}, {"1", true}, {"false", false}, {"0", false}, {"yes", false}} {
		t.Setenv("CI", tc.v)
		if got := Strict(); got != tc.want {
			t.Errorf("CI=%q: Strict() = %v, want %v", tc.v, got, tc.want)
		}
	}
}
