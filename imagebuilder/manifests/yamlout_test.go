package manifests

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"unicode/utf8"

	"sigs.k8s.io/yaml"
)

// checkRoundTrip asserts that Kubernetes' YAML parser reads writeYAML's output back as v.
func checkRoundTrip(t *testing.T, v map[string]any) {
	t.Helper()
	var b bytes.Buffer
	if err := writeYAML(&b, v); err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(b.Bytes())
	if err != nil {
		t.Fatalf("parse %q: %v", b.String(), err)
	}
	var got any
	if err := json.Unmarshal(js, &got); err != nil {
		t.Fatal(err)
	}
	wantJS, _ := json.Marshal(v)
	var want any
	_ = json.Unmarshal(wantJS, &want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip differs:\nyaml:\n%s\ngot  %s\nwant %s", b.String(), js, wantJS)
	}
}

func TestYAMLRoundTrip(t *testing.T) {
	strs := []string{"", " ", "a", "yes", "No", "ON", "y", "null", "~", "true", "1", "1.5", "0x1F", "1e3", "-", "-a",
		"a: b", "a:b", "http://x:80/y", "a #c", "a#b", "#x", "trailing ", " leading", "multi\nline", "tab\there",
		"quote\"s", "back\\slash", "unicode é ✓", "<html>&", "*alias", "&anchor", "!tag", "%dir", "@at", "`tick",
		"{x}", "[x]", "a,b", "key=value", "--flag=1", "/usr/bin/x", "100m", "0400", "08", "1:20", "2001-12-14", ".inf", ".nan", "=", "<<"}
	for _, s := range strs {
		checkRoundTrip(t, map[string]any{s + "k": s, "list": []any{s, map[string]any{s + "x": s}}})
	}
	checkRoundTrip(t, map[string]any{
		"n": json.Number("9007199254740993"), "f": 0.5, "i": int64(-3), "b": false, "z": nil,
		"em": map[string]any{}, "el": []any{}, "nested": []any{[]any{"a", []any{}}, map[string]any{}, map[string]any{"a": map[string]any{"b": []any{1.0}}}},
	})
}

func FuzzYAMLString(f *testing.F) {
	for _, s := range []string{"a", "yes", "a: b", "1", "x\ny", " #", "é"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, k, v string) {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return // JSON (and so Kubernetes) objects hold only valid UTF-8
		}
		checkRoundTrip(t, map[string]any{k: v, "l": []any{v}})
	})
}
