package main

// A fake kubectl: the test binary re-executed with PODBENCH_FAKE_KUBECTL set to a state
// directory. It answers the calls podbench makes (create, delete, get --raw list and watch, and
// the old `get pods --watch`), and ends every watch stream after two events, as an API server or
// a proxy may: the EOF that made `hack/bench podstart` fail once (issue #18).

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const fakeKubectlEnv = "PODBENCH_FAKE_KUBECTL"

func TestMain(m *testing.M) {
	if dir := os.Getenv(fakeKubectlEnv); dir != "" {
		os.Exit(fakeKubectl(dir, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakePodStates are the pod's states after create, one per resourceVersion from 11 on.
func fakePodStates(name string) []string {
	meta := func(rv int) string {
		return fmt.Sprintf(`"metadata":{"name":%q,"namespace":"default","uid":"uid-1","resourceVersion":"%d"}`, name, rv)
	}
	return []string{
		`{` + meta(11) + `,"spec":{},"status":{"phase":"Pending"}}`,
		`{` + meta(12) + `,"spec":{"nodeName":"n1"},"status":{"phase":"Pending"}}`,
		`{` + meta(13) + `,"spec":{"nodeName":"n1"},"status":{"phase":"Running","conditions":[{"type":"Ready","status":"False"}]}}`,
		`{` + meta(14) + `,"spec":{"nodeName":"n1"},"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}`,
	}
}

func fakeKubectl(dir string, args []string) int {
	if len(args) >= 2 && args[0] == "--kubeconfig" {
		args = args[2:]
	}
	created := filepath.Join(dir, "created")
	logCall := func(s string) {
		f, err := os.OpenFile(filepath.Join(dir, "calls"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(f, s)
			f.Close()
		}
	}
	waitCreated := func() {
		for i := 0; i < 500; i++ {
			if _, err := os.Stat(created); err == nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if len(args) == 0 {
		return 2
	}
	switch args[0] {
	case "create":
		if err := os.WriteFile(created, nil, 0o644); err != nil {
			return 1
		}
		logCall("create")
		if strings.Contains(strings.Join(args, " "), "jsonpath") {
			fmt.Print("uid-1")
		} else {
			fmt.Println("pod/bench created")
		}
		return 0
	case "delete":
		os.Remove(created)
		logCall("delete")
		return 0
	case "get":
	default:
		fmt.Fprintln(os.Stderr, "fake kubectl: unknown command", args)
		return 2
	}
	if len(args) >= 3 && args[1] == "--raw" {
		u, err := url.Parse(args[2])
		if err != nil {
			return 2
		}
		q := u.Query()
		if q.Get("watch") != "true" {
			logCall("list")
			fmt.Print(`{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"10"},"items":[]}`)
			return 0
		}
		logCall("watch " + q.Get("resourceVersion"))
		from, err := strconv.Atoi(q.Get("resourceVersion"))
		if err != nil {
			return 2
		}
		waitCreated()
		sent := 0
		for i, st := range fakePodStates("bench") {
			if 11+i <= from {
				continue
			}
			typ := "MODIFIED"
			if i == 0 {
				typ = "ADDED"
			}
			fmt.Printf(`{"type":%q,"object":%s}`+"\n", typ, st)
			if sent++; sent == 2 {
				break
			}
		}
		return 0 // EOF after two events
	}
	// The old way (kubectl get pods --field-selector ... --watch -o json): the first state, then EOF.
	logCall("get --watch")
	waitCreated()
	var v any
	_ = json.Unmarshal([]byte(fakePodStates("bench")[0]), &v)
	b, _ := json.MarshalIndent(v, "", "    ")
	fmt.Println(string(b))
	return 0
}

// fakeKubectlFlags points podbench at the fake kubectl (this test binary).
func fakeKubectlFlags(t *testing.T) (*flags, string) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv(fakeKubectlEnv, dir)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &flags{kubectl: self, kubeconfig: filepath.Join(dir, "kubeconfig"), ctrdLog: filepath.Join(dir, "containerd.log"), timeout: 30 * time.Second}, dir
}

// TestStartOnceSurvivesWatchEOF: every watch stream ends after two events; podbench watches
// again from the last resourceVersion and still records every timestamp.
func TestStartOnceSurvivesWatchEOF(t *testing.T) {
	f, dir := fakeKubectlFlags(t)
	manifest := filepath.Join(dir, "pod.yaml")
	if err := os.WriteFile(manifest, []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: bench\n  namespace: default\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := startOnce(f, manifest, podRef{"default", "bench"}, false)
	if err != nil {
		t.Fatalf("startOnce: %v", err)
	}
	for _, k := range []string{"scheduled", "toRunning", "toReady", "total"} {
		if v, ok := s[k]; !ok || v < 0 {
			t.Errorf("%s = %v (present %v), want a duration >= 0", k, v, ok)
		}
	}
	if s["total"] < s["scheduled"] {
		t.Errorf("total %v < scheduled %v", s["total"], s["scheduled"])
	}
	calls, err := os.ReadFile(filepath.Join(dir, "calls"))
	if err != nil {
		t.Fatal(err)
	}
	// List first (resourceVersion 10), watch from it, then again from the last version seen.
	for _, want := range []string{"list", "watch 10", "watch 12", "delete"} {
		if !strings.Contains(string(calls), want+"\n") {
			t.Errorf("kubectl calls lack %q:\n%s", want, calls)
		}
	}
}
