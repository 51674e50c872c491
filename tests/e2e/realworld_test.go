//go:build e2e

package e2e

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/tests/internal/proc"
)

// realWorld (issue 16): what ordinary manifests rely on, with a real kubelet. The pod
//   - references a Secret that is not in the sealing input and is created only after the
//     pod (an operator would): it seals without flags, the kubelet holds the pod until the
//     Secret exists, and the value reaches the container as a host-provided value;
//   - mounts a ConfigMap marked optional that never exists: an empty volume, no error;
//   - has a postStart exec hook: the kubelet decides when, the agent runs the sealed argv;
//   - uses its projected service-account token against the API server the way in-cluster
//     clients do (KUBERNETES_SERVICE_HOST/PORT, token and CA from the projected volume).
func (c *cluster) realWorld(t *testing.T) {
	guestRef := strings.Replace(c.podapp, c.env["SEALPOD_REGISTRY"], c.env["SEALPOD_GUEST_REGISTRY"], 1)
	in := filepath.Join(c.work, "realworld.yaml")
	must0(t, os.WriteFile(in, []byte(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: realworld, namespace: default}
spec:
  containers:
  - name: app
    image: %s
    command: ["/podapp", "realworld", "/work"]
    env:
    - name: RUNTIME_SECRET
      valueFrom: {secretKeyRef: {name: made-at-runtime, key: token}}
    volumeMounts:
    - {name: work, mountPath: /work}
    - {name: opt, mountPath: /etc/optional}
    lifecycle:
      postStart: {exec: {command: ["/podapp", "mark", "/work/poststart"]}}
  volumes:
  - {name: work, emptyDir: {}}
  - {name: opt, configMap: {name: never-created, optional: true}}
`, guestRef)), 0o644))
	out := c.seal(t, in, "realworld:e2e")
	sealed := string(must(os.ReadFile(out)))
	for _, hidden := range []string{"/work/poststart", `"mark"`, "realworld\", \"/work"} {
		if strings.Contains(sealed, hidden) {
			t.Errorf("the sealed manifest shows %q (hook and command are sealed)", hidden)
		}
	}
	if !strings.Contains(sealed, "made-at-runtime") {
		t.Errorf("the runtime-created Secret's reference is not kept on the placeholder:\n%s", sealed)
	}

	c.kubectl(t, "create", "-f", out)
	defer c.kubectl(t, "delete", "pod", "realworld", "--wait=true", "--timeout=120s")
	// Without the Secret the kubelet does not start the containers.
	proc.WaitFor(t, "CreateContainerConfigError for the missing Secret", 300*time.Second, func() bool {
		r, _ := c.kubectlErr("get", "pod", "realworld", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}")
		return r == "CreateContainerConfigError"
	})
	token := newCanary("rt-")
	c.kubectl(t, "create", "secret", "generic", "made-at-runtime", "--from-literal=token="+token)
	defer c.kubectl(t, "delete", "secret", "made-at-runtime")
	if _, err := c.kubectlErr("wait", "--for=condition=Ready", "pod/realworld", "--timeout=300s"); err != nil {
		t.Fatalf("pod not Ready after the Secret was created: %v\n%s\n%s", err, c.describe("pod", "realworld"), c.events("realworld"))
	}
	want := []string{
		"poststart hook: ran",
		fmt.Sprintf("runtime secret: sha256:%x", sha256.Sum256([]byte(token))),
		"optional config: absent",
		"api user: system:serviceaccount:default:default",
	}
	var logs string
	proc.WaitFor(t, "the real-world report in kubectl logs", 120*time.Second, func() bool {
		logs, _ = c.kubectlErr("logs", "realworld")
		return strings.Contains(logs, "api ")
	})
	for _, w := range want {
		if !strings.Contains(logs, w) {
			t.Errorf("logs lack %q:\n%s", w, logs)
		}
	}
}
