//go:build e2e

package e2e

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/tests/internal/proc"
)

// hostileNode (issue 11): a sealed pod whose command expands host values ($(POD_NAME),
// $(POD_IP)) runs unchanged, its readiness probe carries a bearer token in an HTTP header
// (answered inside the guest), its input has a kubectl last-applied annotation and it pulls its
// image with a private-registry pull Secret. None of the token, the annotation's content or the
// registry password reaches the cluster objects (noPlaintext scans etcd, host files and process
// command lines for the canaries afterwards).
func (c *cluster) hostileNode(t *testing.T) {
	reg, guestReg := c.env["SEALPOD_REGISTRY"], c.env["SEALPOD_GUEST_REGISTRY"]
	probeToken, applied, pullPass := newCanary("canary-probe-"), newCanary("canary-applied-"), newCanary("canary-pull-")
	c.canaries = append(c.canaries, probeToken, applied, pullPass)
	auth := base64.StdEncoding.EncodeToString([]byte("sealpod-e2e:" + pullPass))
	dockercfg := base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, guestReg, auth)))
	in := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: private-pull, namespace: default}
type: kubernetes.io/dockerconfigjson
data: {.dockerconfigjson: %[1]s}
---
apiVersion: v1
kind: Pod
metadata:
  name: hostvals
  namespace: default
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"hostvals"},"spec":{"note":"%[2]s"}}'
spec:
  imagePullSecrets: [{name: private-pull}]
  containers:
  - name: app
    image: %[3]s
    command: ["/podapp", "args", "name=$(POD_NAME)", "ip=$(POD_IP)"]
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - {name: SEALPOD_PROBE_TOKEN, value: %[4]s}
    ports: [{name: http, containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /healthz, port: http, httpHeaders: [{name: Authorization, value: Bearer %[4]s}]}
      periodSeconds: 2
      timeoutSeconds: 3
`, dockercfg, applied, strings.Replace(c.podapp, reg, guestReg, 1), probeToken)
	p := filepath.Join(c.work, "hostvals.yaml")
	must0(t, os.WriteFile(p, []byte(in), 0o644))
	out := c.seal(t, p, "hostvals:e2e", "--seal-secrets")
	sealed := string(must(os.ReadFile(out)))
	for _, cn := range []string{probeToken, applied, pullPass, auth, "last-applied-configuration", "private-pull", "Authorization", "$(POD_NAME)"} {
		if strings.Contains(sealed, cn) {
			t.Fatalf("the sealed manifests contain %q:\n%s", cn, sealed)
		}
	}
	t0 := time.Now()
	c.kubectl(t, "create", "-f", out)
	if _, err := c.kubectlErr("wait", "--for=condition=Ready", "pod/hostvals", "--timeout=600s"); err != nil {
		t.Fatalf("sealed pod hostvals (probe header answered in the guest) not Ready: %v\n%s\n%s", err, c.describe("pod", "hostvals"), c.events("hostvals"))
	}
	t.Logf("pod with a sealed header probe, host-value args and a sealed pull secret Ready %v after kubectl create", time.Since(t0).Round(time.Millisecond))
	podIP := c.kubectl(t, "get", "pod", "hostvals", "-o", "jsonpath={.status.podIP}")
	if net.ParseIP(podIP) == nil {
		t.Fatalf("pod IP %q", podIP)
	}
	var logs string
	proc.WaitFor(t, "the expanded host values in kubectl logs", 60*time.Second, func() bool {
		logs, _ = c.kubectlErr("logs", "hostvals")
		return strings.Contains(logs, "args: ")
	})
	want := regexp.MustCompile(`(?m)^args: name=hostvals ip=` + regexp.QuoteMeta(podIP) + `$`)
	if !want.MatchString(logs) {
		t.Fatalf("host values not expanded as Kubernetes does: logs %q, want %q", logs, want)
	}
	// The probe is the agent-answered stub; kubectl exec of anything is refused (no allow-list).
	stub := c.kubectl(t, "get", "pod", "hostvals", "-o", "jsonpath={.spec.containers[0].readinessProbe.exec.command}")
	if !strings.Contains(stub, "/sealpod") || !strings.Contains(stub, "readiness") {
		t.Fatalf("placeholder readiness probe %q, want the agent-answered stub", stub)
	}
	if out, err := c.kubectlErr("exec", "hostvals", "--", "/podapp", "probe"); err == nil || strings.Contains(out, "probe ok") {
		t.Fatalf("kubectl exec into hostvals (no allow-list) was not refused: %q", out)
	}
	if _, err := c.kubectlErr("get", "secret", "private-pull"); err == nil {
		t.Fatal("the app-registry pull Secret was created from the sealed output")
	}
	if pods := c.kubectl(t, "get", "pod", "hostvals", "-o", "jsonpath={.spec.imagePullSecrets}"); strings.Contains(pods, "private-pull") {
		t.Fatalf("the placeholder still references the app-registry pull Secret: %s", pods)
	}
	c.confinedQEMU(t, "hostvals")
}

// confinedQEMU (issue 12): the QEMU of the sealed pod runs as an unprivileged user, with QEMU's
// seccomp sandbox, inside the pod's cgroup (so the kubelet's accounting and eviction see it).
func (c *cluster) confinedQEMU(t *testing.T, pod string) {
	t.Helper()
	uid := c.kubectl(t, "get", "pod", pod, "-o", "jsonpath={.metadata.uid}")
	crictl := strings.TrimSpace(string(must(os.ReadFile(filepath.Join(c.state, "crictl")))))
	sock := "unix://" + filepath.Join(c.state, "containerd", "containerd.sock")
	sandbox := strings.TrimSpace(proc.Run(t, c.work, nil, crictl, "-r", sock, "pods", "-q", "--name", pod, "--namespace", "default", "--state", "ready"))
	vms := processesUnder("/run/sealpod/" + sandbox + "/")
	if len(vms) != 1 || !strings.Contains(vms[0], "qemu-system") {
		t.Fatalf("want one QEMU for pod %s (sandbox %s), found %v", pod, sandbox, vms)
	}
	pid, cmdline, _ := strings.Cut(vms[0], ": ")
	if !strings.Contains(cmdline, "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny") {
		t.Errorf("QEMU of %s runs without the seccomp sandbox: %s", pod, cmdline)
	}
	status := string(must(os.ReadFile(filepath.Join("/proc", pid, "status"))))
	var uids []string
	for _, l := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(l, "Uid:"); ok {
			uids = strings.Fields(v)
		}
	}
	if len(uids) != 4 {
		t.Fatalf("no Uid line in /proc/%s/status", pid)
	}
	for _, u := range uids {
		if u == "0" {
			t.Errorf("QEMU of %s has uid 0 (real, effective, saved, fs: %v)", pod, uids)
		}
	}
	cg := string(must(os.ReadFile(filepath.Join("/proc", pid, "cgroup"))))
	podCg := "pod" + uid
	var inPod []string
	for _, l := range strings.Split(strings.TrimSpace(cg), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, ctl := range strings.Split(parts[1], ",") {
			if ctl == "memory" || ctl == "cpu" || ctl == "pids" {
				if !strings.Contains(parts[2], podCg) && !strings.Contains(parts[2], strings.ReplaceAll(podCg, "-", "_")) {
					t.Errorf("QEMU of %s is outside the pod cgroup in %s: %s", pod, ctl, parts[2])
				} else {
					inPod = append(inPod, ctl+":"+parts[2])
				}
			}
		}
	}
	t.Logf("QEMU of %s: pid %s, uids %v, cgroups %v", pod, pid, uids, inPod)
	if len(inPod) == 0 && !t.Failed() {
		t.Errorf("no memory/cpu/pids cgroup line for QEMU of %s:\n%s", pod, cg)
	}
}
