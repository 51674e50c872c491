package node_test

// The node end-to-end suite (issue 6): a real containerd (Debian's package) started with its
// own root, state and socket, the Sealpod shim on its PATH, crictl built from the module
// proxy, a real sealpod-kbs with sim roots, a devregistry, and a two-container pod sealed
// with `sealctl image create --push`. It runs the pod through CRI exactly as the kubelet
// would (runp, pull, create, start, logs, exec, stop, rm) and compares with a plain runc pod.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealpod/sealpod/internal/testdeps"
	"github.com/sealpod/sealpod/tests/internal/proc"

	"github.com/sealpod/sealpod/internal/repopath"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/sealpod/sealpod/runtime-shim/installer"
)

// slirpHost is how the guest reaches the host's loopback under QEMU user networking.
const slirpHost = "10.0.2.2"

type node struct {
	root, work, bin string
	crictl          string
	ctrdRoot        string
	ctrdState       string
	ctrdSock        string
	ctrdLog         string
	sealpodState    string
	network         string // the shim's network mode: user or tap
	kbsURL          string // the broker URL sealed into envelopes (as the guest reaches it)
	regPort         int
	kbsPort         int
	kbsDir          string
	canary          string
}

func requireNode(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("the node end-to-end suite boots VMs under a real containerd: skipped with -short")
	}
	if os.Geteuid() != 0 {
		testdeps.Missing(t, "the node end-to-end suite needs root (containerd, mounts)")
	}
	for _, b := range []string{"containerd", "runc", "ctr", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(b); err != nil {
			testdeps.Missing(t, "%s not installed (make e2e-node installs Debian's containerd, runc and qemu-system-x86): %v", b, err)
		}
	}
}

func (n *node) crictlRun(t *testing.T, args ...string) string {
	t.Helper()
	return proc.Run(t, n.work, nil, n.crictl, append([]string{"--runtime-endpoint", "unix://" + n.ctrdSock, "--timeout", "300s"}, args...)...)
}

func (n *node) crictlErr(args ...string) (string, error) {
	return proc.RunErr(n.work, nil, n.crictl, append([]string{"--runtime-endpoint", "unix://" + n.ctrdSock, "--timeout", "300s"}, args...)...)
}

// containerdConfig is the node installer's containerd config (runtime-shim/installer): a
// standalone containerd under dir with the sealpod runtime added exactly as the installer adds
// it on a node, plus this test's registry mirror (plain HTTP on loopback).
func (n *node) containerdConfig(t *testing.T, dir, shimCfg string) []byte {
	t.Helper()
	base, err := installer.StandaloneConfig(installer.StandaloneOptions{Dir: dir, SandboxImage: "docker.io/local/pause:e2e",
		CNIBinDir: "/usr/lib/cni", CNIConfDir: filepath.Join(n.work, "cni"), RestrictOOMScoreAdj: true})
	if err != nil {
		t.Fatal(err)
	}
	// The shim finds its node config through the runtime options (ConfigPath), as the
	// installer writes it with --shim-config.
	cfg, err := installer.AddRuntime(base, installer.RuntimeOptions{ShimConfigPath: shimCfg})
	if err != nil {
		t.Fatal(err)
	}
	mirror := fmt.Sprintf("\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"127.0.0.1:%d\"]\n  endpoint = [\"http://127.0.0.1:%d\"]\n", n.regPort, n.regPort)
	return append(cfg, mirror...)
}

// tapGateway is the host side of the CNI ptp link in tap mode (pods get 10.244.77.0/24).
const tapGateway = "10.244.77.1"

func newNode(t *testing.T, network string) *node {
	t.Helper()
	requireNode(t)
	n := &node{root: repopath.Root(t), work: t.TempDir(), network: network}
	n.bin = filepath.Join(n.work, "bin")
	noCgo := []string{"CGO_ENABLED=0", "GOFLAGS=-buildvcs=false"}
	t0 := time.Now()
	n.crictl = strings.TrimSpace(proc.Run(t, n.root, nil, filepath.Join(n.root, "hack", "build-crictl.sh")))
	t.Logf("crictl %s ready in %v", n.crictl, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	proc.Run(t, n.root, noCgo, "go", "build", "-o", n.bin+"/", "./kbs/cmd/sealpod-kbs", "./ctl/cmd/sealctl", "./hack/cmd/devregistry",
		"./guest-image/cmd/mkguest", "./tests/node/internal/podapp", "./runtime-shim/cmd/containerd-shim-sealpod-v2")
	proc.Run(t, n.root, []string{"CGO_ENABLED=1", "GOFLAGS=-buildvcs=false"}, "go", "build", "-trimpath", "-tags", "netgo,osusergo,seccomp",
		"-ldflags", "-s -w -extldflags -static", "-o", filepath.Join(n.bin, "sealpod-agent"), "./agent/cmd/sealpod-agent")
	t.Logf("built shim, agent, sealpod-kbs, sealctl, mkguest, devregistry, podapp in %v", time.Since(t0).Round(time.Millisecond))

	// Registry with the workload image (the guest pulls it at 10.0.2.2).
	n.regPort = proc.FreePort(t)
	reg := fmt.Sprintf("127.0.0.1:%d", n.regPort)
	proc.Daemon(t, filepath.Join(n.work, "registry.log"), nil, filepath.Join(n.bin, "devregistry"), "serve", "--listen", reg)
	proc.WaitFor(t, "devregistry", 30*time.Second, func() bool { return proc.CanDial("tcp", reg) })

	// Key broker with sim roots.
	kbs := filepath.Join(n.bin, "sealpod-kbs")
	roots, key := filepath.Join(n.work, "sim-roots.pem"), filepath.Join(n.work, "sim-vcek.pem")
	proc.Run(t, n.root, nil, kbs, "sim-roots", "--out", roots, "--key-out", key, "--rsa-bits", "2048")
	n.kbsPort = proc.FreePort(t)
	n.kbsDir = filepath.Join(n.work, "kbs")
	proc.Run(t, n.root, nil, kbs, "init", "--dir", n.kbsDir, "--host", slirpHost, "--host", "127.0.0.1",
		"--url", fmt.Sprintf("https://%s:%d", slirpHost, n.kbsPort))
	proc.Daemon(t, filepath.Join(n.work, "kbs.log"), nil, kbs, "serve", "--dir", n.kbsDir, "--listen", fmt.Sprintf("127.0.0.1:%d", n.kbsPort),
		"--insecure-sim-roots", roots, "--log-format", "text")
	proc.WaitFor(t, "sealpod-kbs", 30*time.Second, func() bool { return proc.CanDial("tcp", fmt.Sprintf("127.0.0.1:%d", n.kbsPort)) })

	// The shim's node configuration; a short state dir (unix socket paths).
	sd, err := os.MkdirTemp("/run", "spn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sd) })
	n.sealpodState = sd
	shimCfg := filepath.Join(n.work, "shim.json")
	writeJSON(t, shimCfg, map[string]string{"tee": "sim", "simKey": key, "stateDir": sd, "network": network, "bootTimeout": "300s"})
	n.kbsURL = fmt.Sprintf("https://%s:%d", slirpHost, n.kbsPort)
	if network == "tap" {
		// Pods get a network namespace from CNI (ptp: a veth whose host side is the gateway,
		// IPAM state under the test dir). The broker listens on 127.0.0.1 only, so a guest
		// dialling the gateway is refused by the host's own kernel: nothing leaves the host.
		n.kbsURL = fmt.Sprintf("https://%s:%d", tapGateway, n.kbsPort)
		if err := os.MkdirAll(filepath.Join(n.work, "cni"), 0o755); err != nil {
			t.Fatal(err)
		}
		writeJSON(t, filepath.Join(n.work, "cni", "10-sealpod-e2e.conflist"), map[string]any{
			"cniVersion": "0.4.0", "name": "sealpod-e2e",
			"plugins": []any{map[string]any{"type": "ptp", "ipMasq": false, "mtu": 1500, "ipam": map[string]any{
				"type": "host-local", "dataDir": filepath.Join(n.work, "cni-ipam"),
				"ranges": []any{[]any{map[string]any{"subnet": "10.244.77.0/24", "gateway": tapGateway}}},
				"routes": []any{map[string]any{"dst": "0.0.0.0/0"}}}}},
		})
	}

	// containerd with the shim on its PATH.
	ctrdDir := filepath.Join(n.work, "containerd")
	n.ctrdRoot, n.ctrdState = filepath.Join(ctrdDir, "root"), filepath.Join(ctrdDir, "state")
	n.ctrdSock = installer.StandaloneSocket(ctrdDir)
	if err := os.MkdirAll(filepath.Join(n.work, "cni"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(n.work, "containerd.toml")
	if err := os.WriteFile(cfgPath, n.containerdConfig(t, ctrdDir, shimCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	n.ctrdLog = filepath.Join(n.work, "containerd.log")
	proc.Daemon(t, n.ctrdLog, []string{"PATH=" + n.bin + ":" + os.Getenv("PATH"), "SEALPOD_SHIM_CONFIG=/nonexistent/shim.json"},
		"containerd", "--config", cfgPath, "--log-level", "info")
	proc.WaitFor(t, "containerd", 30*time.Second, func() bool { return proc.CanDial("unix", n.ctrdSock) })
	t.Cleanup(func() { n.removeAllPods(t); removeE2ECgroups() })

	n.importPause(t)
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	n.canary = "canary-" + hex.EncodeToString(b)
	return n
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// removeAllPods stops and removes whatever pods are left (so containerd's shims end).
func (n *node) removeAllPods(t *testing.T) {
	out, err := n.crictlErr("pods", "-q")
	if err != nil {
		return
	}
	for _, id := range strings.Fields(out) {
		_, _ = n.crictlErr("stopp", id)
		_, _ = n.crictlErr("rmp", "-f", id)
	}
}

// importPause builds the sandbox image (podapp pause) and imports it into containerd.
func (n *node) importPause(t *testing.T) {
	t.Helper()
	tarPath := filepath.Join(n.work, "pause.tar")
	if err := writeImageTar(filepath.Join(n.bin, "podapp"), "docker.io/local/pause:e2e", tarPath); err != nil {
		t.Fatal(err)
	}
	proc.Run(t, n.work, nil, "ctr", "--address", n.ctrdSock, "-n", "k8s.io", "images", "import", tarPath)
}

// sealedPod is the output of sealctl for the test pod.
type sealedPod struct {
	annotations map[string]string
	image       string // the secure image (127.0.0.1:port/...@sha256:...)
	workload    string
}

func (n *node) seal(t *testing.T, name string) *sealedPod {
	t.Helper()
	reg := fmt.Sprintf("127.0.0.1:%d", n.regPort)
	pushed := strings.TrimSpace(proc.Run(t, n.root, nil, filepath.Join(n.bin, "devregistry"), "push-binary", "--binary", filepath.Join(n.bin, "podapp"),
		"--ref", reg+"/sealpod/podapp:e2e", "--path", "/podapp"))
	guestRef := strings.Replace(pushed, "127.0.0.1:", slirpHost+":", 1)

	// The measured guest, allowed to pull from the plain-HTTP devregistry.
	guest := filepath.Join(n.work, "guest")
	if _, err := os.Stat(guest); err != nil {
		cmdline := fmt.Sprintf("console=ttyS0 quiet panic=-1 sealpod.insecure_registries=%s:%d", slirpHost, n.regPort)
		proc.Run(t, n.root, nil, filepath.Join(n.bin, "mkguest"), "--init", filepath.Join(n.bin, "sealpod-agent"), "--out", guest, "--cmdline", cmdline)
	}
	meta := objectMeta(name)
	// The owner's exec allow-list: the host may exec exactly this argv in "server".
	meta.Annotations = map[string]string{"sealpod.io/exec": `{"server": [["/podapp", "probe"]]}`}
	pod := corev1.Pod{
		TypeMeta:   metaType(),
		ObjectMeta: meta,
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Image: guestRef, Command: []string{"/podapp", "init"}}},
			Containers: []corev1.Container{{Name: "server", Image: guestRef, Command: []string{"/podapp", "serve"},
				Env: []corev1.EnvVar{{Name: "SEALPOD_GREETING", Value: "hello from " + name}, {Name: "SEALPOD_CANARY", Value: n.canary},
					// A downward-API value: filled by the node (shim), not sealed.
					{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}},
				// The exec probe stays sealed; the placeholder's stub is answered by the agent.
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/podapp", "probe"}}}}}},
		},
	}
	podYAML, err := yaml.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(n.work, name+".yaml")
	if err := os.WriteFile(in, podYAML, 0o644); err != nil {
		t.Fatal(err)
	}
	// sealctl registers with the broker on loopback; the envelope names the guest-facing URL.
	adminCfg := filepath.Join(n.kbsDir, "admin", "sealctl-kbs.json")
	b, err := os.ReadFile(adminCfg)
	if err != nil {
		t.Fatal(err)
	}
	hostCfg := filepath.Join(n.kbsDir, "admin", "host-kbs.json")
	if err := os.WriteFile(hostCfg, bytes.ReplaceAll(b, []byte(slirpHost+":"), []byte("127.0.0.1:")), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(n.work, name+".sealed.yaml")
	proc.Run(t, n.root, nil, filepath.Join(n.bin, "sealctl"), "image", "create", "-f", in, "--guest", guest, "--tee", "sim",
		"--kbs", n.kbsURL, "--kbs-ca", filepath.Join(n.kbsDir, "tls", "ca.pem"),
		"--kbs-config", hostCfg, "--push", reg+"/sealpod/"+name+"-sealed:e2e", "--insecure-registry", "--output-file", out)
	sb, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sb, []byte(n.canary)) {
		t.Fatal("the sealed manifest contains the canary")
	}
	var sealed corev1.Pod
	if err := yaml.Unmarshal(sb, &sealed); err != nil {
		t.Fatalf("sealed manifest: %v", err)
	}
	sp := &sealedPod{annotations: map[string]string{}, image: sealed.Spec.Containers[0].Image, workload: sealed.Annotations["sealpod.io/workload"]}
	for k, v := range sealed.Annotations {
		if strings.HasPrefix(k, "sealpod.io/") {
			sp.annotations[k] = v
		}
	}
	if sp.workload == "" || !strings.Contains(sp.image, "@sha256:") {
		t.Fatalf("sealed manifest: workload %q image %q", sp.workload, sp.image)
	}
	return sp
}

// podConfig writes crictl's pod sandbox config.
func (n *node) podConfig(t *testing.T, name, uid string, ann map[string]string) string {
	t.Helper()
	p := filepath.Join(n.work, name+"-pod.json")
	logDir := filepath.Join(n.work, "logs", name)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeJSON(t, p, map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": uid, "attempt": 0},
		"annotations":   ann,
		"log_directory": logDir,
		"linux": map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": n.podNetworkMode()}},
			// As the kubelet sends them: the pod cgroup (cgroupfs driver) and the sum of the
			// containers' limits (containerd turns them into io.kubernetes.cri.sandbox-*
			// annotations; the shim refuses a guest.json larger than them).
			"cgroup_parent": podCgroupParent(uid),
			"resources":     map[string]any{"memory_limit_in_bytes": 1 << 30, "cpu_period": 100000, "cpu_quota": 100000}},
	})
	return p
}

// e2eCgroup is the test's cgroup tree (below every hierarchy's root).
const e2eCgroup = "/sealpod-e2e"

func podCgroupParent(uid string) string { return e2eCgroup + "/pod-" + uid }

// removeE2ECgroups removes the test's cgroup tree, deepest first, in every hierarchy.
func removeE2ECgroups() {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, r := range roots {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(r, e2eCgroup), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(dirs[i])
		}
	}
}

// checkConfined checks how the pod's QEMU runs (issue 12): not as root, under its seccomp
// sandbox (Seccomp: 2 = filter mode, -sandbox on the command line), in the pod's cgroup.
func checkConfined(t *testing.T, pid int, podID, uid string) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, l := range strings.Split(string(status), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	for _, k := range []string{"Uid", "Gid"} {
		for _, id := range strings.Fields(fields[k]) {
			if id == "0" {
				t.Errorf("QEMU pid %d %s: %s: runs as root", pid, k, fields[k])
			}
		}
	}
	if fields["Groups"] != "" {
		t.Errorf("QEMU pid %d keeps supplementary groups %q", pid, fields["Groups"])
	}
	if fields["Seccomp"] != "2" || fields["NoNewPrivs"] != "1" {
		t.Errorf("QEMU pid %d: Seccomp %q NoNewPrivs %q, want its seccomp sandbox (2, 1)", pid, fields["Seccomp"], fields["NoNewPrivs"])
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !bytes.Contains(cmdline, []byte("\x00-sandbox\x00on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny\x00")) {
		t.Errorf("QEMU pid %d runs without -sandbox: %q", pid, cmdline)
	}
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	want := podCgroupParent(uid) + "/" + podID
	found := false
	for _, l := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) == 3 && f[2] == want && (f[1] == "memory" || f[0] == "0" && f[1] == "" && !strings.Contains(string(cg), ":memory:")) {
			found = true
		}
	}
	if !found {
		t.Errorf("QEMU pid %d is not in the pod's cgroup %s:\n%s", pid, want, cg)
	}
	t.Logf("QEMU pid %d: Uid %s, Gid %s, Seccomp %s, cgroup %s", pid, fields["Uid"], fields["Gid"], fields["Seccomp"], want)
}

func (n *node) containerConfig(t *testing.T, pod, name, image string, command []string) string {
	t.Helper()
	p := filepath.Join(n.work, pod+"-"+name+".json")
	c := map[string]any{"metadata": map[string]any{"name": name}, "image": map[string]any{"image": image}, "log_path": name + ".log"}
	if command != nil {
		c["command"] = command
	}
	writeJSON(t, p, c)
	return p
}

type inspect struct {
	Status struct {
		State    string `json:"state"`
		ExitCode int    `json:"exitCode"`
		Reason   string `json:"reason"`
		Message  string `json:"message"`
	} `json:"status"`
	Info struct {
		Pid int `json:"pid"`
	} `json:"info"`
}

func (n *node) inspect(t *testing.T, id string) inspect {
	t.Helper()
	var in inspect
	if err := json.Unmarshal([]byte(n.crictlRun(t, "inspect", "-o", "json", id)), &in); err != nil {
		t.Fatal(err)
	}
	return in
}

func (n *node) waitExited(t *testing.T, id string) inspect {
	t.Helper()
	var in inspect
	proc.WaitFor(t, "container "+id+" to exit", 120*time.Second, func() bool {
		in = n.inspect(t, id)
		return in.Status.State == "CONTAINER_EXITED"
	})
	return in
}

// phaseLine matches the shim's phase log lines in containerd's log.
var phaseRe = regexp.MustCompile(`msg="sealpod phase" .*?(phase=.*)`)

func (n *node) phases(t *testing.T) []string {
	b, err := os.ReadFile(n.ctrdLog)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if m := phaseRe.FindStringSubmatch(sc.Text()); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

// qemuPids lists QEMU processes whose command line names dir.
func qemuPids(dir string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), "qemu-system") && strings.Contains(string(b), dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func tapDevices() []string {
	var taps []string
	ents, _ := os.ReadDir("/sys/class/net")
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join("/sys/class/net", e.Name(), "tun_flags")); err == nil {
			taps = append(taps, e.Name())
		}
	}
	return taps
}

func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb
		}
	}
	return -1
}

// scanFor reports the files under dirs (regular files only) that contain needle.
func scanFor(dirs []string, needle []byte) []string {
	var hits []string
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil || !e.Type().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err == nil && bytes.Contains(b, needle) {
				hits = append(hits, p)
			}
			return nil
		})
	}
	return hits
}

// podNetworkMode is the CRI NamespaceMode of pod networking: NODE (2) under user-mode
// networking, POD (0, a CNI namespace) for tap.
func (n *node) podNetworkMode() int {
	if n.network == "tap" {
		return 0
	}
	return 2
}

func TestNode(t *testing.T) {
	n := newNode(t, "user")
	sp := n.seal(t, "greeter")
	t0 := time.Now()
	n.crictlRun(t, "pull", sp.image)
	t.Logf("crictl pull of the secure image: %v", time.Since(t0).Round(time.Millisecond))

	t.Run("sealed-pod", func(t *testing.T) {
		ann := map[string]string{}
		for k, v := range sp.annotations {
			ann[k] = v
		}
		podCfg := n.podConfig(t, "greeter", "uid-greeter", ann)
		t0 := time.Now()
		pod := strings.TrimSpace(n.crictlRun(t, "runp", "--runtime", "sealpod", podCfg))
		runp := time.Since(t0)

		initCfg := n.containerConfig(t, "greeter", "init", sp.image, nil)
		t0 = time.Now()
		initID := strings.TrimSpace(n.crictlRun(t, "create", pod, initCfg, podCfg))
		n.crictlRun(t, "start", initID)
		startInit := time.Since(t0) // VM boot + attest + unseal + pull + start
		if in := n.waitExited(t, initID); in.Status.ExitCode != 0 {
			t.Fatalf("init container exited %d (%s: %s)", in.Status.ExitCode, in.Status.Reason, in.Status.Message)
		}
		if logs := n.crictlRun(t, "logs", initID); !strings.Contains(logs, "init done") {
			t.Fatalf("init logs %q", logs)
		}

		srvCfg := n.containerConfig(t, "greeter", "server", sp.image, nil)
		t0 = time.Now()
		srv := strings.TrimSpace(n.crictlRun(t, "create", pod, srvCfg, podCfg))
		n.crictlRun(t, "start", srv)
		startSrv := time.Since(t0)
		if in := n.inspect(t, srv); in.Status.State != "CONTAINER_RUNNING" {
			t.Fatalf("server state %s", in.Status.State)
		}
		var logs string
		proc.WaitFor(t, "the greeting in crictl logs", 60*time.Second, func() bool {
			logs, _ = n.crictlErr("logs", srv)
			return strings.Contains(logs, "greeting: hello from greeter") && strings.Contains(logs, "pod namespace: default")
		})
		qemu := qemuPids(n.sealpodState)
		if len(qemu) != 1 {
			t.Fatalf("%d QEMU processes for the pod, want 1", len(qemu))
		}
		rss := rssKiB(qemu[0])
		qemuCmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", qemu[0]))
		checkConfined(t, qemu[0], pod, "uid-greeter")

		// crictl exec of the allow-listed argv runs (its output comes back through the shim);
		// any other argv is refused by the agent.
		if out := n.crictlRun(t, "exec", srv, "/podapp", "probe"); strings.TrimSpace(out) != "probe ok" {
			t.Fatalf("allowed exec printed %q", out)
		}
		out, err := n.crictlErr("exec", srv, "/podapp", "init")
		if err == nil || strings.Contains(out, "init done") {
			t.Fatalf("crictl exec was not refused: %q %v", out, err)
		}
		if !strings.Contains(strings.ToLower(err.Error()), "not allowed") && !strings.Contains(strings.ToLower(err.Error()), "denied") {
			t.Fatalf("crictl exec refused without a readable reason: %v", err)
		}
		t.Logf("crictl exec refused: %v", reason(err.Error()))

		// crictl stats: the guest's numbers, through the shim's cgroup v1 metrics.
		var stats struct {
			Stats []struct {
				Memory struct {
					WorkingSetBytes struct {
						Value string `json:"value"`
					} `json:"workingSetBytes"`
				} `json:"memory"`
			} `json:"stats"`
		}
		if err := json.Unmarshal([]byte(n.crictlRun(t, "stats", "-o", "json", "--id", srv)), &stats); err != nil {
			t.Fatal(err)
		}
		if len(stats.Stats) != 1 || stats.Stats[0].Memory.WorkingSetBytes.Value == "" || stats.Stats[0].Memory.WorkingSetBytes.Value == "0" {
			t.Fatalf("crictl stats: %+v", stats)
		}
		t.Logf("crictl stats: server working set %s bytes (in the guest)", stats.Stats[0].Memory.WorkingSetBytes.Value)

		// The canary is nowhere host-visible while the pod runs.
		if bytes.Contains(qemuCmdline, []byte(n.canary)) {
			t.Fatal("the canary is on QEMU's command line")
		}
		if hits := scanFor([]string{n.ctrdRoot, n.ctrdState, n.sealpodState, n.ctrdLog, filepath.Join(n.work, "logs")}, []byte(n.canary)); len(hits) > 0 {
			t.Fatalf("the canary appears in host-visible files: %v", hits)
		}

		t0 = time.Now()
		n.crictlRun(t, "stop", "--timeout", "30", srv)
		stop := time.Since(t0)
		if in := n.waitExited(t, srv); in.Status.ExitCode != 3 {
			t.Fatalf("server exit code %d after stop, want 3", in.Status.ExitCode)
		}
		if logs, _ := n.crictlErr("logs", srv); !strings.Contains(logs, "terminating") {
			t.Fatalf("server logs after stop %q", logs)
		}
		n.crictlRun(t, "stopp", pod)
		n.crictlRun(t, "rmp", pod)
		proc.WaitFor(t, "QEMU to go", 30*time.Second, func() bool { return len(qemuPids(n.sealpodState)) == 0 })
		if taps := tapDevices(); len(taps) > 0 {
			t.Fatalf("tap devices left: %v", taps)
		}
		if ents, _ := os.ReadDir(n.sealpodState); len(ents) > 0 {
			t.Fatalf("shim state left in %s: %d entries", n.sealpodState, len(ents))
		}
		if hits := scanFor([]string{n.ctrdRoot, n.ctrdState, n.ctrdLog, filepath.Join(n.work, "logs")}, []byte(n.canary)); len(hits) > 0 {
			t.Fatalf("the canary appears in host-visible files: %v", hits)
		}
		t.Logf("sealed pod: runp %v | init create+start (VM boot, attest, unseal, pull, start) %v | server create+start %v | stop %v | QEMU RSS %d KiB",
			runp.Round(time.Millisecond), startInit.Round(time.Millisecond), startSrv.Round(time.Millisecond), stop.Round(time.Millisecond), rss)
		for _, p := range n.phases(t) {
			t.Logf("shim phase %s", p)
		}
	})

	t.Run("runc-pod", func(t *testing.T) {
		podCfg := n.podConfig(t, "plain", "uid-plain", nil)
		t0 := time.Now()
		pod := strings.TrimSpace(n.crictlRun(t, "runp", podCfg))
		runp := time.Since(t0)
		t0 = time.Now()
		initID := strings.TrimSpace(n.crictlRun(t, "create", pod, n.containerConfig(t, "plain", "init", "docker.io/local/pause:e2e", []string{"/podapp", "init"}), podCfg))
		n.crictlRun(t, "start", initID)
		startInit := time.Since(t0)
		if in := n.waitExited(t, initID); in.Status.ExitCode != 0 {
			t.Fatalf("init exit %d", in.Status.ExitCode)
		}
		t0 = time.Now()
		srv := strings.TrimSpace(n.crictlRun(t, "create", pod, n.containerConfig(t, "plain", "server", "docker.io/local/pause:e2e", []string{"/podapp", "serve"}), podCfg))
		n.crictlRun(t, "start", srv)
		startSrv := time.Since(t0)
		proc.WaitFor(t, "the runc pod's greeting", 30*time.Second, func() bool {
			logs, _ := n.crictlErr("logs", srv)
			return strings.Contains(logs, "greeting: ")
		})
		rss := rssKiB(n.inspect(t, srv).Info.Pid)
		n.crictlRun(t, "stop", "--timeout", "30", srv)
		if in := n.waitExited(t, srv); in.Status.ExitCode != 3 {
			t.Fatalf("runc server exit %d, want 3", in.Status.ExitCode)
		}
		n.crictlRun(t, "stopp", pod)
		n.crictlRun(t, "rmp", pod)
		t.Logf("runc pod: runp %v | init create+start %v | server create+start %v | server RSS %d KiB",
			runp.Round(time.Millisecond), startInit.Round(time.Millisecond), startSrv.Round(time.Millisecond), rss)
	})

	t.Run("vm-crash", func(t *testing.T) {
		podCfg := n.podConfig(t, "crash", "uid-crash", sp.annotations)
		pod := strings.TrimSpace(n.crictlRun(t, "runp", "--runtime", "sealpod", podCfg))
		// The agent enforces the sealed order: the init container first.
		initID := strings.TrimSpace(n.crictlRun(t, "create", pod, n.containerConfig(t, "crash", "init", sp.image, nil), podCfg))
		n.crictlRun(t, "start", initID)
		if in := n.waitExited(t, initID); in.Status.ExitCode != 0 {
			t.Fatalf("init exit %d", in.Status.ExitCode)
		}
		srv := strings.TrimSpace(n.crictlRun(t, "create", pod, n.containerConfig(t, "crash", "server", sp.image, nil), podCfg))
		n.crictlRun(t, "start", srv)
		qemu := qemuPids(n.sealpodState)
		if len(qemu) != 1 {
			t.Fatalf("%d QEMU processes, want 1", len(qemu))
		}
		if err := syscall.Kill(qemu[0], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if in := n.waitExited(t, srv); in.Status.ExitCode != 255 {
			t.Fatalf("server exit code %d after the VM died, want 255", in.Status.ExitCode)
		}
		n.crictlRun(t, "stopp", pod)
		n.crictlRun(t, "rmp", pod)
		proc.WaitFor(t, "QEMU to go", 30*time.Second, func() bool { return len(qemuPids(n.sealpodState)) == 0 })
		if ents, _ := os.ReadDir(n.sealpodState); len(ents) > 0 {
			t.Fatalf("shim state left in %s: %d entries", n.sealpodState, len(ents))
		}
	})

	t.Run("tampered-envelope", func(t *testing.T) {
		ref := n.tamperedImage(t, sp)
		n.crictlRun(t, "pull", ref)
		podCfg := n.podConfig(t, "tampered", "uid-tampered", sp.annotations)
		pod := strings.TrimSpace(n.crictlRun(t, "runp", "--runtime", "sealpod", podCfg))
		id := strings.TrimSpace(n.crictlRun(t, "create", pod, n.containerConfig(t, "tampered", "init", ref, nil), podCfg))
		out, err := n.crictlErr("start", id)
		if err == nil {
			t.Fatalf("a container with a tampered envelope started: %s", out)
		}
		in := n.inspect(t, id)
		msg := in.Status.Reason + ": " + in.Status.Message
		if in.Status.State != "CONTAINER_EXITED" || !strings.Contains(strings.ToLower(msg), "host_data") {
			t.Fatalf("tampered envelope: state %s, reason %q", in.Status.State, msg)
		}
		t.Logf("tampered envelope refused: %s", firstLine(msg))
		n.crictlRun(t, "stopp", pod)
		n.crictlRun(t, "rmp", pod)
		proc.WaitFor(t, "QEMU to go", 30*time.Second, func() bool { return len(qemuPids(n.sealpodState)) == 0 })
	})
}

// reason is the innermost gRPC status message of a crictl error.
func reason(s string) string {
	if i := strings.LastIndex(s, "desc = "); i >= 0 {
		s = s[i+len("desc = "):]
	}
	return firstLine(s)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
