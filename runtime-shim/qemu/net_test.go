package qemu

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"google.golang.org/protobuf/proto"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/testdeps"
	"github.com/sealpod/sealpod/runtime-shim/netns"
	"github.com/sealpod/sealpod/runtime-shim/netns/netnstest"
)

// listenIn opens a TCP listener inside the namespace at path (the socket stays in it).
func listenIn(t *testing.T, path, addr string) net.Listener {
	t.Helper()
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	type res struct {
		l   net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: err}
			return
		}
		defer orig.Close()
		if err := vnetns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: err}
			return
		}
		l, lerr := net.Listen("tcp", addr)
		if err := vnetns.Set(orig); err != nil {
			ch <- res{err: err}
			return
		}
		runtime.UnlockOSThread()
		ch <- res{l, lerr}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listen %s in %s: %v", addr, path, r.err)
	}
	t.Cleanup(func() { r.l.Close() })
	return r.l
}

// TestBootGuestNetwork is the whole pod network path with a real guest kernel: a pod
// namespace as CNI leaves it (eth0 10.79.0.2/24, default route via 10.79.0.1) whose veth
// peer sits in a "node" namespace with a TCP server on 10.79.0.1 (both namespaces are the
// test's own; the addresses exist nowhere else). netns.Setup wires a tap, QEMU gets it as
// fd 3 with the pod's MAC, and a small /init (internal/netguest) applies res.Network with the
// agent's netconfig.Apply and talks TCP to the server: virtio-net → tap → tc redirect → veth
// and back.
func TestBootGuestNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no VM boot")
	}
	if os.Geteuid() != 0 {
		testdeps.Missing(t, "needs root to create network namespaces")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testdeps.Missing(t, "no /dev/net/tun: %v", err)
	}
	qemuPath, err := exec.LookPath(BinaryX86)
	if err != nil {
		testdeps.Missing(t, "%s not installed: %v", BinaryX86, err)
	}
	b, err := bundle.Load(buildGuestWith(t, "./runtime-shim/qemu/internal/netguest", false))
	if err != nil {
		t.Fatal(err)
	}

	podNS := netnstest.New(t, fmt.Sprintf("sealpod-qp%d", os.Getpid()))
	nodeNS := netnstest.New(t, fmt.Sprintf("sealpod-qn%d", os.Getpid()))
	podH, nodeH := handleIn(t, podNS), handleIn(t, nodeNS)
	node, _ := vnetns.GetFromPath(nodeNS)
	err = podH.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1400}, PeerName: "peer0",
		PeerNamespace: netlink.NsFd(int(node))})
	node.Close()
	if err != nil {
		t.Fatal(err)
	}
	eth0, _ := podH.LinkByName("eth0")
	peer, _ := nodeH.LinkByName("peer0")
	podAddr, _ := netlink.ParseAddr("10.79.0.2/24")
	peerAddr, _ := netlink.ParseAddr("10.79.0.1/24")
	for what, err := range map[string]error{
		"pod addr": podH.AddrAdd(eth0, podAddr), "peer addr": nodeH.AddrAdd(peer, peerAddr),
		"peer mtu": nodeH.LinkSetMTU(peer, 1400), "pod up": podH.LinkSetUp(eth0), "peer up": nodeH.LinkSetUp(peer),
	} {
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	if err := podH.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("10.79.0.1")}); err != nil {
		t.Fatal(err)
	}
	l := listenIn(t, nodeNS, "10.79.0.1:0")
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Fprintf(c, "hello-from-node-to-%s\n", c.RemoteAddr().(*net.TCPAddr).IP)
		got <- strings.TrimSpace(line)
	}()

	res, err := netns.Setup(netns.Options{NetNSPath: podNS, Hostname: "netguest"})
	if err != nil {
		t.Fatal(err)
	}
	defer netns.Teardown(netns.Options{NetNSPath: podNS})
	raw, err := proto.Marshal(res.Network)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "spn")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	g := GuestFromBundle(b)
	g.Cmdline += " SEALPOD_NET=" + base64.RawURLEncoding.EncodeToString(raw) + " SEALPOD_PEER=" + l.Addr().String()
	cfg := Config{Binary: qemuPath, TEE: TEESim, Guest: g, AgentSocket: dir + "/a.sock", SimSPSocket: dir + "/s.sock",
		NIC: &NIC{TapFile: res.Tap, MAC: res.MAC}}
	var console syncBuf
	vm, err := Start(cfg, StartOptions{Console: &console})
	res.Tap.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	if err := vm.Wait(ctx); err != nil {
		t.Fatalf("guest: %v\nconsole:\n%s", err, console.String())
	}
	c := console.String()
	if !strings.Contains(c, "sealpod-netguest: got hello-from-node-to-10.79.0.2") || strings.Contains(c, "FAIL") {
		t.Fatalf("guest did not complete the TCP exchange; console:\n%s", c)
	}
	select {
	case line := <-got:
		if !strings.HasPrefix(line, "hello from 10.79.0.2:") {
			t.Fatalf("node received %q", line)
		}
		t.Logf("node received %q; guest console: %q", line, "got hello-from-node-to-10.79.0.2")
	default:
		t.Fatal("node server received nothing")
	}
}

func handleIn(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	h, err := netns.Handle(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}
