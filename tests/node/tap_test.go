package node_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// TestNodeTap runs the shim with network "tap": the pod gets a CNI network namespace (ptp),
// the shim wires a tap into it with runtime-shim/netns and hands it to QEMU, and the guest is
// configured with the pod's address. The envelope names the broker at the pod gateway, where
// nothing listens (the broker is on 127.0.0.1): the guest's connection is refused by the host
// kernel, which proves the frames went guest → tap → pod eth0 → host and back. Afterwards
// the tap and the redirect qdiscs are gone from the pod namespace.
func TestNodeTap(t *testing.T) {
	n := newNode(t, "tap")
	sp := n.seal(t, "tapped")
	n.crictlRun(t, "pull", sp.image)
	podCfg := n.podConfig(t, "tapped", "uid-tapped", sp.annotations)
	pod := strings.TrimSpace(n.crictlRun(t, "runp", "--runtime", "sealpod", podCfg))
	var ins struct {
		Info struct {
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct {
						Type string `json:"type"`
						Path string `json:"path"`
					} `json:"namespaces"`
				} `json:"linux"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(n.crictlRun(t, "inspectp", "-o", "json", pod)), &ins); err != nil {
		t.Fatal(err)
	}
	var nsPath string
	for _, ns := range ins.Info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			nsPath = ns.Path
		}
	}
	if nsPath == "" {
		t.Fatal("the pod has no network namespace path")
	}
	id := strings.TrimSpace(n.crictlRun(t, "create", pod, n.containerConfig(t, "tapped", "init", sp.image, nil), podCfg))
	t0 := time.Now()
	if out, err := n.crictlErr("start", id); err == nil {
		t.Fatalf("the guest reached a broker at the pod gateway: %s", out)
	}
	in := n.inspect(t, id)
	msg := in.Status.Message
	if !strings.Contains(msg, "connection refused") || !strings.Contains(msg, tapGateway) {
		t.Fatalf("unseal over the tap failed differently than by the host refusing the connection: %s: %s", in.Status.Reason, msg)
	}
	t.Logf("guest on the pod network reached the host and was refused, as expected, in %v: %s", time.Since(t0).Round(time.Millisecond), reason(msg))
	for _, p := range n.phases(t) {
		t.Logf("shim phase %s", p)
	}

	// Nothing of the tap wiring is left in the pod namespace.
	h, err := vnetns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	links, err := nl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Type() == "tuntap" {
			t.Fatalf("tap %s left in the pod namespace", l.Attrs().Name)
		}
		qd, err := nl.QdiscList(l)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range qd {
			if q.Type() == "ingress" {
				t.Fatalf("ingress qdisc left on %s", l.Attrs().Name)
			}
		}
	}
	n.crictlRun(t, "stopp", pod)
	n.crictlRun(t, "rmp", pod)
	if pids := qemuPids(n.sealpodState); len(pids) > 0 {
		t.Fatalf("QEMU left: %v", pids)
	}
}
