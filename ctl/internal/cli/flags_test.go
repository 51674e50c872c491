package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
)

// twoPods is an input of two objects, so that -o json prints a List (kubectl's shape).
const twoPods = `apiVersion: v1
kind: Pod
metadata: {name: a}
spec: {containers: [{name: c, image: ` + pinnedImage + `, env: [{name: X, value: CANARY-OUT-7c1d}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b}
spec: {containers: [{name: c, image: ` + pinnedImage + `}]}
`

// sealArgs are image create arguments that seal offline into an OCI layout under dir.
func sealArgs(t *testing.T, dir string, extra ...string) []string {
	t.Helper()
	return append(append(baseArgs(t, dir), "-f", "-", "--image", "r.local/app",
		"--oci-layout", filepath.Join(dir, "layout"), "--keys", filepath.Join(dir, "keys.json")), extra...)
}

// decodeYAMLDocs decodes every document of a YAML stream.
func decodeYAMLDocs(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	dec := k8syaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var out []map[string]any
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatalf("decode %q: %v", b, err)
		}
		if m != nil {
			out = append(out, m)
		}
	}
}

// TestImageCreateOutput: -o is the format (yaml by default, json as kubectl prints it: one
// object, or a v1 List of several); the manifests go to stdout unless --output-file; all
// logging goes to stderr, so stdout holds nothing but the manifests.
func TestImageCreateOutput(t *testing.T) {
	t.Chdir(t.TempDir()) // an -o value taken for a file name lands here, not in the package
	onePod := "apiVersion: v1\nkind: Pod\nmetadata: {name: solo}\nspec: {containers: [{name: c, image: " + pinnedImage + "}]}\n"
	for _, tc := range []struct {
		name   string
		input  string
		extra  []string
		toFile bool   // --output-file FILE
		format string // what the output must be
		kinds  []string
	}{
		{"default yaml on stdout", twoPods, nil, false, "yaml", []string{"Pod", "Pod"}},
		{"-o yaml", twoPods, []string{"-o", "yaml"}, false, "yaml", []string{"Pod", "Pod"}},
		{"--output yaml", twoPods, []string{"--output", "yaml"}, false, "yaml", []string{"Pod", "Pod"}},
		{"-o json: a List", twoPods, []string{"-o", "json"}, false, "json", []string{"List"}},
		{"-o json: one object", onePod, []string{"-o", "json"}, false, "json", []string{"Pod"}},
		{"--output-file", twoPods, []string{"--output-file", "FILE"}, true, "yaml", []string{"Pod", "Pod"}},
		{"-o json --output-file", twoPods, []string{"-o", "json", "--output-file", "FILE"}, true, "json", []string{"List"}},
		{"--output-file -", twoPods, []string{"--output-file", "-"}, false, "yaml", []string{"Pod", "Pod"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "sealed.out")
			extra := slices.Clone(tc.extra)
			for i, a := range extra {
				if a == "FILE" {
					extra[i] = file
				}
			}
			stdout, stderr, err := runSealctl(t, tc.input, sealArgs(t, dir, extra...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			if !strings.Contains(stderr, "sealed ") || !strings.Contains(stderr, "WARNING: sealing for the simulated TEE") {
				t.Errorf("the log is not on stderr:\n%s", stderr)
			}
			got := []byte(stdout)
			if tc.toFile {
				if stdout != "" {
					t.Errorf("stdout %q, want nothing with --output-file", stdout)
				}
				if got, err = os.ReadFile(file); err != nil {
					t.Fatal(err)
				}
				if st, _ := os.Stat(file); st.Mode().Perm() != 0o644 {
					t.Errorf("mode %v, want 0644", st.Mode().Perm())
				}
			} else if fileExists(file) {
				t.Errorf("%s written without --output-file", file)
			}
			if bytes.Contains(got, []byte("CANARY-OUT-7c1d")) {
				t.Fatal("sealed value in the output")
			}
			var objs []map[string]any
			if tc.format == "json" {
				var one map[string]any
				if err := json.Unmarshal(got, &one); err != nil {
					t.Fatalf("-o json output is not one JSON object: %v\n%s", err, got)
				}
				objs = []map[string]any{one}
			} else {
				if json.Valid(got) {
					t.Fatalf("YAML wanted, got JSON:\n%s", got)
				}
				objs = decodeYAMLDocs(t, got)
			}
			var kinds []string
			var pods []map[string]any
			for _, o := range objs {
				kinds = append(kinds, o["kind"].(string))
				if o["kind"] == "List" {
					if o["apiVersion"] != "v1" {
						t.Errorf("List apiVersion %v", o["apiVersion"])
					}
					for _, it := range o["items"].([]any) {
						pods = append(pods, it.(map[string]any))
					}
				} else {
					pods = append(pods, o)
				}
			}
			if !slices.Equal(kinds, tc.kinds) {
				t.Fatalf("kinds %v, want %v\n%s", kinds, tc.kinds, got)
			}
			if want := strings.Count(tc.input, "kind: Pod"); len(pods) != want {
				t.Fatalf("%d objects, want %d", len(pods), want)
			}
			for _, p := range pods {
				ann, _ := p["metadata"].(map[string]any)["annotations"].(map[string]any)
				if img, _ := ann["sealpod.io/image"].(string); !strings.HasPrefix(img, "r.local/app@sha256:") {
					t.Errorf("object %v: sealpod.io/image %q", p["metadata"], img)
				}
			}
		})
	}
}

// TestSealedJSON: -o json is what kubectl reads from the YAML output, value for value (quoted
// scalars stay strings, numbers keep their digits, no HTML escaping), indented.
func TestSealedJSON(t *testing.T) {
	in := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  annotations:\n    a: \"true\"\n    b: \"0755\"\n    c: <a&b>\ndata: {num: \"1e3\"}\n" +
		"---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: {runAsUser: 9007199254740993}\n  containers: []\n"
	want := `{
  "apiVersion": "v1",
  "items": [
    {
      "apiVersion": "v1",
      "data": {
        "num": "1e3"
      },
      "kind": "ConfigMap",
      "metadata": {
        "annotations": {
          "a": "true",
          "b": "0755",
          "c": "<a&b>"
        },
        "name": "x"
      }
    },
    {
      "apiVersion": "v1",
      "kind": "Pod",
      "metadata": {
        "name": "p"
      },
      "spec": {
        "containers": [],
        "securityContext": {
          "runAsUser": 9007199254740993
        }
      }
    }
  ],
  "kind": "List",
  "metadata": {}
}
`
	got, err := formatSealed([]byte(in), formatJSON)
	if err != nil || string(got) != want {
		t.Fatalf("formatSealed json: %v\n%s\nwant\n%s", err, got, want)
	}
	if got, err := formatSealed([]byte(in), formatYAML); err != nil || string(got) != in {
		t.Fatalf("formatSealed yaml changed the bytes: %v\n%s", err, got)
	}
	if _, err := formatSealed([]byte("a: [\n"), formatJSON); err == nil {
		t.Fatal("broken YAML converted")
	}
}

// TestImageCreateOutputFileAtomic: --output-file is replaced atomically (temp file, rename),
// never left half-written or changed by a failed run; a --output-file that cannot be written is
// refused before anything is built, pushed, registered or written.
func TestImageCreateOutputFileAtomic(t *testing.T) {
	hostNet := "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  containers: [{name: c, image: " + pinnedImage + "}]\n"
	for _, tc := range []struct {
		name    string
		input   string
		file    func(dir string) string
		wantErr string // "" for success
	}{
		{"success replaces the old file", twoPods, func(d string) string { return filepath.Join(d, "out", "sealed.yaml") }, ""},
		{"seal error keeps the old file", hostNet, func(d string) string { return filepath.Join(d, "out", "sealed.yaml") }, "spec.hostNetwork"},
		{"missing directory", twoPods, func(d string) string { return filepath.Join(d, "nodir", "sealed.yaml") }, "--output-file"},
		{"a directory", twoPods, func(d string) string { return filepath.Join(d, "out") }, "--output-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			outDir := filepath.Join(dir, "out")
			if err := os.Mkdir(outDir, 0o755); err != nil {
				t.Fatal(err)
			}
			old := []byte("old content\n")
			if err := os.WriteFile(filepath.Join(outDir, "sealed.yaml"), old, 0o644); err != nil {
				t.Fatal(err)
			}
			file := tc.file(dir)
			stdout, stderr, err := runSealctl(t, tc.input, sealArgs(t, dir, "--output-file", file)...)
			if stdout != "" {
				t.Errorf("stdout %q", stdout)
			}
			entries, _ := os.ReadDir(outDir)
			if len(entries) != 1 || entries[0].Name() != "sealed.yaml" {
				t.Errorf("%s holds %v, want only sealed.yaml (no temporary files)", outDir, entries)
			}
			now, _ := os.ReadFile(filepath.Join(outDir, "sealed.yaml"))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("%v\n%s", err, stderr)
				}
				if bytes.Equal(now, old) || len(decodeYAMLDocs(t, now)) != 2 {
					t.Fatalf("output file not replaced by the sealed manifests:\n%s", now)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if !bytes.Equal(now, old) {
				t.Errorf("old output file changed by a failed run: %q", now)
			}
			for _, p := range []string{filepath.Join(dir, "layout"), filepath.Join(dir, "keys.json"), filepath.Join(dir, "nodir")} {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					t.Errorf("%s written despite the error", p)
				}
			}
		})
	}
}

// TestOutputFlagIsAFormat: every -o takes a format; any other value (an old-style file or
// directory) is refused when the flags are parsed, before anything runs, naming the flag, the
// value, the formats, and where files go now.
func TestOutputFlagIsAFormat(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir) // relative -o values taken for paths would land here
	keys := filepath.Join(dir, "keys.json")
	os.WriteFile(keys, []byte(`{"version":1,"workloads":[]}`), 0o600)
	noConfig := filepath.Join(dir, "nonexistent", "kbs.json")
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{append(sealArgs(t, dir), "-o", "app.sealed.yaml"), []string{`"app.sealed.yaml"`, "yaml or json", "--output-file"}},
		{append(sealArgs(t, dir), "--output", "table"), []string{`"table"`, "yaml or json"}},
		{[]string{"verify", "--kbs", "https://127.0.0.1:1", "--kbs-ca-sha256", strings.Repeat("a", 64), "-o", "out/verify"}, []string{`"out/verify"`, "table, json or yaml", "--dir"}},
		{[]string{"image", "inspect", "x", "-o", "xml"}, []string{`"xml"`, "table, json or yaml"}},
		{[]string{"version", "-o", "xml"}, []string{`"xml"`, "table, json or yaml"}},
		{[]string{"guest", "measure", "--bundle", dir, "-o", "table"}, []string{`"table"`, "json, yaml or text"}},
		{[]string{"kbs", "--config", noConfig, "workload", "list", "-o", "xml"}, []string{`"xml"`, "table, json or yaml"}},
		{[]string{"kbs", "--config", noConfig, "-o", "xml", "status"}, []string{`"xml"`, "table, json or yaml"}},
		{[]string{"kbs", "--config", noConfig, "register", "-f", keys, "-o", "xml"}, []string{`"xml"`}},
	} {
		stdout, _, err := runSealctl(t, "", tc.args...)
		if err == nil {
			t.Errorf("%v: accepted", tc.args)
			continue
		}
		for _, w := range append([]string{"-o, --output"}, tc.want...) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: err = %v, want %q in it", tc.args, err, w)
			}
		}
		if strings.Contains(err.Error(), "nonexistent") || stdout != "" {
			t.Errorf("%v: the command ran (err %v, stdout %q)", tc.args, err, stdout)
		}
	}
	for _, p := range []string{"layout", "app.sealed.yaml", "out", "xml"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s written", p)
		}
	}
}

// TestMissingFlagsAllAtOnce: a command run without several required flags names every one of
// them in one error.
func TestMissingFlagsAllAtOnce(t *testing.T) {
	dir := t.TempDir()
	wl := filepath.Join(dir, "wl.yaml")
	os.WriteFile(wl, []byte("id: web\n"), 0o600)
	ca := writeCA(t, dir)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"image", "create"}, []string{"-f (or -k)", "--guest", "--tee", "--kbs (or --kbs-dir/--kbs-config)", "--kbs-ca (or --kbs-dir/--kbs-config)",
			"--push (or --oci-layout/--tarball)", "--keys (or --kbs-dir/--kbs-config)"}},
		{[]string{"image", "create", "-f", "x.yaml", "--guest", "g", "--oci-layout", "l"}, []string{"--tee", "--kbs (or --kbs-dir/--kbs-config)",
			"--kbs-ca (or --kbs-dir/--kbs-config)", "--image (or --push)", "--keys (or --kbs-dir/--kbs-config)"}},
		{[]string{"image", "create", "-k", "d", "--tee", "sim", "--kbs", "https://k", "--kbs-ca", ca, "--push", "r/a"}, []string{"--guest", "--keys (or --kbs-dir/--kbs-config)"}},
		{[]string{"verify"}, []string{"--kbs", "--kbs-ca (or --kbs-ca-sha256)"}},
		{[]string{"verify", "--kbs-ca-sha256", strings.Repeat("a", 64)}, []string{"--kbs"}},
		{[]string{"kbs", "register"}, []string{"-f"}},
		{[]string{"kbs", "workload", "add"}, []string{"--id (or -f)", "--tee (or -f)", "--measurement (or -f)", "--envelope-digest (or -f)"}},
		{[]string{"kbs", "workload", "add", "-f", wl, "--tee", "snp"}, []string{"--measurement (or -f)", "--envelope-digest (or -f)"}},
	} {
		_, _, err := runSealctl(t, "", tc.args...)
		var mf *MissingFlagsError
		if !errors.As(err, &mf) {
			t.Errorf("%v: err = %v, want a MissingFlagsError", tc.args, err)
			continue
		}
		if !slices.Equal(mf.Flags, tc.want) {
			t.Errorf("%v: missing %q, want %q", tc.args, mf.Flags, tc.want)
		}
		if want := strings.Join(tc.want, ", "); !strings.Contains(err.Error(), want) {
			t.Errorf("%v: err %q does not list %q", tc.args, err, want)
		}
	}
}
