//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/tests/internal/proc"
)

// dns: the cluster DNS (issue 16 item 8; docs/cluster.md, "Cluster DNS"). The cluster runs
// CoreDNS behind the kube-dns Service at 10.96.0.10 and the kubelet gives pods (dnsPolicy
// ClusterFirst) that nameserver, the search list of their namespace and ndots:5. A plain pod,
// then a sealed one, resolve a Service by its full name <svc>.<ns>.svc.cluster.local, by its
// short name <svc> and as <svc>.<ns> to its cluster IP; the sealed pod's /etc/resolv.conf
// (written by the agent from the host's values: containerd's sandbox resolv.conf → shim →
// validated in the guest) has the kubelet's nameserver, search list and options.
func (c *cluster) dns(t *testing.T) {
	if got := c.kubectl(t, "-n", "kube-system", "get", "service", "kube-dns", "-o", "jsonpath={.spec.clusterIP}"); got != "10.96.0.10" {
		t.Fatalf("kube-dns Service cluster IP %q, want 10.96.0.10", got)
	}
	c.createText(t, "dnsweb-service.yaml", `apiVersion: v1
kind: Service
metadata: {name: dnsweb, namespace: default}
spec: {selector: {app: dnsweb}, ports: [{port: 80}]}
`)
	t.Cleanup(func() { c.kubectlErr("delete", "service", "dnsweb", "--wait=false") })
	svcIP := c.kubectl(t, "get", "service", "dnsweb", "-o", "jsonpath={.spec.clusterIP}")
	apiIP := c.kubectl(t, "get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}")
	want := map[string]string{
		"dnsweb.default.svc.cluster.local": svcIP, // 4 dots < ndots:5: the search list first, then as is
		"dnsweb":                           svcIP, // the pod's namespace from the search list
		"kubernetes.default":               apiIP, // <svc>.<ns>
	}
	names := []string{"dnsweb.default.svc.cluster.local", "dnsweb", "kubernetes.default"}
	argv := []string{`"/podapp"`, `"resolve"`}
	for _, n := range names {
		argv = append(argv, fmt.Sprintf("%q", n))
	}
	pod := func(name, image string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: default}
spec:
  containers:
  - name: resolver
    image: %s
    command: [%s]
`, name, image, strings.Join(argv, ", "))
	}
	check := func(t *testing.T, name string) string {
		t.Helper()
		var logs string
		proc.WaitFor(t, name+" done resolving (kubectl logs)", 180*time.Second, func() bool {
			logs, _ = c.kubectlErr("logs", name)
			return strings.Contains(logs, "resolve: done")
		})
		for _, n := range names {
			if line := "resolve " + n + ": " + want[n] + "\n"; !strings.Contains(logs, line) {
				t.Errorf("%s: want %q in its logs:\n%s", name, strings.TrimSpace(line), logs)
			}
		}
		return logs
	}

	// A runc pod: CoreDNS, kube-proxy and the kubelet's clusterDNS alone.
	c.createText(t, "dns-plain.yaml", pod("dns-plain", c.podapp))
	t.Cleanup(func() { c.kubectlErr("delete", "pod", "dns-plain", "--wait=false") })
	check(t, "dns-plain")

	// A sealed pod: the same through the shim and the agent.
	in := filepath.Join(c.work, "dns-sealed.yaml")
	must0(t, os.WriteFile(in, []byte(pod("dns-sealed",
		strings.Replace(c.podapp, c.env["SEALPOD_REGISTRY"], c.env["SEALPOD_GUEST_REGISTRY"], 1))), 0o644))
	sealed := c.seal(t, in, "dns-sealed")
	t0 := time.Now()
	c.kubectl(t, "create", "-f", sealed)
	t.Cleanup(func() { c.kubectlErr("delete", "pod", "dns-sealed", "--wait=true", "--timeout=120s") })
	logs := check(t, "dns-sealed")
	t.Logf("sealed pod resolved Service names %v after kubectl create", time.Since(t0).Round(time.Millisecond))
	for _, line := range []string{"resolv.conf: nameserver 10.96.0.10\n",
		"resolv.conf: search default.svc.cluster.local svc.cluster.local cluster.local", "resolv.conf: options ndots:5\n"} {
		if !strings.Contains(logs, line) {
			t.Errorf("the sealed pod's /etc/resolv.conf lacks %q:\n%s", strings.TrimSpace(line), logs)
		}
	}
}
