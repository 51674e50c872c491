//go:build cluster

// Package k8s tests the local cluster of hack/k8s/cluster.sh (docs/cluster.md) beyond what
// tests/e2e covers: here, that it provisions PersistentVolumeClaims (issue 15 item 5).
//
// TestClusterStorage starts its own cluster (state dir out/storage-cluster), then: exactly one
// StorageClass is the default and its provisioner is kube-controller-manager's host-path
// provisioner; a claim that names no class gets it (DefaultStorageClass admission), is Bound
// by the provisioner, and a runc pod writes a canary into it that the host finds in a PV
// directory inside the state dir; deleting the claim deletes the PV and its directory
// (reclaim policy Delete); cluster.sh down removes the PV directories still there and the
// /tmp/hostpath_pv link, and no pod network namespace is left. Build tag `cluster`, root only; one cluster at a time on a machine:
//
//	go test -c -tags cluster -o /tmp/k8s.test ./hack/k8s && (cd hack/k8s && /tmp/k8s.test -test.v)
package k8s

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/internal/repopath"
	"github.com/sealpod/sealpod/internal/testdeps"
)

// provisionerLink is the fixed parent of the host-path provisioner's PV directories
// (k8s.io/kubernetes pkg/volume/hostpath: /tmp/hostpath_pv/<uuid>).
const provisionerLink = "/tmp/hostpath_pv"

type testCluster struct {
	root, state, kubectlBin string
}

func run(dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

func (c *testCluster) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.kubectlErr(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (c *testCluster) kubectlErr(args ...string) (string, error) {
	return run(c.root, nil, c.kubectlBin, append([]string{"--kubeconfig", filepath.Join(c.state, "kubeconfig")}, args...)...)
}

func (c *testCluster) apply(t *testing.T, manifest string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "m.yaml")
	if err := os.WriteFile(p, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	c.kubectl(t, "apply", "-f", p)
}

// waitFor polls cond every 250 ms until it holds or timeout passes; last describes the state
// seen last in the failure message.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (ok bool, last string)) {
	t.Helper()
	end := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s (last: %s)", timeout, what, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (c *testCluster) jsonpath(name, path string, args ...string) (string, error) {
	out, err := c.kubectlErr(append([]string{"get", name, "-o", "jsonpath=" + path}, args...)...)
	return strings.TrimSpace(out), err
}

func TestClusterStorage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Kubernetes cluster: skipped with -short")
	}
	if os.Geteuid() != 0 {
		testdeps.Missing(t, "the cluster test needs root (containerd, kubelet, mounts)")
	}
	c := &testCluster{root: repopath.Root(t)}
	c.state = filepath.Join(c.root, "out", "storage-cluster")
	script := filepath.Join(c.root, "hack", "k8s", "cluster.sh")
	env := []string{"SEALPOD_CLUSTER_DIR=" + c.state}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(c.state, "logs", "kube-controller-manager.log"))
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("kube-controller-manager log (tail):\n%s", b)
		}
		if out, err := run(c.root, env, script, "down"); err != nil {
			t.Errorf("cluster down: %v", err)
		} else {
			t.Logf("%s", strings.TrimSpace(out))
		}
		if _, err := os.Stat(c.state); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("state dir %s (with the PV directories) left after down: %v", c.state, err)
		}
		if _, err := os.Lstat(provisionerLink); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after down: %v", provisionerLink, err)
		}
		// the pods' network namespaces (CNI names them cni-<id>) went with the pods
		if left, _ := filepath.Glob("/var/run/netns/cni-*"); len(left) > 0 {
			t.Errorf("pod network namespaces left after down: %v", left)
		}
	})
	t0 := time.Now()
	if out, err := run(c.root, env, script, "up"); err != nil {
		t.Fatalf("cluster up: %v\n%s", err, out)
	}
	t.Logf("cluster up in %v", time.Since(t0).Round(time.Millisecond))
	kbin, err := os.ReadFile(filepath.Join(c.state, "kbin"))
	if err != nil {
		t.Fatal(err)
	}
	c.kubectlBin = filepath.Join(strings.TrimSpace(string(kbin)), "kubectl")

	// Exactly one default StorageClass, served by the host-path provisioner.
	classes := c.kubectl(t, "get", "storageclass", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.provisioner} {.metadata.annotations.storageclass\.kubernetes\.io/is-default-class}{"\n"}{end}`)
	var defaults []string
	for _, l := range strings.Split(strings.TrimSpace(classes), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[2] == "true" {
			defaults = append(defaults, f[0]+" "+f[1])
		}
	}
	if len(defaults) != 1 || !strings.HasSuffix(defaults[0], " kubernetes.io/host-path") {
		t.Fatalf("default StorageClasses %q (all: %q), want one with provisioner kubernetes.io/host-path", defaults, classes)
	}
	class := strings.Fields(defaults[0])[0]

	// A static busybox image for the runc pods (sh, echo, cat).
	image, err := run(c.root, nil, filepath.Join(c.state, "tools", "clusterkit"), "pack-image", "--insecure",
		"--ref", "127.0.0.1:5000/sealpod/storage-test:cluster", "--file", "/bin/busybox:/bin/busybox", "--entrypoint", "/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	image = strings.TrimSpace(image)

	// claimWriter is a claim without a storage class and a runc pod writing canary to it.
	claimWriter := func(name, canary string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: %[1]s, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: %[1]s-writer, namespace: default}
spec:
  restartPolicy: Never
  containers:
  - name: writer
    image: %[2]s
    command: ["/bin/busybox", "sh", "-c", "echo %[3]s > /data/canary && /bin/busybox cat /data/canary"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: %[1]s}
`, name, image, canary)
	}
	// bound waits for the claim to be Bound and its writer to succeed; it returns the PV name
	// and its host directory (resolved).
	bound := func(t *testing.T, name, canary string) (pv, dir string) {
		t.Helper()
		waitFor(t, "claim "+name+" Bound", 90*time.Second, func() (bool, string) {
			phase, err := c.jsonpath("pvc/"+name, "{.status.phase}")
			return phase == "Bound", fmt.Sprintf("phase %q %v; events: %s", phase, err, c.events(name))
		})
		if got, _ := c.jsonpath("pvc/"+name, "{.spec.storageClassName}"); got != class {
			t.Fatalf("claim %s storageClassName %q, want the default %q", name, got, class)
		}
		waitFor(t, "pod "+name+"-writer Succeeded", 120*time.Second, func() (bool, string) {
			phase, err := c.jsonpath("pod/"+name+"-writer", "{.status.phase}")
			if phase == "Failed" {
				t.Fatalf("pod %s-writer failed: %s", name, c.events(name+"-writer"))
			}
			return phase == "Succeeded", fmt.Sprintf("phase %q %v", phase, err)
		})
		pv, _ = c.jsonpath("pvc/"+name, "{.spec.volumeName}")
		hostPath, err := c.jsonpath("pv/"+pv, "{.spec.hostPath.path}")
		if err != nil || !strings.HasPrefix(hostPath, provisionerLink+"/") {
			t.Fatalf("PV %s hostPath %q (%v), want under %s", pv, hostPath, err, provisionerLink)
		}
		if dir, err = filepath.EvalSymlinks(hostPath); err != nil {
			t.Fatalf("PV %s directory: %v", pv, err)
		}
		if want := filepath.Join(c.state, "volumes") + "/"; !strings.HasPrefix(dir, want) {
			t.Fatalf("PV %s directory %s is not inside the state dir (%s)", pv, dir, want)
		}
		got, err := os.ReadFile(filepath.Join(dir, "canary"))
		if err != nil || strings.TrimSpace(string(got)) != canary {
			t.Fatalf("PV %s: canary on the host %q (%v), want %q", pv, got, err, canary)
		}
		if logs := c.kubectl(t, "logs", name+"-writer"); strings.TrimSpace(logs) != canary {
			t.Fatalf("writer logs %q, want the canary", logs)
		}
		return pv, dir
	}

	t.Run("claim-bound-written-deleted", func(t *testing.T) {
		canary := "storage-" + rand.Text()[:16]
		c.apply(t, claimWriter("data", canary))
		pv, dir := bound(t, "data", canary)
		t.Logf("claim data → PV %s at %s", pv, dir)
		c.kubectl(t, "delete", "pod/data-writer", "pvc/data", "--wait=true", "--timeout=60s")
		waitFor(t, "PV "+pv+" and its directory deleted (reclaim policy Delete)", 60*time.Second, func() (bool, string) {
			_, err := c.kubectlErr("get", "pv/"+pv)
			_, statErr := os.Stat(dir)
			return err != nil && errors.Is(statErr, os.ErrNotExist), fmt.Sprintf("get pv: %v; stat dir: %v", err, statErr)
		})
	})

	// A claim left bound with data: cluster.sh down (cleanup) must remove its directory.
	t.Run("claim-left-for-down", func(t *testing.T) {
		canary := "storage-" + rand.Text()[:16]
		c.apply(t, claimWriter("kept", canary))
		_, dir := bound(t, "kept", canary)
		t.Logf("left bound for cluster down: %s", dir)
	})
}

func (c *testCluster) events(name string) string {
	out, _ := c.kubectlErr("get", "events", "--field-selector", "involvedObject.name="+name,
		"-o", `jsonpath={range .items[*]}{.reason}: {.message}; {end}`)
	return out
}
