package installer

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

var update = flag.Bool("update", false, "rewrite golden files")

// configCases lists testdata/config/*.toml (inputs); goldens are <name>.golden.
func configCases(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "config", "*.toml"))
	if err != nil || len(files) < 8 {
		t.Fatalf("testdata configs: %v (%d files)", err, len(files))
	}
	return files
}

// runtimeTable decodes plugins.<cri>.containerd.runtimes.<name> from a config.
func runtimeTable(t *testing.T, cfg []byte, name string) map[string]any {
	t.Helper()
	p, err := parseConfig(cfg)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return p.runtimes[name]
}

func TestAddRuntimeGolden(t *testing.T) {
	for _, in := range configCases(t) {
		name := strings.TrimSuffix(filepath.Base(in), ".toml")
		t.Run(name, func(t *testing.T) {
			orig, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			out, err := AddRuntime(orig, RuntimeOptions{})
			if err != nil {
				t.Fatalf("AddRuntime: %v", err)
			}
			golden := strings.TrimSuffix(in, ".toml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("golden: %v (run with -update)", err)
			}
			if !bytes.Equal(out, want) {
				t.Fatalf("AddRuntime(%s) differs from %s:\n%s", in, golden, out)
			}
			// Everything before the block is the input, untouched.
			if !bytes.HasPrefix(out, orig) {
				t.Fatalf("output does not start with the original bytes")
			}
			// Idempotent.
			again, err := AddRuntime(out, RuntimeOptions{})
			if err != nil || !bytes.Equal(again, out) {
				t.Fatalf("second AddRuntime changed the config (err %v):\n%s", err, again)
			}
			// Reversible (a missing final newline is the only thing that may be added).
			back, err := RemoveRuntime(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back, orig) && !bytes.Equal(back, append(slices.Clip(orig), '\n')) {
				t.Fatalf("RemoveRuntime did not give the original back:\n%q\nwant\n%q", back, orig)
			}
			// The result means what we want.
			rt := runtimeTable(t, out, HandlerName)
			if rt["runtime_type"] != RuntimeType {
				t.Fatalf("runtime_type = %v", rt["runtime_type"])
			}
			if a, _ := rt["pod_annotations"].([]any); len(a) != 1 || a[0] != AnnotationPrefix {
				t.Fatalf("pod_annotations = %v", rt["pod_annotations"])
			}
			info, err := Inspect(out)
			if err != nil {
				t.Fatal(err)
			}
			if !info.Managed || !slices.Contains(info.Runtimes, info.DefaultRuntime) || !slices.Contains(info.Runtimes, HandlerName) {
				t.Fatalf("Inspect = %+v", info)
			}
			// Every original runtime survives with the same content.
			before, err := parseConfig(orig)
			if err != nil {
				t.Fatal(err)
			}
			for n, tab := range before.runtimes {
				a, _ := toml.Marshal(tab)
				b, _ := toml.Marshal(runtimeTable(t, out, n))
				if !bytes.Equal(a, b) {
					t.Fatalf("runtime %s changed:\n%s\nvs\n%s", n, a, b)
				}
			}
		})
	}
}

func TestAddRuntimeSpellsOutImplicitRunc(t *testing.T) {
	tests := []struct {
		file     string
		wantRunc bool // the block must add runc
		version  int
	}{
		{"containerd-1.6-default.toml", false, 2},
		{"containerd-2.0-default.toml", false, 3},
		{"custom-runc-implicit.toml", true, 2},
		{"custom-v3-minimal.toml", false, 3}, // runc.options is given, so runc is a table already
		{"custom-other-runtimes.toml", false, 2},
		{"empty.toml", true, 2},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			orig, err := os.ReadFile(filepath.Join("testdata", "config", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			out, err := AddRuntime(orig, RuntimeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			start, _, _, _ := findBlock(out)
			block := string(out[start:])
			if got := strings.Contains(block, "runtimes.runc]"); got != tc.wantRunc {
				t.Fatalf("block adds runc = %v, want %v:\n%s", got, tc.wantRunc, block)
			}
			info, err := Inspect(out)
			if err != nil || info.Version != tc.version {
				t.Fatalf("version %d, err %v; want %d", info.Version, err, tc.version)
			}
		})
	}
}

func TestAddRuntimeOptions(t *testing.T) {
	base := []byte("version = 2\n")
	out, err := AddRuntime(base, RuntimeOptions{
		RuntimePath:    "/opt/sealpod/bin/containerd-shim-sealpod-v2",
		ShimConfigPath: "/etc/sealpod/shim.toml",
		PodAnnotations: []string{"sealpod.io/*", "io.kubernetes.cri.sandbox-id"},
	})
	if err != nil {
		t.Fatal(err)
	}
	rt := runtimeTable(t, out, HandlerName)
	if rt["runtime_path"] != "/opt/sealpod/bin/containerd-shim-sealpod-v2" {
		t.Fatalf("runtime_path = %v", rt["runtime_path"])
	}
	if o, _ := rt["options"].(map[string]any); o["ConfigPath"] != "/etc/sealpod/shim.toml" {
		t.Fatalf("options = %v", rt["options"])
	}
	if a, _ := rt["pod_annotations"].([]any); len(a) != 2 {
		t.Fatalf("pod_annotations = %v", rt["pod_annotations"])
	}
	// New options replace the old block; removal still gives the original.
	out2, err := AddRuntime(out, RuntimeOptions{Handler: HandlerName})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out2, []byte("runtime_path")) || bytes.Count(out2, []byte(BeginMarker)) != 1 {
		t.Fatalf("old block not replaced:\n%s", out2)
	}
	back, err := RemoveRuntime(out2)
	if err != nil || !bytes.Equal(back, base) {
		t.Fatalf("RemoveRuntime = %q, %v", back, err)
	}
	// A second handler name is its own runtime, but the managed block is one: it moves.
	out3, err := AddRuntime(base, RuntimeOptions{Handler: "sealpod-test", ConfigVersion: 3})
	if err != nil {
		t.Fatal(err)
	}
	if runtimeTable(t, out3, "sealpod-test")["runtime_type"] != RuntimeType {
		t.Fatalf("custom handler missing:\n%s", out3)
	}
	// ConfigVersion only matters for an empty config.
	fresh, err := AddRuntime(nil, RuntimeOptions{ConfigVersion: 3})
	if err != nil {
		t.Fatal(err)
	}
	if info, err := Inspect(fresh); err != nil || info.Version != 3 {
		t.Fatalf("fresh v3 config: %+v %v\n%s", info, err, fresh)
	}
}

func TestAddRuntimeErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  string
		opts RuntimeOptions
		want error
	}{
		{"version 1", "[plugins.cri]\n  sandbox_image = \"x\"\n", RuntimeOptions{}, ErrUnsupportedVersion},
		{"version 4", "version = 4\n", RuntimeOptions{}, ErrUnsupportedVersion},
		{"version string", "version = \"2\"\n", RuntimeOptions{}, ErrUnsupportedVersion},
		{"not toml", "version = 2\n[plugins\n", RuntimeOptions{}, ErrInvalidConfig},
		{"duplicate key", "version = 2\nversion = 2\n", RuntimeOptions{}, ErrInvalidConfig},
		{"hand-written sealpod", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.sealpod]\n  runtime_type = \"x\"\n", RuntimeOptions{}, ErrUnmanagedRuntime},
		{"missing default runtime", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"crun\"\n", RuntimeOptions{}, ErrInvalidConfig},
		{"runtimes not a table", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  runtimes = 3\n", RuntimeOptions{}, ErrInvalidConfig},
		{"inline runtimes table", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  runtimes = { runc = { runtime_type = \"io.containerd.runc.v2\" } }\n", RuntimeOptions{}, ErrUnsupportedLayout},
		{"begin without end", "version = 2\n" + BeginMarker + "\n", RuntimeOptions{}, ErrMalformedBlock},
		{"end without begin", "version = 2\n" + EndMarker + "\n", RuntimeOptions{}, ErrMalformedBlock},
		{"two blocks", "version = 2\n" + BeginMarker + "\n" + EndMarker + "\n" + BeginMarker + "\n" + EndMarker + "\n", RuntimeOptions{}, ErrMalformedBlock},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := AddRuntime([]byte(tc.cfg), tc.opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("AddRuntime = %v (out %q), want %v", err, out, tc.want)
			}
		})
	}
	for _, bad := range []RuntimeOptions{
		{Handler: "Sealpod"},
		{Handler: "seal pod"},
		{Handler: strings.Repeat("a", 64)},
		{RuntimeType: `io"x`},
		{PodAnnotations: []string{"a\\b"}},
		{ShimConfigPath: "/etc/\n"},
		{ConfigVersion: 1},
	} {
		if _, err := AddRuntime([]byte("version = 2\n"), bad); err == nil {
			t.Errorf("AddRuntime accepted options %+v", bad)
		}
	}
}

func FuzzAddRuntime(f *testing.F) {
	for _, in := range configCases(f) {
		b, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("version = 2\n" + BeginMarker + "\nx = 1\n" + EndMarker + "\n"))
	f.Add([]byte("version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\nruntimes = {}\n"))
	f.Fuzz(func(t *testing.T, cfg []byte) {
		out, err := AddRuntime(cfg, RuntimeOptions{})
		if err != nil {
			return
		}
		p, err := parseConfig(out)
		if err != nil {
			t.Fatalf("AddRuntime gave an unparsable config: %v\n%q", err, out)
		}
		if p.runtimes[HandlerName]["runtime_type"] != RuntimeType {
			t.Fatalf("runtime missing from %q", out)
		}
		again, err := AddRuntime(out, RuntimeOptions{})
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %v\n%q\n%q", err, out, again)
		}
		back, err := RemoveRuntime(out)
		if err != nil {
			t.Fatal(err)
		}
		stripped, _ := RemoveRuntime(cfg)
		if !bytes.Equal(back, stripped) && !bytes.Equal(back, append(slices.Clip(stripped), '\n')) {
			t.Fatalf("RemoveRuntime(AddRuntime(c)) = %q, want %q", back, stripped)
		}
	})
}
