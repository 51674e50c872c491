//go:build e2e

// Package e2e holds the cluster smoke test (issue 7, `make e2e-k8s`): hack/k8s/cluster.sh up
// starts a real single-node Kubernetes with the Sealpod runtime installed by its node-installer
// DaemonSet; a plain Deployment becomes Available; a pod sealed with `sealctl image create`
// becomes Ready under the sealpod-sim RuntimeClass and `kubectl logs` shows its greeting;
// cluster.sh down leaves no process, VM or bridge behind.
package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func repoRoot(t *testing.T) string {
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
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := runErr(dir, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", filepath.Base(name), strings.Join(args, " "), err)
	}
	return out
}

func runErr(dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w\n%s%s", err, out, stderr.String())
	}
	return string(out), nil
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// processesUnder lists the processes whose command line mentions dir, and QEMU processes of
// the shim (sealpod-<id>).
func processesUnder(dir string) []string {
	var found []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, dir) {
			found = append(found, e.Name()+": "+cmd)
		}
	}
	return found
}

type cluster struct {
	root, state, work, bin string
	env                    map[string]string
}

func (c *cluster) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, c.work, nil, filepath.Join(c.env["KBIN"], "kubectl"), append([]string{"--kubeconfig", c.env["KUBECONFIG"]}, args...)...)
}

func (c *cluster) kubectlErr(args ...string) (string, error) {
	return runErr(c.work, nil, filepath.Join(c.env["KBIN"], "kubectl"), append([]string{"--kubeconfig", c.env["KUBECONFIG"]}, args...)...)
}

func TestCluster(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the cluster smoke test needs root (containerd, kubelet, mounts)")
	}
	c := &cluster{root: repoRoot(t), work: t.TempDir()}
	c.state = filepath.Join(c.root, "out", "e2e-cluster")
	c.bin = filepath.Join(c.work, "bin")
	script := filepath.Join(c.root, "hack", "k8s", "cluster.sh")
	env := []string{"SEALPOD_CLUSTER_DIR=" + c.state}

	t0 := time.Now()
	t.Cleanup(func() {
		t1 := time.Now()
		out, err := runErr(c.root, env, script, "down")
		if err != nil {
			t.Errorf("cluster down: %v", err)
		}
		t.Logf("cluster down in %v: %s", time.Since(t1).Round(time.Millisecond), strings.TrimSpace(out))
		if left := processesUnder(c.state); len(left) > 0 {
			t.Errorf("processes left after cluster down: %v", left)
		}
		if _, err := os.Stat(c.state); !os.IsNotExist(err) {
			t.Errorf("state dir %s left after cluster down", c.state)
		}
		if _, err := os.Stat("/sys/class/net/sealpod0"); err == nil {
			t.Error("bridge sealpod0 left after cluster down")
		}
		if b, _ := exec.Command("pgrep", "-f", "qemu-system.*sealpod-").Output(); len(bytes.TrimSpace(b)) > 0 {
			t.Logf("QEMU processes of sealed pods still running (maybe another suite's): %s", b)
		}
	})
	upOut, err := runErr(c.root, env, script, "up")
	if err != nil {
		t.Fatalf("cluster up: %v", err)
	}
	up := time.Since(t0)
	t.Logf("cluster up in %v:\n%s", up.Round(time.Millisecond), upOut)

	c.env = map[string]string{}
	for _, l := range strings.Split(run(t, c.root, env, script, "env"), "\n") {
		if k, v, ok := strings.Cut(strings.TrimPrefix(l, "export "), "="); ok {
			c.env[k] = v
		}
	}
	c.env["KBIN"] = strings.TrimSpace(string(must(os.ReadFile(filepath.Join(c.state, "kbin")))))
	for _, k := range []string{"KUBECONFIG", "SEALPOD_REGISTRY", "SEALPOD_GUEST_REGISTRY", "SEALPOD_KBS_URL", "SEALPOD_KBS_DIR"} {
		if c.env[k] == "" {
			t.Fatalf("cluster env lacks %s", k)
		}
	}

	// The installer DaemonSet ran and labelled the node; the RuntimeClasses exist.
	if got := c.kubectl(t, "get", "node", "localhost", "-o", `jsonpath={.metadata.labels.sealpod\.io/tee}`); got != "sim" {
		t.Fatalf("node label sealpod.io/tee = %q, want sim", got)
	}
	if got := c.kubectl(t, "get", "runtimeclass", "sealpod-sim", "-o", "jsonpath={.handler}"); got != "sealpod" {
		t.Fatalf("RuntimeClass sealpod-sim handler %q", got)
	}

	t1 := time.Now()
	run(t, c.root, []string{"CGO_ENABLED=0", "GOFLAGS=-buildvcs=false"}, "go", "build", "-o", c.bin+"/",
		"./ctl/cmd/sealctl", "./guest-image/cmd/mkguest", "./tests/node/internal/podapp", "./hack/cmd/devregistry")
	run(t, c.root, []string{"CGO_ENABLED=1", "GOFLAGS=-buildvcs=false"}, "go", "build", "-trimpath", "-tags", "netgo,osusergo",
		"-ldflags", "-s -w -extldflags -static", "-o", filepath.Join(c.bin, "sealpod-agent"), "./agent/cmd/sealpod-agent")
	t.Logf("built sealctl, mkguest, podapp, devregistry, agent in %v", time.Since(t1).Round(time.Millisecond))

	reg, guestReg := c.env["SEALPOD_REGISTRY"], c.env["SEALPOD_GUEST_REGISTRY"]
	pushed := strings.TrimSpace(run(t, c.root, nil, filepath.Join(c.bin, "devregistry"), "push-binary",
		"--binary", filepath.Join(c.bin, "podapp"), "--ref", reg+"/sealpod/podapp:e2e", "--path", "/podapp"))
	if !strings.HasPrefix(pushed, reg+"/") {
		t.Fatalf("pushed %q", pushed)
	}

	t.Run("deployment", func(t *testing.T) {
		manifest := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: plain, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: plain}}
  template:
    metadata: {labels: {app: plain}}
    spec:
      containers:
      - name: server
        image: %s
        command: ["/podapp", "serve"]
        env: [{name: SEALPOD_GREETING, value: hello from a plain pod}]
        readinessProbe: {exec: {command: ["/podapp", "probe"]}, periodSeconds: 2}
`, pushed)
		p := filepath.Join(c.work, "plain.yaml")
		must0(t, os.WriteFile(p, []byte(manifest), 0o644))
		t0 := time.Now()
		c.kubectl(t, "apply", "-f", p)
		c.kubectl(t, "rollout", "status", "deployment/plain", "--timeout=180s")
		t.Logf("Deployment (2 replicas, runc) Available in %v", time.Since(t0).Round(time.Millisecond))
		if logs := c.kubectl(t, "logs", "deployment/plain"); !strings.Contains(logs, "greeting: hello from a plain pod") {
			t.Fatalf("plain pod logs %q", logs)
		}
		c.kubectl(t, "delete", "deployment", "plain", "--wait=true", "--timeout=120s")
	})

	t.Run("sealed-pod", func(t *testing.T) {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		canary := "canary-" + hex.EncodeToString(b)
		guestRef := strings.Replace(pushed, reg, guestReg, 1)
		guest := filepath.Join(c.work, "guest")
		run(t, c.root, nil, filepath.Join(c.bin, "mkguest"), "--init", filepath.Join(c.bin, "sealpod-agent"), "--out", guest,
			"--cmdline", "console=ttyS0 quiet panic=-1 sealpod.insecure_registries="+guestReg)
		pod := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: greeter, namespace: default}
spec:
  containers:
  - name: server
    image: %s
    command: ["/podapp", "serve"]
    env:
    - {name: SEALPOD_GREETING, value: hello from a sealed pod}
    - {name: SEALPOD_CANARY, value: %s}
    - name: POD_NAMESPACE
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    readinessProbe: {exec: {command: ["/podapp", "probe"]}, periodSeconds: 5}
`, guestRef, canary)
		in := filepath.Join(c.work, "greeter.yaml")
		must0(t, os.WriteFile(in, []byte(pod), 0o644))
		out := filepath.Join(c.work, "greeter.sealed.yaml")
		kbsDir := c.env["SEALPOD_KBS_DIR"]
		t0 := time.Now()
		run(t, c.root, nil, filepath.Join(c.bin, "sealctl"), "image", "create", "-f", in, "--guest", guest, "--tee", "sim",
			"--kbs", c.env["SEALPOD_KBS_URL"], "--kbs-ca", filepath.Join(kbsDir, "tls", "ca.pem"),
			"--kbs-config", filepath.Join(kbsDir, "admin", "sealctl-kbs.json"),
			"--push", reg+"/sealpod/greeter-sealed:e2e", "--insecure-registry", "-o", out)
		t.Logf("sealed and pushed in %v", time.Since(t0).Round(time.Millisecond))
		sealed := must(os.ReadFile(out))
		if bytes.Contains(sealed, []byte(canary)) || bytes.Contains(sealed, []byte("hello from a sealed pod")) {
			t.Fatal("the sealed manifest contains the canary or the greeting")
		}
		if !bytes.Contains(sealed, []byte("runtimeClassName: sealpod-sim")) {
			t.Fatalf("sealed manifest without runtimeClassName sealpod-sim:\n%s", sealed)
		}
		t0 = time.Now()
		c.kubectl(t, "create", "-f", out)
		if _, err := c.kubectlErr("wait", "--for=condition=Ready", "pod/greeter", "--timeout=600s"); err != nil {
			desc, _ := c.kubectlErr("describe", "pod", "greeter")
			t.Fatalf("sealed pod not Ready: %v\n%s", err, desc)
		}
		t.Logf("sealed pod Ready %v after kubectl create (pull, VM boot, attest, unseal, in-guest pull, start)", time.Since(t0).Round(time.Millisecond))
		var logs string
		waitFor(t, "the greeting in kubectl logs", 60*time.Second, func() bool {
			logs, _ = c.kubectlErr("logs", "greeter")
			return strings.Contains(logs, "greeting: hello from a sealed pod") && strings.Contains(logs, "pod namespace: default")
		})
		if strings.Contains(logs, canary) {
			t.Fatal("the canary is in the logs")
		}
		if got := c.kubectl(t, "get", "pod", "greeter", "-o", "jsonpath={.spec.runtimeClassName}"); got != "sealpod-sim" {
			t.Fatalf("runtimeClassName %q", got)
		}
		for _, k := range []string{"pod", "deployment", "daemonset", "configmap"} {
			if all, err := c.kubectlErr("get", k, "-A", "-o", "yaml"); err == nil && strings.Contains(all, canary) {
				t.Fatalf("the canary is in the cluster's %s objects", k)
			}
		}
		t0 = time.Now()
		c.kubectl(t, "delete", "pod", "greeter", "--wait=true", "--timeout=120s")
		t.Logf("sealed pod deleted in %v", time.Since(t0).Round(time.Millisecond))
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func must0(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
