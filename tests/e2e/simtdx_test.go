//go:build e2e

package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/tests/internal/proc"
)

// simTDX (issue 14 item 7): the node offers sim and sim-tdx (hack/k8s/cluster.sh installs it
// with --tee sim,sim-tdx and the fake Intel PCK key; the broker's roots file holds the fake
// Intel root). A pod sealed with `sealctl image create --tee sim-tdx` is scheduled through the
// sealpod-sim-tdx RuntimeClass, boots under the shim's simulated TDX and becomes Ready: its
// agent's TDX v4 quote passed the broker's real TDX verifier (MRTD/RTMR policy, MRCONFIGID =
// envelope digest). A pod sealed for sim-tdx with a registration whose RTMR[1] is not the
// kernel's is refused by the broker and never starts.
func (c *cluster) simTDX(t *testing.T) {
	// The suite's guest bundle (mkguest around the real agent, the EFI-stub kernel) carries the
	// sim-tdx reference value.
	var gj struct {
		Measurements map[string]json.RawMessage `json:"measurements"`
	}
	must0(t, json.Unmarshal(must(os.ReadFile(filepath.Join(c.guest, "guest.json"))), &gj))
	if len(gj.Measurements["sim-tdx"]) == 0 {
		t.Fatalf("the guest bundle %s has no sim-tdx measurement", c.guest)
	}
	guestRef := strings.Replace(c.podapp, c.env["SEALPOD_REGISTRY"], c.env["SEALPOD_GUEST_REGISTRY"], 1)
	pod := func(name, greeting string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: default
spec:
  containers:
  - name: server
    image: %s
    command: ["/podapp", "serve"]
    env:
    - {name: SEALPOD_GREETING, value: %s}
    - name: POD_NAMESPACE
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    readinessProbe: {exec: {command: ["/podapp", "probe"]}, periodSeconds: 5}
`, name, guestRef, greeting)
	}
	okBefore := c.kbsVerifications(t, "sim-tdx", "ok")

	t.Run("ready", func(t *testing.T) {
		in := filepath.Join(c.work, "greeter-tdx.yaml")
		must0(t, os.WriteFile(in, []byte(pod("greeter-tdx", "hello from a sealed sim-tdx pod")), 0o644))
		t0 := time.Now()
		out := c.sealFor(t, "sim-tdx", c.guest, in, "greeter-tdx:e2e")
		t.Logf("sealed for sim-tdx and pushed in %v", time.Since(t0).Round(time.Millisecond))
		sealed := string(must(os.ReadFile(out)))
		if !strings.Contains(sealed, "runtimeClassName: sealpod-sim-tdx") {
			t.Fatalf("sealed manifest without runtimeClassName sealpod-sim-tdx:\n%s", sealed)
		}
		// The registration allows sim-tdx only, with the bundle's MRTD and RTMRs.
		wl := c.workload(t, "default.pod.greeter-tdx")
		if strings.Join(wl.TEEs, ",") != "sim-tdx" || len(wl.Measurements["sim-tdx"]) == 0 || len(wl.Measurements["sim"]) != 0 {
			t.Fatalf("registration tees %v measurements %v, want sim-tdx only", wl.TEEs, wl.Measurements)
		}

		t0 = time.Now()
		c.kubectl(t, "create", "-f", out)
		if _, err := c.kubectlErr("wait", "--for=condition=Ready", "pod/greeter-tdx", "--timeout=600s"); err != nil {
			t.Fatalf("sim-tdx pod not Ready: %v\n%s\nevents:\n%s", err, c.describe("pod", "greeter-tdx"), c.events("greeter-tdx"))
		}
		t.Logf("sim-tdx pod Ready %v after kubectl create (pull, VM boot, TDX quote, attest, unseal, in-guest pull, start)", time.Since(t0).Round(time.Millisecond))
		var logs string
		proc.WaitFor(t, "the greeting in kubectl logs", 60*time.Second, func() bool {
			logs, _ = c.kubectlErr("logs", "greeter-tdx")
			return strings.Contains(logs, "greeting: hello from a sealed sim-tdx pod") && strings.Contains(logs, "pod namespace: default")
		})
		// It runs in the shim's QEMU, not in runc.
		crictl := strings.TrimSpace(string(must(os.ReadFile(filepath.Join(c.state, "crictl")))))
		sock := "unix://" + filepath.Join(c.state, "containerd", "containerd.sock")
		sandbox := strings.TrimSpace(proc.Run(t, c.work, nil, crictl, "-r", sock, "pods", "-q", "--name", "greeter-tdx", "--namespace", "default", "--state", "ready"))
		if vms := processesUnder("/run/sealpod/" + sandbox + "/"); sandbox == "" || len(vms) != 1 || !strings.Contains(vms[0], "qemu-system") {
			t.Fatalf("want one QEMU process of the shim for sandbox %q, found %v", sandbox, vms)
		}
		// The broker verified TDX evidence for this workload: its audit log has the appraisal
		// (attest, or release with the key) of default.pod.greeter-tdx under tee sim-tdx only,
		// and its verification counter for sim-tdx went up.
		var rel []string
		for _, e := range c.auditEvents(t) {
			if e.Workload == "default.pod.greeter-tdx" && (e.Kind == "release" || e.Kind == "attest") && e.Result == "ok" {
				rel = append(rel, e.Kind+"/"+e.TEE)
			}
		}
		if len(rel) == 0 {
			t.Fatal("audit: no successful appraisal of default.pod.greeter-tdx")
		}
		for _, r := range rel {
			if !strings.HasSuffix(r, "/sim-tdx") {
				t.Fatalf("audit: appraisals of default.pod.greeter-tdx %v, want tee sim-tdx only", rel)
			}
		}
		okAfter := c.kbsVerifications(t, "sim-tdx", "ok")
		if okAfter <= okBefore {
			t.Fatalf("sealpod_kbs_verifications_total{tee=sim-tdx,result=ok}: %v before, %v after", okBefore, okAfter)
		}
		t.Logf("broker audit for default.pod.greeter-tdx: %v; sim-tdx verifications ok %v -> %v", rel, okBefore, okAfter)
		t0 = time.Now()
		c.kubectl(t, "delete", "pod", "greeter-tdx", "--wait=true", "--timeout=120s")
		t.Logf("sim-tdx pod deleted in %v", time.Since(t0).Round(time.Millisecond))
	})

	t.Run("wrong-rtmr-refused", func(t *testing.T) {
		// The same guest, but the registration's RTMR[1] (the kernel) is not what the
		// simulated TDX measures: the broker's TDX verifier refuses the quote.
		bad := filepath.Join(c.work, "guest-bad-rtmr1")
		copyGuestWithRTMR1Flipped(t, c.guest, bad)
		in := filepath.Join(c.work, "greeter-tdx-bad.yaml")
		must0(t, os.WriteFile(in, []byte(pod("greeter-tdx-bad", "hello from a refused pod")), 0o644))
		out := c.sealFor(t, "sim-tdx", bad, in, "greeter-tdx-bad:e2e")
		rejectedBefore := c.kbsVerifications(t, "sim-tdx", "measurement")
		t0 := time.Now()
		c.kubectl(t, "create", "-f", out)
		var ev string
		proc.WaitFor(t, "a Failed event for the pod with the wrong RTMR[1]", 300*time.Second, func() bool {
			ev = c.events("greeter-tdx-bad")
			return strings.Contains(ev, "Warning Failed")
		})
		t.Logf("refused %v after kubectl create; events:\n%s", time.Since(t0).Round(time.Millisecond), ev)
		if !strings.Contains(ev, "measurement") {
			t.Fatalf("the event does not say the measurement was refused:\n%s", ev)
		}
		if r := c.kubectl(t, "get", "pod", "greeter-tdx-bad", "-o", "jsonpath={.status.containerStatuses[0].started}"); r == "true" {
			t.Fatal("the pod with the wrong RTMR[1] started")
		}
		denied := 0
		for _, e := range c.auditEvents(t) {
			if e.Workload == "default.pod.greeter-tdx-bad" && e.TEE == "sim-tdx" && e.Result == "denied" && strings.Contains(e.Reason, "measurement") {
				denied++
			}
			if e.Workload == "default.pod.greeter-tdx-bad" && e.Result == "ok" && (e.Kind == "release" || e.Kind == "attest") {
				t.Fatalf("audit: the broker released to the wrong-RTMR pod: %+v", e)
			}
		}
		if denied == 0 {
			t.Fatal("audit: no sim-tdx measurement refusal for default.pod.greeter-tdx-bad")
		}
		if after := c.kbsVerifications(t, "sim-tdx", "measurement"); after <= rejectedBefore {
			t.Fatalf("sealpod_kbs_verifications_total{tee=sim-tdx,result=measurement}: %v before, %v after", rejectedBefore, after)
		}
		c.kubectl(t, "delete", "pod", "greeter-tdx-bad", "--wait=true", "--timeout=120s")
	})
}

// copyGuestWithRTMR1Flipped copies the guest bundle src to dst with one hex digit of
// guest.json's measurements["sim-tdx"].rtmrs[1] changed.
func copyGuestWithRTMR1Flipped(t *testing.T, src, dst string) {
	t.Helper()
	must0(t, os.MkdirAll(dst, 0o755))
	ents, err := os.ReadDir(src)
	must0(t, err)
	for _, e := range ents {
		if e.Type().IsRegular() && e.Name() != "guest.json" {
			must0(t, os.WriteFile(filepath.Join(dst, e.Name()), must(os.ReadFile(filepath.Join(src, e.Name()))), 0o644))
		}
	}
	var gj map[string]any
	must0(t, json.Unmarshal(must(os.ReadFile(filepath.Join(src, "guest.json"))), &gj))
	m, _ := gj["measurements"].(map[string]any)
	st, _ := m["sim-tdx"].(map[string]any)
	rtmrs, _ := st["rtmrs"].([]any)
	r1, _ := func() (string, bool) {
		if len(rtmrs) < 2 {
			return "", false
		}
		s, ok := rtmrs[1].(string)
		return s, ok
	}()
	if len(r1) != 96 {
		t.Fatalf("guest.json measurements.sim-tdx.rtmrs[1] = %q, want 48 bytes of hex", r1)
	}
	flip := "0"
	if r1[0] == '0' {
		flip = "1"
	}
	rtmrs[1] = flip + r1[1:]
	b, err := json.MarshalIndent(gj, "", "  ")
	must0(t, err)
	must0(t, os.WriteFile(filepath.Join(dst, "guest.json"), append(b, '\n'), 0o644))
}

// registration is the part of a broker workload the test reads.
type registration struct {
	TEEs         []string            `json:"tees"`
	Measurements map[string][]string `json:"measurements"`
}

func (c *cluster) workload(t *testing.T, id string) registration {
	t.Helper()
	var w registration
	out := proc.Run(t, c.root, nil, filepath.Join(c.bin, "sealctl"), "kbs", "--kbs-dir", c.env["SEALPOD_KBS_DIR"], "workload", "get", id, "-o", "json")
	must0(t, json.Unmarshal([]byte(out), &w))
	return w
}

// auditEvent is one record of the broker's audit log (sealctl kbs audit -o json).
type auditEvent struct {
	Kind, Workload, TEE, Result, Reason string
}

func (c *cluster) auditEvents(t *testing.T) []auditEvent {
	t.Helper()
	var evs []auditEvent
	out := proc.Run(t, c.root, nil, filepath.Join(c.bin, "sealctl"), "kbs", "--kbs-dir", c.env["SEALPOD_KBS_DIR"], "audit", "--since", "2h", "-o", "json")
	must0(t, json.Unmarshal([]byte(out), &evs))
	return evs
}

// kbsVerifications reads sealpod_kbs_verifications_total{tee,result} from the broker's
// /metrics (0 when the series does not exist yet).
func (c *cluster) kbsVerifications(t *testing.T, tee, result string) float64 {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(must(os.ReadFile(filepath.Join(c.env["SEALPOD_KBS_DIR"], "tls", "ca.pem")))) {
		t.Fatal("no CA certificate in the broker's tls/ca.pem")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := client.Get(c.env["SEALPOD_KBS_URL"] + "/metrics")
	must0(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	lineRE := regexp.MustCompile(`^sealpod_kbs_verifications_total\{(.*)\} (\S+)$`)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		m := lineRE.FindStringSubmatch(sc.Text())
		if m == nil || !strings.Contains(m[1], `tee="`+tee+`"`) || !strings.Contains(m[1], `result="`+result+`"`) {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		must0(t, err)
		return v
	}
	must0(t, sc.Err())
	return 0
}
