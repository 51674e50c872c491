//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sealpod/sealpod/internal/repopath"
	"github.com/sealpod/sealpod/tests/internal/proc"
)

// newCanary returns a random marker that must never reach the host in clear.
func newCanary(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// seal runs sealctl image create on in with the cluster's broker and registry; extra flags
// are appended. It returns the sealed manifests' path.
func (c *cluster) seal(t *testing.T, in, image string, extra ...string) string {
	t.Helper()
	return c.sealFor(t, "sim", c.guest, in, image, extra...)
}

// sealFor seals for tee with the guest bundle guest (seal: sim and the suite's bundle).
func (c *cluster) sealFor(t *testing.T, tee, guest, in, image string, extra ...string) string {
	t.Helper()
	out := strings.TrimSuffix(in, ".yaml") + ".sealed.yaml"
	kbsDir := c.env["SEALPOD_KBS_DIR"]
	args := append([]string{"image", "create", "-f", in, "--guest", guest, "--tee", tee,
		"--kbs", c.env["SEALPOD_KBS_URL"], "--kbs-ca", filepath.Join(kbsDir, "tls", "ca.pem"),
		"--kbs-config", filepath.Join(kbsDir, "admin", "sealctl-kbs.json"),
		"--push", c.env["SEALPOD_REGISTRY"] + "/sealpod/" + image, "--insecure-registry", "--output-file", out}, extra...)
	proc.Run(t, c.root, nil, filepath.Join(c.bin, "sealctl"), args...)
	return out
}

// documents splits a sealed multi-document YAML file and returns the documents of the given
// kind and name, joined again.
func documents(t *testing.T, path, kind, name string) string {
	t.Helper()
	kindRE := regexp.MustCompile(`(?m)^kind: ` + kind + `\s*$`)
	nameRE := regexp.MustCompile(`(?m)^  name: ` + name + `\s*$`)
	var keep []string
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(must(os.ReadFile(path))), -1) {
		if kindRE.MatchString(d) && nameRE.MatchString(d) {
			keep = append(keep, d)
		}
	}
	if len(keep) == 0 {
		t.Fatalf("%s: no %s %s", path, kind, name)
	}
	return strings.Join(keep, "\n---\n")
}

func (c *cluster) createText(t *testing.T, name, text string) {
	t.Helper()
	p := filepath.Join(c.work, name)
	must0(t, os.WriteFile(p, []byte(text), 0o644))
	c.kubectl(t, "create", "-f", p)
}

// describe is kubectl describe, for failure messages.
func (c *cluster) describe(args ...string) string {
	out, _ := c.kubectlErr(append([]string{"describe"}, args...)...)
	return out
}

// events returns the messages of the events about a pod.
func (c *cluster) events(name string) string {
	out, _ := c.kubectlErr("get", "events", "--field-selector", "involvedObject.name="+name, "-o", "jsonpath={range .items[*]}{.type} {.reason}: {.message}{\"\\n\"}{end}")
	return out
}

// sealedQEMUs lists the shim's QEMU processes (their command lines name /run/sealpod/<sandbox>/).
func sealedQEMUs() []string {
	var out []string
	for _, p := range processesUnder("/run/sealpod/") {
		if strings.Contains(p, "qemu-system") {
			out = append(out, p)
		}
	}
	return out
}

// podTaps lists the Sealpod tap devices in every network namespace of the machine.
func podTaps(t *testing.T) []string {
	t.Helper()
	var taps []string
	nsList, _ := proc.RunErr("/", nil, "ip", "netns", "list")
	for _, l := range strings.Split(strings.TrimSpace(nsList), "\n") {
		ns := strings.Fields(l)
		if len(ns) == 0 {
			continue
		}
		links, _ := proc.RunErr("/", nil, "ip", "-n", ns[0], "-o", "link", "show")
		for _, ll := range strings.Split(links, "\n") {
			if strings.Contains(ll, "_sealpod") {
				taps = append(taps, ns[0]+": "+strings.TrimSpace(ll))
			}
		}
	}
	root, _ := proc.RunErr("/", nil, "ip", "-o", "link", "show")
	for _, ll := range strings.Split(root, "\n") {
		if strings.Contains(ll, "_sealpod") {
			taps = append(taps, "host: "+strings.TrimSpace(ll))
		}
	}
	return taps
}

// workloads: real-world manifests from ../shared that seal, and the StatefulSet and Job kinds
// (no shared StatefulSet seals: all three mount PersistentVolumeClaims; the set has no Job),
// run sealed on the cluster. Logs follow the sealed policy; exec is refused.
func (c *cluster) workloads(t *testing.T) {
	reg, guestReg := c.env["SEALPOD_REGISTRY"], c.env["SEALPOD_GUEST_REGISTRY"]
	// The guestbook's images, as tiny stand-ins (podapp) in the local registry: the owner
	// resolves gcr.io and registry.k8s.io tags through it (--mirror) and the guests pull
	// through the registry's address on the pod network (--guest-mirror, sealed).
	gb := filepath.Join(repopath.Shared(t, "manifests"), "web__guestbook__all-in-one__guestbook-all-in-one.yaml")
	var mirrors []string
	for _, m := range regexp.MustCompile(`(?m)^\s*image:\s*([^\s#]+)`).FindAllStringSubmatch(string(must(os.ReadFile(gb))), -1) {
		ref, err := name.ParseReference(m[1])
		must0(t, err)
		proc.Run(t, c.root, nil, filepath.Join(c.bin, "devregistry"), "push-binary", "--binary", filepath.Join(c.bin, "podapp"),
			"--path", "/podapp", "--ref", reg+"/"+ref.Context().RepositoryStr()+":"+ref.Identifier())
		r := ref.Context().RegistryStr()
		if r == name.DefaultRegistry {
			r = "docker.io"
		}
		mirrors = append(mirrors, "--mirror", r+"="+reg, "--guest-mirror", r+"="+guestReg)
	}
	in := filepath.Join(c.work, "guestbook.yaml")
	must0(t, os.WriteFile(in, must(os.ReadFile(gb)), 0o644))
	sealedGB := c.seal(t, in, "guestbook", mirrors...)

	// A StatefulSet (logs allowed) and a Job (logs denied) of our own, with canaries in the
	// sealed env and command.
	c.canaries = append(c.canaries, newCanary("canary-env-"), newCanary("canary-cmd-"))
	envCanary, cmdCanary := c.canaries[len(c.canaries)-2], c.canaries[len(c.canaries)-1]
	own := fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: ledger}
spec: {clusterIP: None, selector: {app: ledger}, ports: [{port: 8080}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: ledger}
spec:
  serviceName: ledger
  replicas: 1
  selector: {matchLabels: {app: ledger}}
  template:
    metadata: {labels: {app: ledger}}
    spec:
      containers:
      - name: ledger
        image: %[1]s
        command: ["/podapp", "serve", "%[2]s"]
        env:
        - {name: SEALPOD_GREETING, value: hello from a sealed StatefulSet}
        - {name: SEALPOD_CANARY, value: %[3]s}
        - name: POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        readinessProbe: {exec: {command: ["/podapp", "probe"]}, periodSeconds: 3}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: report
  annotations: {sealpod.io/logs: deny}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: report
        image: %[1]s
        command: ["/podapp", "job", "%[2]s"]
        env:
        - {name: SEALPOD_GREETING, value: the sealed report is done}
        - {name: SEALPOD_CANARY, value: %[3]s}
`, strings.Replace(c.podapp, reg, guestReg, 1), cmdCanary, envCanary)
	ownIn := filepath.Join(c.work, "own.yaml")
	must0(t, os.WriteFile(ownIn, []byte(own), 0o644))
	sealedOwn := c.seal(t, ownIn, "own-workloads")

	// All at once (four VMs boot together).
	t0 := time.Now()
	c.createText(t, "redis-replica.sealed.yaml", documents(t, sealedGB, "Deployment", "redis-replica"))
	c.kubectl(t, "create", "-f", sealedOwn)
	if _, err := c.kubectlErr("rollout", "status", "deployment/redis-replica", "--timeout=600s"); err != nil {
		t.Fatalf("sealed Deployment redis-replica (../shared guestbook) not Available: %v\n%s", err, c.describe("pods", "-l", "app=redis"))
	}
	t.Logf("sealed Deployment redis-replica (2 replicas, from ../shared) Available %v after kubectl create", time.Since(t0).Round(time.Millisecond))
	if _, err := c.kubectlErr("rollout", "status", "statefulset/ledger", "--timeout=600s"); err != nil {
		t.Fatalf("sealed StatefulSet ledger not Ready: %v\n%s", err, c.describe("pod", "ledger-0"))
	}
	t.Logf("sealed StatefulSet ledger Ready %v after kubectl create", time.Since(t0).Round(time.Millisecond))
	if _, err := c.kubectlErr("wait", "--for=condition=Complete", "job/report", "--timeout=600s"); err != nil {
		t.Fatalf("sealed Job report not Complete: %v\n%s", err, c.describe("job", "report"))
	}
	t.Logf("sealed Job report Complete %v after kubectl create", time.Since(t0).Round(time.Millisecond))
	if n := c.kubectl(t, "get", "deployment", "redis-replica", "-o", "jsonpath={.status.readyReplicas}"); n != "2" {
		t.Fatalf("redis-replica ready replicas %q, want 2", n)
	}
	if got := c.kubectl(t, "get", "pods", "-l", "app=redis", "-o", "jsonpath={.items[*].spec.runtimeClassName}"); got != "sealpod-sim sealpod-sim" {
		t.Fatalf("redis-replica pods' runtime classes %q", got)
	}
	if qemus := sealedQEMUs(); len(qemus) < 3 { // 2 redis-replica + ledger-0 (+ the greeter)
		t.Fatalf("want a QEMU VM per sealed pod, found %d", len(qemus))
	}

	// Logs: allowed by the StatefulSet's sealed policy, denied by the Job's.
	var logs string
	proc.WaitFor(t, "the StatefulSet's greeting in kubectl logs", 60*time.Second, func() bool {
		logs, _ = c.kubectlErr("logs", "ledger-0")
		return strings.Contains(logs, "greeting: hello from a sealed StatefulSet") && strings.Contains(logs, "pod namespace: default")
	})
	if strings.Contains(logs, envCanary) || strings.Contains(logs, cmdCanary) {
		t.Fatal("a canary is in the StatefulSet's logs")
	}
	if jl := c.kubectl(t, "logs", "job/report"); strings.TrimSpace(jl) != "" {
		t.Fatalf("kubectl logs of the Job whose sealed policy denies logs: %q, want nothing", jl)
	}
	if pl := c.kubectl(t, "logs", "-l", "app=redis", "--prefix"); !strings.Contains(pl, "greeting:") {
		t.Fatalf("redis-replica logs %q", pl)
	}
	// Exec: no sealpod.io/exec allow-list, so nothing — not even the sealed exec probe's argv,
	// which the agent runs itself for the kubelet's probe stub.
	for _, argv := range [][]string{{"/podapp", "job"}, {"/podapp", "probe"}} {
		if out, err := c.kubectlErr(append([]string{"exec", "ledger-0", "--"}, argv...)...); err == nil || strings.Contains(out, "job:") || strings.Contains(out, "probe ok") {
			t.Fatalf("kubectl exec %v into ledger-0 (no exec allow-list) was not refused: %q %v", argv, out, err)
		}
	}
	if out, err := c.kubectlErr("exec", "deployment/redis-replica", "--", "/podapp", "probe"); err == nil {
		t.Fatalf("kubectl exec into redis-replica (no exec probe: exec denied) was allowed: %q", out)
	}
}

// noPlaintext scans everything the host holds for the canaries of the sealed workloads still
// on the cluster: every etcd key, the cluster's state dir (containerd root and state, kubelet
// dirs, pod logs, registry, broker, logs), the shim's state, /var/log/pods, and every
// process's command line.
func (c *cluster) noPlaintext(t *testing.T) {
	if len(c.canaries) == 0 {
		t.Fatal("no canaries: the workload subtests did not run")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://127.0.0.1:23790"}, DialTimeout: 10 * time.Second})
	must0(t, err)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "", clientv3.WithPrefix())
	must0(t, err)
	// Positive control: the scan sees the sealed pods' objects (their names are in clear).
	var sawLedger bool
	for _, kv := range resp.Kvs {
		if bytes.Contains(kv.Key, []byte("/pods/default/ledger-0")) {
			sawLedger = true
		}
		for _, cn := range c.canaries {
			if bytes.Contains(kv.Value, []byte(cn)) || bytes.Contains(kv.Key, []byte(cn)) {
				t.Errorf("canary %s in etcd key %s", cn, kv.Key)
			}
		}
	}
	if !sawLedger || len(resp.Kvs) < 100 {
		t.Fatalf("etcd scan read %d keys without the pod ledger-0: not the cluster's etcd?", len(resp.Kvs))
	}
	t.Logf("etcd: %d keys read, no canary", len(resp.Kvs))
	for _, dir := range []string{c.state, "/run/sealpod", "/var/log/pods", "/var/log/containers"} {
		for _, cn := range c.canaries {
			if hits := scanFor(dir, []byte(cn)); len(hits) > 0 {
				t.Errorf("canary %s in host files: %v", cn, hits)
			}
		}
	}
	ents, _ := os.ReadDir("/proc")
	nproc := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		nproc++
		for _, cn := range c.canaries {
			if bytes.Contains(b, []byte(cn)) {
				t.Errorf("canary %s in the command line of process %s: %q", cn, e.Name(), b)
			}
		}
	}
	t.Logf("state dir, /run/sealpod, /var/log/pods and %d process command lines scanned, no canary", nproc)
}

// tamperImage pushes a copy of the secure image whose envelope for workload has one byte of
// its ciphertext changed, and returns the new image's pinned reference (as the node pulls it).
func tamperImage(t *testing.T, ref, workload string) string {
	t.Helper()
	d, err := name.NewDigest(ref, name.Insecure)
	must0(t, err)
	img, err := remote.Image(d)
	must0(t, err)
	layers, err := img.Layers()
	must0(t, err)
	target := "sealpod/sealed/" + workload + ".json"
	var out []v1.Layer
	changed := false
	for _, l := range layers {
		rc, err := l.Uncompressed()
		must0(t, err)
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tr := tar.NewReader(rc)
		hit := false
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			must0(t, err)
			data := must(io.ReadAll(tr))
			if strings.TrimPrefix(h.Name, "/") == target {
				// the last base64 character before the closing quote of the body
				i := bytes.LastIndexByte(data, '"') - 2
				if data[i] == 'A' {
					data[i] = 'B'
				} else {
					data[i] = 'A'
				}
				hit, changed = true, true
			}
			must0(t, tw.WriteHeader(h))
			_, err = tw.Write(data)
			must0(t, err)
		}
		rc.Close()
		must0(t, tw.Close())
		if !hit {
			out = append(out, l)
			continue
		}
		raw := buf.Bytes()
		nl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil })
		must0(t, err)
		out = append(out, nl)
	}
	if !changed {
		t.Fatalf("secure image %s has no %s", ref, target)
	}
	cfg := must(img.ConfigFile()).DeepCopy()
	cfg.RootFS.DiffIDs, cfg.History = nil, nil
	base, err := mutate.ConfigFile(empty.Image, cfg)
	must0(t, err)
	timg, err := mutate.AppendLayers(base, out...)
	must0(t, err)
	dst, err := name.NewTag(d.Context().String()+":tampered", name.Insecure)
	must0(t, err)
	must0(t, remote.Write(dst, timg))
	dig, err := timg.Digest()
	must0(t, err)
	return d.Context().String() + "@" + dig.String()
}

// podFrom writes a pod manifest from a sealed single-pod manifest with another name and
// another secure image.
func podFrom(t *testing.T, sealedPod, oldName, newName, oldImage, newImage string) string {
	t.Helper()
	s := strings.Replace(string(must(os.ReadFile(sealedPod))), "name: "+oldName+"\n", "name: "+newName+"\n", 1)
	if !strings.Contains(s, oldImage) {
		t.Fatalf("%s does not name %s", sealedPod, oldImage)
	}
	return strings.ReplaceAll(s, oldImage, newImage)
}

// faults: the broker down while pods start, a tampered secure image, a workload removed from
// the broker, and no QEMU or tap left behind by deleted pods.
func (c *cluster) faults(t *testing.T) {
	script := filepath.Join(c.root, "hack", "k8s", "cluster.sh")
	env := []string{"SEALPOD_CLUSTER_DIR=" + c.state}
	pod := func(name, extra string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: default%s}
spec:
  containers:
  - name: app
    image: %s
    command: ["/podapp", "serve"]
    env: [{name: SEALPOD_GREETING, value: hello from %s}]
`, name, extra, strings.Replace(c.podapp, c.env["SEALPOD_REGISTRY"], c.env["SEALPOD_GUEST_REGISTRY"], 1), name)
	}
	in := filepath.Join(c.work, "faults.yaml")
	must0(t, os.WriteFile(in, []byte(pod("patient", "")+"---\n"+pod("orphan", "")+"---\n"+pod("victim", "")), 0o644))
	sealed := c.seal(t, in, "faults")
	image := regexp.MustCompile(`sealpod\.io/image: (\S+)`).FindStringSubmatch(string(must(os.ReadFile(sealed))))[1]
	split := func(n string) string {
		p := filepath.Join(c.work, n+".sealed.yaml")
		must0(t, os.WriteFile(p, []byte(documents(t, sealed, "Pod", n)), 0o644))
		return p
	}

	t.Run("broker-down-while-starting", func(t *testing.T) {
		proc.Run(t, c.root, env, script, "kbs-stop")
		restarted := false
		defer func() {
			if !restarted {
				_, _ = proc.RunErr(c.root, env, script, "kbs-start")
			}
		}()
		c.kubectl(t, "create", "-f", split("patient"))
		// The pod's VM boots and its agent cannot reach the broker: not Ready meanwhile.
		time.Sleep(20 * time.Second)
		if ready := c.kubectl(t, "get", "pod", "patient", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`); ready == "True" {
			t.Fatal("pod Ready while the broker is down")
		}
		t0 := time.Now()
		proc.Run(t, c.root, env, script, "kbs-start")
		restarted = true
		if _, err := c.kubectlErr("wait", "--for=condition=Ready", "pod/patient", "--timeout=300s"); err != nil {
			t.Fatalf("pod not Ready after the broker came back: %v\n%s", err, c.describe("pod", "patient"))
		}
		t.Logf("pod Ready %v after the broker came back (events: %s)", time.Since(t0).Round(time.Millisecond), strings.ReplaceAll(strings.TrimSpace(c.events("patient")), "\n", "; "))
		c.kubectl(t, "delete", "pod", "patient", "--wait=true", "--timeout=120s")
	})

	t.Run("tampered-image", func(t *testing.T) {
		bad := tamperImage(t, image, "default.pod.victim")
		p := filepath.Join(c.work, "tampered.yaml")
		must0(t, os.WriteFile(p, []byte(podFrom(t, split("victim"), "victim", "tampered", image, bad)), 0o644))
		c.kubectl(t, "create", "-f", p)
		var ev string
		proc.WaitFor(t, "a Failed event for the pod of the tampered image", 240*time.Second, func() bool {
			ev = c.events("tampered")
			return strings.Contains(ev, "Warning Failed") && strings.Contains(ev, "default.pod.victim")
		})
		t.Logf("events:\n%s", ev)
		if !strings.Contains(ev, "host_data") {
			t.Fatalf("the event does not say that the envelope's digest is not the registered one:\n%s", ev)
		}
		if phase := c.kubectl(t, "get", "pod", "tampered", "-o", "jsonpath={.status.containerStatuses[0].ready}"); phase == "true" {
			t.Fatal("the pod of the tampered image is ready")
		}
		c.kubectl(t, "delete", "pod", "tampered", "--wait=true", "--timeout=120s")
	})

	t.Run("workload-removed", func(t *testing.T) {
		proc.Run(t, c.root, nil, filepath.Join(c.bin, "sealctl"), "kbs", "--kbs-dir", c.env["SEALPOD_KBS_DIR"], "workload", "rm", "default.pod.orphan")
		c.kubectl(t, "create", "-f", split("orphan"))
		var ev string
		proc.WaitFor(t, "a Failed event for the pod of the removed workload", 240*time.Second, func() bool {
			ev = c.events("orphan")
			return strings.Contains(ev, "Warning Failed") && strings.Contains(ev, "not registered")
		})
		t.Logf("events:\n%s", ev)
		if st := c.kubectl(t, "get", "pod", "orphan", "-o", "jsonpath={.status.phase}"); st == "Running" {
			if r := c.kubectl(t, "get", "pod", "orphan", "-o", "jsonpath={.status.containerStatuses[0].started}"); r == "true" {
				t.Fatal("the pod of a removed workload started")
			}
		}
		c.kubectl(t, "delete", "pod", "orphan", "--wait=true", "--timeout=120s")
	})
}

// noLeftovers: after the workloads and fault pods are deleted, only the greeter's VM remains
// and no tap device of a deleted pod is left in any network namespace.
func (c *cluster) noLeftovers(t *testing.T) {
	for _, o := range [][]string{{"deployment", "redis-replica"}, {"statefulset", "ledger"}, {"job", "report"}, {"pod", "hostvals"}} {
		c.kubectl(t, "delete", o[0], o[1], "--wait=true", "--timeout=180s", "--cascade=foreground")
	}
	proc.WaitFor(t, "the workloads' pods gone", 180*time.Second, func() bool {
		out, _ := c.kubectlErr("get", "pods", "-o", "name")
		return strings.TrimSpace(out) == "pod/greeter"
	})
	var qemus, taps []string
	proc.WaitFor(t, "one QEMU (the greeter's) and one tap", 60*time.Second, func() bool {
		qemus, taps = sealedQEMUs(), podTaps(t)
		return len(qemus) == 1 && len(taps) == 1
	})
	if !strings.Contains(qemus[0], c.vmDir) {
		t.Fatalf("the remaining QEMU is not the greeter's (%s): %s", c.vmDir, qemus[0])
	}
	t.Logf("left: the greeter's QEMU and tap (%s)", taps[0])
}
