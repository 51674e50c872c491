package netns

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/netconfig"
	"github.com/sealpod/sealpod/internal/testdeps"
	"github.com/sealpod/sealpod/runtime-shim/netns/netnstest"
)

// The tests build their own network namespaces (named sealpod-t<pid>-<n>, bind-mounted under
// /var/run/netns like `ip netns add`), a veth pair between a "pod" and a "node" namespace, and
// addresses in 10.77.0.0/24 and 192.168.77.0/24 that exist only inside those namespaces. Every
// namespace is deleted at the end of its test.

var nsSeq atomic.Int64

func requireNetAdmin(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testdeps.Missing(t, "needs root (CAP_NET_ADMIN) to create network namespaces")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testdeps.Missing(t, "no /dev/net/tun: %v", err)
	}
}

// newNS creates a network namespace with a name unique to this test process (netnstest.New).
func newNS(t testing.TB) string {
	t.Helper()
	return netnstest.New(t, fmt.Sprintf("sealpod-t%d-%d", os.Getpid(), nsSeq.Add(1)))
}

func handleAt(t testing.TB, path string) *netlink.Handle {
	t.Helper()
	h, err := Handle(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// inNS runs f on a thread inside the namespace at path.
func inNS(t testing.TB, path string, f func() error) error {
	t.Helper()
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer ns.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := vnetns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := f()
		if err := vnetns.Set(orig); err != nil {
			errc <- err
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

var (
	podMAC  = net.HardwareAddr{0x0a, 0x58, 0x0a, 0x4d, 0x00, 0x02}
	peerMAC = net.HardwareAddr{0x0a, 0x58, 0x0a, 0x4d, 0x00, 0x01}
	podIP   = net.IPv4(10, 77, 0, 2).To4()
	gwIP    = net.IPv4(10, 77, 0, 1).To4()
)

const podMTU = 1450

type testPod struct {
	podNS, nodeNS string
	pod, node     *netlink.Handle
}

// newTestPod builds what a CNI bridge/ptp plugin leaves behind: eth0 in the pod namespace
// (10.77.0.2/24, MTU 1450, default route via 10.77.0.1, a route to 192.168.77.0/24 and a
// device route 192.168.78.0/24), its veth peer "peer0" (10.77.0.1/24) in a node namespace.
func newTestPod(t testing.TB) *testPod {
	t.Helper()
	p := &testPod{podNS: newNS(t), nodeNS: newNS(t)}
	p.pod, p.node = handleAt(t, p.podNS), handleAt(t, p.nodeNS)
	nodeNS, err := vnetns.GetFromPath(p.nodeNS)
	if err != nil {
		t.Fatal(err)
	}
	defer nodeNS.Close()
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: "eth0", MTU: podMTU, HardwareAddr: podMAC},
		PeerName:         "peer0",
		PeerHardwareAddr: peerMAC,
		PeerNamespace:    netlink.NsFd(int(nodeNS)),
	}
	if err := p.pod.LinkAdd(veth); err != nil {
		t.Fatalf("veth: %v", err)
	}
	eth0, err := p.pod.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := p.node.LinkByName("peer0")
	if err != nil {
		t.Fatal(err)
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	must("peer mtu", p.node.LinkSetMTU(peer, podMTU))
	must("pod addr", p.pod.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: podIP, Mask: net.CIDRMask(24, 32)}}))
	must("peer addr", p.node.AddrAdd(peer, &netlink.Addr{IPNet: &net.IPNet{IP: gwIP, Mask: net.CIDRMask(24, 32)}}))
	must("pod up", p.pod.LinkSetUp(eth0))
	must("peer up", p.node.LinkSetUp(peer))
	if lo, err := p.pod.LinkByName("lo"); err == nil {
		must("pod lo up", p.pod.LinkSetUp(lo))
	}
	must("default route", p.pod.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gwIP}))
	must("route via gw", p.pod.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index,
		Dst: &net.IPNet{IP: net.IPv4(192, 168, 77, 0).To4(), Mask: net.CIDRMask(24, 32)}, Gw: gwIP}))
	must("device route", p.pod.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Scope: netlink.SCOPE_LINK,
		Dst: &net.IPNet{IP: net.IPv4(192, 168, 78, 0).To4(), Mask: net.CIDRMask(24, 32)}}))
	return p
}

func writeResolvConf(t testing.TB) string {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	err := os.WriteFile(p, []byte("# kubelet\nsearch default.svc.cluster.local svc.cluster.local Cluster.Local.\nnameserver 10.96.0.10\noptions ndots:5\n"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSetupTeardown(t *testing.T) {
	requireNetAdmin(t)
	p := newTestPod(t)
	res, err := Setup(Options{NetNSPath: p.podNS, ResolvConf: writeResolvConf(t), Hostname: "web-0"})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Tap.Close()
	t.Logf("setup took %v", res.Duration)

	want := &api.NetworkConfig{
		Interfaces: []*api.Interface{{Mac: podMAC.String(), Name: "eth0", Addresses: []string{"10.77.0.2/24"}, Mtu: podMTU}},
		Routes: []*api.Route{
			{Destination: "192.168.78.0/24", Mac: podMAC.String()},
			{Destination: "default", Gateway: "10.77.0.1"},
			{Destination: "192.168.77.0/24", Gateway: "10.77.0.1"},
		},
		DnsServers: []string{"10.96.0.10"},
		DnsSearch:  []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"},
		DnsOptions: []string{"ndots:5"},
		Hostname:   "web-0",
	}
	if !proto.Equal(res.Network, want) {
		t.Errorf("guest network:\n got %v\nwant %v", res.Network, want)
	}
	if err := netconfig.Validate(res.Network); err != nil {
		t.Errorf("netconfig.Validate: %v", err)
	}
	if !bytes.Equal(res.MAC, podMAC) || res.MTU != podMTU {
		t.Errorf("MAC %s MTU %d, want %s %d", res.MAC, res.MTU, podMAC, podMTU)
	}

	tap, err := p.pod.LinkByName(DefaultTapName)
	if err != nil {
		t.Fatalf("tap: %v", err)
	}
	if _, ok := tap.(*netlink.Tuntap); !ok || tap.Attrs().MTU != podMTU || tap.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("tap: %T mtu %d flags %v; want an up tuntap with MTU %d", tap, tap.Attrs().MTU, tap.Attrs().Flags, podMTU)
	}
	if a6, err := p.pod.AddrList(tap, netlink.FAMILY_V6); err != nil || len(a6) != 0 {
		t.Errorf("tap IPv6 addresses %v (%v): want none (addrgenmode none)", a6, err)
	}
	if a4, err := p.pod.AddrList(tap, netlink.FAMILY_V4); err != nil || len(a4) != 0 {
		t.Errorf("tap IPv4 addresses %v (%v): want none", a4, err)
	}
	if got, err := Redirects(p.podNS, "eth0"); err != nil || !slices.Equal(got, []int{res.TapIndex}) {
		t.Errorf("eth0 redirects %v (%v), want [%d]", got, err, res.TapIndex)
	}
	if got, err := Redirects(p.podNS, DefaultTapName); err != nil || !slices.Equal(got, []int{res.InterfaceIndex}) {
		t.Errorf("tap redirects %v (%v), want [%d]", got, err, res.InterfaceIndex)
	}

	// A second Setup in the same namespace fails and leaves the first one's wiring intact.
	if _, err := Setup(Options{NetNSPath: p.podNS}); err == nil {
		t.Fatal("second Setup with the same tap name succeeded")
	} else {
		t.Logf("second Setup refused: %v", err)
	}
	if got, _ := Redirects(p.podNS, "eth0"); !slices.Equal(got, []int{res.TapIndex}) {
		t.Fatalf("failed second Setup changed the first's filters: %v", got)
	}

	checkDataPath(t, p, res)

	if err := Teardown(Options{NetNSPath: p.podNS}); err != nil {
		t.Fatalf("teardown: %v", err)
	}
	if _, err := p.pod.LinkByName(DefaultTapName); err == nil {
		t.Error("tap still exists after Teardown")
	}
	eth0, _ := p.pod.LinkByName("eth0")
	qs, err := p.pod.QdiscList(eth0)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.Type() == "ingress" {
			t.Errorf("ingress qdisc left on eth0: %v", q)
		}
	}
	if got, err := Redirects(p.podNS, "eth0"); err != nil || len(got) != 0 {
		t.Errorf("eth0 redirects after Teardown: %v (%v)", got, err)
	}
	if err := Teardown(Options{NetNSPath: p.podNS}); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
	// The pod's own configuration is untouched.
	if addrs, _ := p.pod.AddrList(eth0, netlink.FAMILY_V4); len(addrs) != 1 || !addrs[0].IP.Equal(podIP) {
		t.Errorf("eth0 addresses after Teardown: %v", addrs)
	}
}

// checkDataPath writes an ARP request from the "guest" into the tap and expects it on the
// node side of the veth, then reads the node's ARP reply back from the tap.
func checkDataPath(t *testing.T, p *testPod, res *Result) {
	t.Helper()
	peer, err := p.node.LinkByName("peer0")
	if err != nil {
		t.Fatal(err)
	}
	var sock int
	if err := inNS(t, p.nodeNS, func() error {
		var err error
		sock, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return err
		}
		return unix.Bind(sock, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: peer.Attrs().Index})
	}); err != nil {
		t.Fatalf("packet socket on peer0: %v", err)
	}
	defer unix.Close(sock)
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	if err := unix.SetsockoptTimeval(sock, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}

	req := arpFrame(1, podMAC, podIP, net.HardwareAddr{0, 0, 0, 0, 0, 0}, gwIP)
	req = append(make([]byte, 10), req...) // struct virtio_net_hdr (IFF_VNET_HDR), all zero
	fd := int(res.Tap.Fd())
	if _, err := unix.Write(fd, req); err != nil {
		t.Fatalf("write to tap: %v", err)
	}

	// guest → node
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 2048)
	seen := false
	for !seen && time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(sock, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			t.Fatalf("read peer0: %v", err)
		}
		f := buf[:n]
		if n >= 42 && bytes.Equal(f[6:12], podMAC) && binary.BigEndian.Uint16(f[20:22]) == 1 && bytes.Equal(f[38:42], gwIP) {
			seen = true
		}
	}
	if !seen {
		t.Fatal("the ARP request written to the tap never reached the node side of the veth")
	}

	// node → guest: the node answers the ARP request; the reply reaches eth0 and is
	// redirected to the tap.
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 200)
		if err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatal(err)
		}
		if n == 0 {
			continue
		}
		m, err := unix.Read(fd, buf)
		if err != nil {
			t.Fatalf("read tap: %v", err)
		}
		if m < 10+42 {
			continue
		}
		f := buf[10:m]
		if binary.BigEndian.Uint16(f[12:14]) == unix.ETH_P_ARP && binary.BigEndian.Uint16(f[20:22]) == 2 &&
			bytes.Equal(f[0:6], podMAC) && bytes.Equal(f[22:28], peerMAC) && bytes.Equal(f[28:32], gwIP) {
			t.Logf("ARP reply from %s reached the guest side of the tap", peerMAC)
			return
		}
	}
	t.Fatal("the node's ARP reply never came out of the tap")
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// arpFrame builds an Ethernet ARP frame (op 1 request → broadcast, 2 reply).
func arpFrame(op uint16, sha net.HardwareAddr, spa net.IP, tha net.HardwareAddr, tpa net.IP) []byte {
	f := make([]byte, 0, 42)
	if op == 1 {
		f = append(f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	} else {
		f = append(f, tha...)
	}
	f = append(f, sha...)
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_ARP)
	f = binary.BigEndian.AppendUint16(f, 1)      // Ethernet
	f = binary.BigEndian.AppendUint16(f, 0x0800) // IPv4
	f = append(f, 6, 4)
	f = binary.BigEndian.AppendUint16(f, op)
	f = append(f, sha...)
	f = append(f, spa.To4()...)
	f = append(f, tha...)
	f = append(f, tpa.To4()...)
	return f
}

func TestSetupErrors(t *testing.T) {
	requireNetAdmin(t)
	p := newTestPod(t)
	empty := newNS(t)
	if _, err := Setup(Options{NetNSPath: empty}); !errors.Is(err, ErrNoInterface) {
		t.Errorf("namespace without eth0: %v, want ErrNoInterface", err)
	}
	if _, err := Setup(Options{NetNSPath: p.podNS, Interface: "eth9"}); !errors.Is(err, ErrNoInterface) {
		t.Errorf("missing interface: %v, want ErrNoInterface", err)
	}
	if _, err := Setup(Options{NetNSPath: filepath.Join(t.TempDir(), "nope")}); err == nil {
		t.Error("missing namespace path accepted")
	}
	if _, err := Setup(Options{}); err == nil {
		t.Error("empty namespace path accepted")
	}
	if _, err := Setup(Options{NetNSPath: p.podNS, TapName: "a/b"}); err == nil {
		t.Error("tap name with a slash accepted")
	}
	if _, err := Setup(Options{NetNSPath: p.podNS, TapName: "tap0123456789abcdef"}); err == nil {
		t.Error("16-byte tap name accepted")
	}
	bad := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(bad, []byte("nameserver 10.0.0.1 10.0.0.2\n"), 0o644)
	if _, err := Setup(Options{NetNSPath: p.podNS, ResolvConf: bad}); !errors.Is(err, ErrResolvConf) {
		t.Errorf("bad resolv.conf: %v, want ErrResolvConf", err)
	}
	// None of the failures left anything behind.
	if _, err := p.pod.LinkByName(DefaultTapName); err == nil {
		t.Error("a failed Setup left a tap")
	}
	if got, _ := Redirects(p.podNS, "eth0"); len(got) != 0 {
		t.Errorf("a failed Setup left filters: %v", got)
	}
	// Teardown of a namespace that is gone (CNI removed it) is not an error.
	if err := Teardown(Options{NetNSPath: filepath.Join(t.TempDir(), "gone")}); err != nil {
		t.Errorf("teardown of a missing namespace: %v", err)
	}
}

// TestTapClosesWithLastDescriptor: the tap is not persistent, so a crashed shim + VM leave
// no device behind.
func TestTapClosesWithLastDescriptor(t *testing.T) {
	requireNetAdmin(t)
	p := newTestPod(t)
	res, err := Setup(Options{NetNSPath: p.podNS, TapName: "sptap1"})
	if err != nil {
		t.Fatal(err)
	}
	res.Tap.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := p.pod.LinkByName("sptap1"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("tap still present 5 s after its last descriptor closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := Teardown(Options{NetNSPath: p.podNS, TapName: "sptap1"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := Redirects(p.podNS, "eth0"); len(got) != 0 {
		t.Errorf("filters left on eth0: %v", got)
	}
}

func TestIPv6(t *testing.T) {
	requireNetAdmin(t)
	p := newTestPod(t)
	eth0, _ := p.pod.LinkByName("eth0")
	_, n6, _ := net.ParseCIDR("fd77::2/64")
	n6.IP = net.ParseIP("fd77::2")
	if err := p.pod.AddrAdd(eth0, &netlink.Addr{IPNet: n6, Flags: unix.IFA_F_NODAD}); err != nil {
		t.Fatal(err)
	}
	if err := p.pod.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("fe80::1")}); err != nil {
		t.Fatal(err)
	}
	res, err := Setup(Options{NetNSPath: p.podNS})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Tap.Close()
	defer Teardown(Options{NetNSPath: p.podNS})
	if a := res.Network.Interfaces[0].Addresses; !slices.Contains(a, "fd77::2/64") || !slices.Contains(a, "10.77.0.2/24") {
		t.Errorf("addresses %v", a)
	}
	found := false
	for _, r := range res.Network.Routes {
		if r.Gateway == "fe80::1" {
			found = r.Destination == "default" && r.Mac == podMAC.String()
		}
	}
	if !found {
		t.Errorf("IPv6 default route via link-local gateway (with device MAC) missing: %v", res.Network.Routes)
	}
}

// BenchmarkSetup measures Setup (tap + qdiscs + filters + reading the configuration) and
// reports it as setup-µs; Teardown is outside the timed part.
func BenchmarkSetup(b *testing.B) {
	requireNetAdmin(b)
	p := newTestPod(b)
	quiet := slog.New(slog.DiscardHandler)
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		res, err := Setup(Options{NetNSPath: p.podNS, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		b.StopTimer()
		res.Tap.Close()
		if err := Teardown(Options{NetNSPath: p.podNS}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "setup-µs/op")
}
