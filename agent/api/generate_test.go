package api

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/internal/testdeps"
)

// TestGeneratedCodeIsCurrent regenerates agent.pb.go and agent_ttrpc.pb.go from agent.proto
// and compares them with the committed files (skipped without the tools from
// hack/install-protoc-tools.sh).
func TestGeneratedCodeIsCurrent(t *testing.T) {
	gopath, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		t.Skipf("go env GOPATH: %v", err)
	}
	path := filepath.Join(strings.TrimSpace(string(gopath)), "bin") + string(os.PathListSeparator) + os.Getenv("PATH")
	for _, tool := range []string{"protoc", "protoc-gen-go", "protoc-gen-go-ttrpc"} {
		found := false
		for _, dir := range filepath.SplitList(path) {
			if _, err := os.Stat(filepath.Join(dir, tool)); err == nil {
				found = true
				break
			}
		}
		if !found {
			testdeps.Missing(t, "%s not installed (hack/install-protoc-tools.sh)", tool)
		}
	}
	out := t.TempDir()
	cmd := exec.Command("protoc", "--proto_path=.", "--go_out="+out, "--go_opt=paths=source_relative",
		"--go-ttrpc_out="+out, "--go-ttrpc_opt=paths=source_relative", "agent.proto")
	cmd.Env = append(os.Environ(), "PATH="+path)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, b)
	}
	for _, f := range []string{"agent.pb.go", "agent_ttrpc.pb.go"} {
		want, _ := os.ReadFile(filepath.Join(out, f))
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run `make generate`", f)
		}
	}
}
