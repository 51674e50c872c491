package cli

import (
	"bytes"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	run := func(args ...string) string {
		t.Helper()
		root := NewRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("sealctl %s: %v", strings.Join(args, " "), err)
		}
		return out.String()
	}
	text := run("version")
	if !strings.HasPrefix(text, "sealctl ") || !strings.Contains(text, runtime.Version()) || !strings.HasSuffix(text, "\n") {
		t.Errorf("sealctl version = %q", text)
	}
	if flag := run("--version"); flag != text {
		t.Errorf("sealctl --version = %q, want %q (the same line)", flag, text)
	}
	var v VersionInfo
	if err := json.Unmarshal([]byte(run("version", "-o", "json")), &v); err != nil || v.Version == "" || v.GoVersion != runtime.Version() || v.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("sealctl version -o json: %+v %v", v, err)
	}
	if y := run("version", "-o", "yaml"); !strings.Contains(y, "goVersion: "+runtime.Version()) {
		t.Errorf("sealctl version -o yaml = %q", y)
	}
	old := Version
	Version = "v9.9.9"
	defer func() { Version = old }()
	if got := run("version"); !strings.HasPrefix(got, "sealctl v9.9.9") {
		t.Errorf("with -X Version=v9.9.9: %q", got)
	}
}
