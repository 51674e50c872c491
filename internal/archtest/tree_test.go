package archtest

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// maxLines bounds every hand-written production Go file (generated *.pb.go files exempt): past
// it a reader can no longer hold the file (docs/design.md).
const maxLines = 700

func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// longFiles lists the production Go files under root longer than max lines.
func longFiles(t *testing.T, root string, max int) []string {
	t.Helper()
	var long []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); p != root && (strings.HasPrefix(name, ".") || name == "out" || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		name := d.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") || strings.HasSuffix(name, ".pb.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if n := bytes.Count(b, []byte("\n")); n > max {
			rel, _ := filepath.Rel(root, p)
			long = append(long, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return long
}

func TestProductionFilesShort(t *testing.T) {
	for _, f := range longFiles(t, repoRoot(t), maxLines) {
		t.Errorf("%s: over %d lines: split it by concern", f, maxLines)
	}
}

// The check can fail: a file of maxLines+1 lines in a scratch tree is reported, one of
// maxLines is not, and test and generated files are exempt.
func TestLongFilesFindsOne(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, lines int) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), bytes.Repeat([]byte("//\n"), lines), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a/long.go", maxLines+1)
	write("a/ok.go", maxLines)
	write("a/long_test.go", 2*maxLines)
	write("a/api.pb.go", 2*maxLines)
	got := longFiles(t, dir, maxLines)
	if len(got) != 1 || got[0] != filepath.Join("a", "long.go") {
		t.Fatalf("longFiles = %v, want [a/long.go]", got)
	}
}

// go.mod and go.sum are what `go mod tidy` makes of the imports (direct dependencies not marked
// indirect, nothing unused).
func TestGoModTidy(t *testing.T) {
	cmd := exec.Command("go", "mod", "tidy", "-diff")
	cmd.Dir = repoRoot(t)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		var diff []string
		sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
		for sc.Scan() && len(diff) < 40 {
			diff = append(diff, sc.Text())
		}
		t.Fatalf("go mod tidy would change go.mod/go.sum (%v): run go mod tidy\n%s", err, strings.Join(diff, "\n"))
	}
}
