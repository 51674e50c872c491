package verify

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/manifests"
)

const sealedDeployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, annotations: {sealpod.io/workload: decoy}}
spec:
  template:
    metadata:
      annotations:
        sealpod.io/image: r.example/app@sha256:aa
        sealpod.io/workload: shop.deployment.web
        sealpod.io/kbs: https://kbs.example:8443
    spec: {runtimeClassName: sealpod-sim, containers: [{name: server, image: r.example/app@sha256:aa}]}
`

func TestParseExpected(t *testing.T) {
	tests := []struct {
		name string
		data string
		want []Expected
		err  string
	}{
		{
			name: "deployment template, top-level annotation too",
			data: sealedDeployment,
			want: []Expected{
				{Source: "s", Object: "Deployment shop/web", Path: "metadata", Workload: "decoy"},
				{Source: "s", Object: "Deployment shop/web", Path: "spec.template.metadata", Workload: "shop.deployment.web",
					Image: "r.example/app@sha256:aa", KBS: "https://kbs.example:8443"},
			},
		},
		{
			name: "pod, cronjob and a list, other objects skipped",
			data: `apiVersion: v1
kind: Pod
metadata: {name: p, annotations: {sealpod.io/workload: default.pod.p, sealpod.io/image: i@sha256:1, sealpod.io/kbs: https://k}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c, annotations: {other: x}}
---
{"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj"}, "spec": {"jobTemplate": {"spec": {"template": {"metadata": {"annotations": {"sealpod.io/workload": "default.cronjob.cj"}}}}}}}
---
apiVersion: v1
kind: List
items:
- {kind: Pod, metadata: {name: q, annotations: {sealpod.io/workload: default.pod.q}}}
`,
			want: []Expected{
				{Source: "s", Object: "Pod p", Path: "metadata", Workload: "default.pod.p", Image: "i@sha256:1", KBS: "https://k"},
				{Source: "s", Object: "CronJob cj", Path: "spec.jobTemplate.spec.template.metadata", Workload: "default.cronjob.cj"},
				{Source: "s", Object: "Pod q", Path: "metadata", Workload: "default.pod.q"},
			},
		},
		{name: "empty", data: "---\n", want: nil},
		{name: "annotation not a string", data: "kind: Pod\nmetadata: {name: p, annotations: {sealpod.io/workload: [1]}}\n", err: "annotations[sealpod.io/workload]: not a string"},
		{name: "not an object", data: "- 1\n- 2\n", err: "document 1: not an object"},
		{name: "list item not an object", data: "kind: List\nitems: [3]\n", err: "items[0]: not an object"},
		{name: "bad yaml", data: "kind: Pod\nmetadata: {name: [\n", err: "document 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseExpected([]manifests.Source{{Name: "s", Data: []byte(tc.data)}})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseExpected(f *testing.F) {
	f.Add([]byte(sealedDeployment))
	f.Add([]byte("kind: List\nitems: [{kind: Pod, metadata: {annotations: {sealpod.io/workload: x}}}]\n"))
	f.Add([]byte(`{"kind":"Pod","metadata":{"annotations":{"sealpod.io/workload":1}}}`))
	f.Add([]byte("---\n---\n- [[[]]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseExpected([]manifests.Source{{Name: "fuzz", Data: data}})
		if err != nil && got != nil {
			t.Fatalf("result with an error: %v", err)
		}
	})
}

// WriteFiles writes the reports atomically and mesh-root.pem only for a passing report; a
// failing run removes a root left by an earlier one.
func TestWriteFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "verify")
	pass := &Report{Version: 1, KBS: "https://k", OK: true, MeshRoot: &MeshRootInfo{SHA256: "ab"}, MeshRootPEM: []byte("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n")}
	pass.ok(CheckTLS, "https://k", "fine")
	if err := WriteFiles(dir, pass); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, FileMeshRoot)
	if b, err := os.ReadFile(root); err != nil || string(b) != string(pass.MeshRootPEM) {
		t.Fatalf("mesh root: %v %q", err, b)
	}
	txt, _ := os.ReadFile(filepath.Join(dir, FileReportText))
	if !strings.Contains(string(txt), "PASSED") || !strings.Contains(string(txt), "written to "+root) {
		t.Errorf("report.txt:\n%s", txt)
	}
	fail := &Report{Version: 1, KBS: "https://k", MeshRootPEM: pass.MeshRootPEM}
	fail.fail(CheckHistoryChain, "", "", "", "history entry 1: hash mismatch")
	fail.OK = fail.Failures == 0
	if err := WriteFiles(dir, fail); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("mesh-root.pem after a failed run: %v", err)
	}
	txt, _ = os.ReadFile(filepath.Join(dir, FileReportText))
	if !strings.Contains(string(txt), "FAILED (1 failed") || !strings.Contains(string(txt), "FAIL  history.chain") {
		t.Errorf("report.txt:\n%s", txt)
	}
	if err := fail.Err(); !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), CheckHistoryChain) {
		t.Errorf("Err() = %v", err)
	}
	if err := pass.Err(); err != nil {
		t.Errorf("passing Err() = %v", err)
	}
}
