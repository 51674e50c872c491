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
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/sealpod/sealpod/internal/repopath"
	"github.com/sealpod/sealpod/internal/testdeps"
	"github.com/sealpod/sealpod/tests/internal/proc"
)

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
	vmDir                  string // the sealed pod's shim state dir (/run/sealpod/<sandbox id>/)
	guest                  string // the measured guest bundle (mkguest)
	podapp                 string // the test app's image in the cluster's registry
	canaries               []string
}

func (c *cluster) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	return proc.Run(t, c.work, nil, filepath.Join(c.env["KBIN"], "kubectl"), append([]string{"--kubeconfig", c.env["KUBECONFIG"]}, args...)...)
}

func (c *cluster) kubectlErr(args ...string) (string, error) {
	return proc.RunErr(c.work, nil, filepath.Join(c.env["KBIN"], "kubectl"), append([]string{"--kubeconfig", c.env["KUBECONFIG"]}, args...)...)
}

func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("the cluster smoke test starts a Kubernetes cluster and a VM: skipped with -short")
	}
	if os.Geteuid() != 0 {
		testdeps.Missing(t, "the cluster smoke test needs root (containerd, kubelet, mounts)")
	}
	c := &cluster{root: repopath.Root(t), work: t.TempDir()}
	c.state = filepath.Join(c.root, "out", "e2e-cluster")
	c.bin = filepath.Join(c.work, "bin")
	script := filepath.Join(c.root, "hack", "k8s", "cluster.sh")
	env := []string{"SEALPOD_CLUSTER_DIR=" + c.state}

	t0 := time.Now()
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range []string{"containerd", "kubelet", "kbs", "kube-apiserver"} {
				b, _ := os.ReadFile(filepath.Join(c.state, "logs", l+".log"))
				if len(b) > 6000 {
					b = b[len(b)-6000:]
				}
				t.Logf("%s log (tail):\n%s", l, b)
			}
		}
		t1 := time.Now()
		out, err := proc.RunErr(c.root, env, script, "down")
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
		if c.vmDir != "" {
			if vms := processesUnder(c.vmDir); len(vms) > 0 {
				t.Errorf("QEMU of the sealed pod left after cluster down: %v", vms)
			}
		}
		if _, err := os.Stat("/sys/class/net/sealpod0"); err == nil {
			t.Error("bridge sealpod0 left after cluster down")
		}
	})
	upOut, err := proc.RunErr(c.root, env, script, "up")
	if err != nil {
		t.Fatalf("cluster up: %v", err)
	}
	up := time.Since(t0)
	t.Logf("cluster up in %v:\n%s", up.Round(time.Millisecond), upOut)

	c.env = map[string]string{}
	for _, l := range strings.Split(proc.Run(t, c.root, env, script, "env"), "\n") {
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

	// The installer DaemonSet ran and labelled the node for each of its TEEs (sim, sim-tdx);
	// the RuntimeClasses exist and select it.
	for _, tee := range []string{"sim", "sim-tdx"} {
		if got := c.kubectl(t, "get", "node", "localhost", "-o", `jsonpath={.metadata.labels.sealpod\.io/tee\.`+tee+`}`); got != "true" {
			t.Fatalf("node label sealpod.io/tee.%s = %q, want true", tee, got)
		}
		if got := c.kubectl(t, "get", "runtimeclass", "sealpod-"+tee, "-o", "jsonpath={.handler}"); got != "sealpod" {
			t.Fatalf("RuntimeClass sealpod-%s handler %q", tee, got)
		}
	}
	if os.Getenv("SEALPOD_CLUSTER_INSTALL") != "direct" {
		// The installer DaemonSet's pod runs (--wait) and restarted containerd once.
		// (the kubelet may report the phase a little after the installer labelled the node)
		var phase string
		proc.WaitFor(t, "the installer DaemonSet's pod Running", 60*time.Second, func() bool {
			phase, _ = c.kubectlErr("-n", "sealpod-system", "get", "pods", "-l", "app.kubernetes.io/name=sealpod-node-installer",
				"-o", "jsonpath={.items[*].status.phase}")
			return phase == "Running"
		})
		if logs := c.kubectl(t, "-n", "sealpod-system", "logs", "ds/sealpod-node-installer"); !strings.Contains(logs, "restarted=true") {
			t.Fatalf("installer log does not report a containerd restart:\n%s", logs)
		}
		ctrdLog := string(must(os.ReadFile(filepath.Join(c.state, "logs", "containerd.log"))))
		if n := strings.Count(ctrdLog, "starting containerd"); n != 2 {
			t.Fatalf("containerd started %d times, want 2 (the installer's restart)", n)
		}
	}

	t1 := time.Now()
	proc.Run(t, c.root, []string{"CGO_ENABLED=0", "GOFLAGS=-buildvcs=false"}, "go", "build", "-o", c.bin+"/",
		"./ctl/cmd/sealctl", "./guest-image/cmd/mkguest", "./tests/node/internal/podapp", "./hack/cmd/devregistry")
	proc.Run(t, c.root, []string{"CGO_ENABLED=1", "GOFLAGS=-buildvcs=false"}, "go", "build", "-trimpath", "-tags", "netgo,osusergo,seccomp",
		"-ldflags", "-s -w -extldflags -static", "-o", filepath.Join(c.bin, "sealpod-agent"), "./agent/cmd/sealpod-agent")
	t.Logf("built sealctl, mkguest, podapp, devregistry, agent in %v", time.Since(t1).Round(time.Millisecond))
	c.guest = filepath.Join(c.work, "guest")
	proc.Run(t, c.root, nil, filepath.Join(c.bin, "mkguest"), "--init", filepath.Join(c.bin, "sealpod-agent"), "--out", c.guest,
		"--cmdline", "console=ttyS0 quiet panic=-1 sealpod.insecure_registries="+c.env["SEALPOD_GUEST_REGISTRY"])

	reg, guestReg := c.env["SEALPOD_REGISTRY"], c.env["SEALPOD_GUEST_REGISTRY"]
	pushed := strings.TrimSpace(proc.Run(t, c.root, nil, filepath.Join(c.bin, "devregistry"), "push-binary",
		"--binary", filepath.Join(c.bin, "podapp"), "--ref", reg+"/sealpod/podapp:e2e", "--path", "/podapp"))
	if !strings.HasPrefix(pushed, reg+"/") {
		t.Fatalf("pushed %q", pushed)
	}
	c.podapp = pushed

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
		c.canaries = append(c.canaries, canary)
		guestRef := strings.Replace(pushed, reg, guestReg, 1)
		pod := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: greeter
  namespace: default
  annotations: {sealpod.io/exec: '{"server": [["/podapp", "probe"]]}'}
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
		t0 := time.Now()
		out := c.seal(t, in, "greeter-sealed:e2e")
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
		proc.WaitFor(t, "the greeting in kubectl logs", 60*time.Second, func() bool {
			logs, _ = c.kubectlErr("logs", "greeter")
			return strings.Contains(logs, "greeting: hello from a sealed pod") && strings.Contains(logs, "pod namespace: default")
		})
		if strings.Contains(logs, canary) {
			t.Fatal("the canary is in the logs")
		}
		// The pod runs in a QEMU VM started by the shim (state under /run/sealpod), not in runc.
		crictl := strings.TrimSpace(string(must(os.ReadFile(filepath.Join(c.state, "crictl")))))
		sock := "unix://" + filepath.Join(c.state, "containerd", "containerd.sock")
		sandbox := strings.TrimSpace(proc.Run(t, c.work, nil, crictl, "-r", sock, "pods", "-q", "--name", "greeter", "--namespace", "default"))
		if sandbox == "" || strings.Contains(sandbox, "\n") {
			t.Fatalf("CRI sandboxes of greeter: %q", sandbox)
		}
		c.vmDir = "/run/sealpod/" + sandbox + "/"
		if vms := processesUnder(c.vmDir); len(vms) != 1 || !strings.Contains(vms[0], "qemu-system") {
			t.Fatalf("want one QEMU process of the shim for sandbox %s, found %v", sandbox, vms)
		}
		// kubectl exec (apiserver → kubelet → CRI → shim → agent): the argv of the sealed exec
		// allow-list (sealpod.io/exec) is allowed, any other argv is refused.
		if out := c.kubectl(t, "exec", "greeter", "--", "/podapp", "probe"); strings.TrimSpace(out) != "probe ok" {
			t.Fatalf("allowed exec printed %q", out)
		}
		if out, err := c.kubectlErr("exec", "greeter", "--", "/podapp", "init"); err == nil || strings.Contains(out, "init done") {
			t.Fatalf("kubectl exec of a non-allowed argv was not refused: %q %v", out, err)
		} else {
			t.Logf("kubectl exec refused: %s", lastLine(err.Error()))
		}
		// Nothing under the cluster's state dir (etcd, containerd's content and state, kubelet,
		// pod logs, registry, broker, logs) holds the canary in clear.
		if hits := scanFor(c.state, []byte(canary)); len(hits) > 0 {
			t.Fatalf("the canary appears in host files: %v", hits)
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
		if vms := processesUnder(c.vmDir); len(vms) > 0 {
			t.Fatalf("QEMU left after the pod was deleted: %v", vms)
		}

		// Once more, left running: cluster down must stop it (checked in the cleanup).
		c.kubectl(t, "create", "-f", out)
		c.kubectl(t, "wait", "--for=condition=Ready", "pod/greeter", "--timeout=600s")
		sandbox = strings.TrimSpace(proc.Run(t, c.work, nil, crictl, "-r", sock, "pods", "-q", "--name", "greeter", "--namespace", "default", "--state", "ready"))
		c.vmDir = "/run/sealpod/" + sandbox + "/"
		if vms := processesUnder(c.vmDir); len(vms) != 1 {
			t.Fatalf("second sealed pod: QEMU processes %v", vms)
		}
	})

	t.Run("sim-tdx", c.simTDX)
	t.Run("hostile-node", c.hostileNode)
	t.Run("workloads", c.workloads)
	t.Run("faults", c.faults)
	t.Run("volumes", c.volumes)
	t.Run("dns", c.dns)
	t.Run("interactive", c.interactive) // interactive_test.go
	t.Run("real-world", c.realWorld)
	t.Run("no-plaintext", c.noPlaintext)
	t.Run("no-leftovers", c.noLeftovers)
	// After the workloads are gone: its three sealed pods need 3 × 350m of the node's 2 CPUs.
	t.Run("guestbook", c.guestbook) // guestbook_test.go

	// The sealed output of every real-world manifest that seals is accepted by the API server
	// (the manifests that are refused are checked per file in imagebuilder/manifests).
	t.Run("shared-manifests-dry-run", func(t *testing.T) {
		files, err := filepath.Glob(filepath.Join(repopath.Shared(t, "manifests"), "*.yaml"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no shared manifests: %v", err)
		}
		// Tiny images under every name the manifests use, in the local registry, which stands
		// in for docker.io, gcr.io and registry.k8s.io (sealctl resolves tags through mirrors).
		imageRE := regexp.MustCompile(`(?m)^\s*-?\s*image:\s*"?([^"\s#]+)"?`)
		mirrors := map[string]bool{}
		for _, f := range files {
			for _, m := range imageRE.FindAllStringSubmatch(string(must(os.ReadFile(f))), -1) {
				ref, err := name.ParseReference(m[1])
				must0(t, err)
				mirrors[ref.Context().RegistryStr()] = true
				dst, err := name.ParseReference(reg+"/"+ref.Context().RepositoryStr()+":"+ref.Identifier(), name.Insecure)
				must0(t, err)
				img, err := random.Image(512, 1)
				must0(t, err)
				must0(t, remote.Write(dst, img))
			}
		}
		standin := filepath.Join(c.work, "standin-guest")
		proc.Run(t, c.root, nil, "go", "run", "./tests/e2e/internal/standin-guest", "--out", standin)
		kbsDir := c.env["SEALPOD_KBS_DIR"]
		sealedCount := 0
		for _, f := range files {
			base := strings.TrimSuffix(filepath.Base(f), ".yaml")
			out := filepath.Join(c.work, base+".sealed.yaml")
			args := []string{"image", "create", "-f", f, "--guest", standin, "--tee", "sim",
				"--kbs", c.env["SEALPOD_KBS_URL"], "--kbs-ca", filepath.Join(kbsDir, "tls", "ca.pem"),
				"--keys", filepath.Join(c.work, base+".keys.json"), "--insecure-registry",
				"--image", reg + "/sealpod/" + strings.ToLower(strings.ReplaceAll(base, "_", "-")),
				"--oci-layout", filepath.Join(c.work, base+".oci"), "--output-file", out}
			for r := range mirrors {
				args = append(args, "--mirror", r+"="+reg)
			}
			args = append(args, "--mirror", "docker.io="+reg)
			if _, err := proc.RunErr(c.root, nil, filepath.Join(c.bin, "sealctl"), args...); err != nil {
				t.Logf("%s: refused by sealctl (checked per file in imagebuilder/manifests)", base)
				continue
			}
			sealedCount++
			if o, err := c.kubectlErr("apply", "--dry-run=server", "-f", out); err != nil {
				// An input that uses an API this cluster no longer serves (CockroachDB's
				// PodDisruptionBudget policy/v1beta1, gone since Kubernetes 1.25) is refused
				// as written too: sealing passes such objects through unchanged.
				// (kubectl's refusals are on stderr, which RunErr puts into the error)
				if _, erri := c.kubectlErr("apply", "--dry-run=server", "-f", f); erri != nil && sameRefusal(err.Error(), erri.Error()) {
					t.Logf("%s: the API server refuses the input as written too, for the same objects: %s", base, lastLine(strings.TrimSpace(erri.Error())))
					continue
				}
				t.Errorf("%s: the API server refuses the sealed manifests: %v\n%s", base, err, o)
			} else {
				t.Logf("%s: sealed output accepted by kubectl apply --dry-run=server", base)
			}
		}
		if sealedCount != 12 { // TestSharedManifests: 12 of 15 seal (CockroachDB, MinIO, Cassandra since issue 15/16)
			t.Errorf("%d shared manifests sealed, want 12 (as imagebuilder/manifests expects)", sealedCount)
		}
	})
}

// refusalNoise is what differs between kubectl's refusals of the input and of the sealed output
// for the same object: the namespace and the file.
var refusalNoise = regexp.MustCompile(` namespace: "[^"]*"| from "[^"]*"`)

// sameRefusal reports whether kubectl's errors for the sealed output and for the input name
// the same objects (the "error:" lines without namespace and file).
func sameRefusal(sealed, input string) bool {
	errs := func(o string) []string {
		var l []string
		for _, line := range strings.Split(o, "\n") {
			if strings.HasPrefix(line, "error:") {
				// The sealed output names the namespace the input left to the default and
				// comes from another file: compare the rest.
				l = append(l, refusalNoise.ReplaceAllString(line, ""))
			}
		}
		return l
	}
	a, b := errs(sealed), errs(input)
	return len(a) > 0 && strings.Join(a, "\n") == strings.Join(b, "\n")
}

// scanFor lists the regular files under dir that contain needle.
func scanFor(dir string, needle []byte) []string {
	var hits []string
	_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, needle) {
			hits = append(hits, p)
		}
		return nil
	})
	return hits
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
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
