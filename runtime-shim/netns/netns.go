// Package netns wires a pod VM's network card into the pod's network namespace, the way Kata
// Containers' "tcfilter" model does: in the namespace CNI prepared (path given by containerd,
// e.g. /var/run/netns/cni-…) it finds the pod interface (eth0, a veth), creates a tap device
// for QEMU, attaches an ingress qdisc to both and a filter with a mirred
// "egress redirect" action in each direction (a u32 filter matching every frame, as Kata does), so every frame arriving on one leaves on the
// other. The guest gets the pod interface's MAC, addresses, routes and MTU, so the pod keeps the
// IP and MAC that CNI assigned. Everything goes through netlink (github.com/vishvananda/netlink);
// nothing is shelled out.
//
//	res, err := netns.Setup(netns.Options{
//	    NetNSPath:  "/var/run/netns/cni-1234",   // from the sandbox's OCI spec
//	    ResolvConf: sandboxDir + "/resolv.conf",  // optional: the pod's DNS
//	    Hostname:   "web-0",                      // optional
//	})
//	// QEMU: qemu.NIC{TapFile: res.Tap, MAC: res.MAC, VNetHdr: true}; after qemu.Start the
//	// shim may close res.Tap (QEMU holds its own descriptor).
//	// Agent: UnsealRequest.Network = res.Network (validated by agent/netconfig.Validate).
//	err = netns.Teardown(netns.Options{NetNSPath: …})   // idempotent; also after a shim restart
//
// The tap is not persistent: it disappears when the last descriptor (the shim's and QEMU's)
// closes, so a crashed shim and its VM leave no tap behind; Teardown also removes the
// ingress qdiscs (and with them the filters).
package netns

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/netconfig"
)

// Defaults.
const (
	DefaultInterface = "eth0"
	DefaultTapName   = "tap0_sealpod"
	// GuestInterfaceName is the name the guest's configuration gives the NIC (informational:
	// the agent selects the link by MAC).
	GuestInterfaceName = "eth0"
	// FilterPriority is the tc priority of the redirect filters (handle 1 each).
	FilterPriority = 1
	// MaxResolvConf is the largest resolv.conf read (kubelet writes a few hundred bytes).
	MaxResolvConf = 64 << 10
)

// Errors callers may branch on.
var (
	// ErrNoInterface: the pod interface does not exist in the namespace.
	ErrNoInterface = errors.New("pod interface not found")
	// ErrResolvConf wraps every resolv.conf parse error.
	ErrResolvConf = errors.New("invalid resolv.conf")
)

// Options select the namespace and names.
type Options struct {
	// NetNSPath is the pod network namespace (a bind mount such as /var/run/netns/cni-…, or
	// /proc/<pid>/ns/net). Required.
	NetNSPath string
	// Interface is the pod interface CNI created ("" = eth0).
	Interface string
	// TapName is the tap device to create ("" = tap0_sealpod; at most 15 bytes).
	TapName string
	// ResolvConf, if set, is the pod's resolv.conf; its nameservers and search domains go into
	// the guest configuration.
	ResolvConf string
	// Hostname, if set, is the pod's hostname (a DNS label).
	Hostname string
	// Logger (nil = slog.Default()).
	Logger *slog.Logger
}

func (o *Options) withDefaults() Options {
	d := *o
	if d.Interface == "" {
		d.Interface = DefaultInterface
	}
	if d.TapName == "" {
		d.TapName = DefaultTapName
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	return d
}

// Result is a wired pod network.
type Result struct {
	// Tap is an open queue of the tap device (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR): give it to QEMU
	// (qemu.NIC.TapFile, VNetHdr true), then close it.
	Tap *os.File
	// TapName and TapIndex identify the tap inside the pod namespace.
	TapName  string
	TapIndex int
	// Interface and InterfaceIndex identify the pod interface.
	Interface      string
	InterfaceIndex int
	// MAC is the guest NIC's MAC address (= the pod interface's) and MTU its MTU.
	MAC net.HardwareAddr
	MTU int
	// Network is the guest's network configuration for UnsealRequest.Network; it passes
	// agent/netconfig.Validate.
	Network *api.NetworkConfig
	// Duration is how long Setup took.
	Duration time.Duration
}

// Setup wires the tap into the pod namespace and returns the guest configuration. On error
// nothing it created is left behind.
func Setup(opts Options) (res *Result, err error) {
	start := time.Now()
	o := opts.withDefaults()
	if o.NetNSPath == "" {
		return nil, errors.New("netns setup: NetNSPath: required")
	}
	if err := checkIfName("TapName", o.TapName); err != nil {
		return nil, err
	}
	if err := checkIfName("Interface", o.Interface); err != nil {
		return nil, err
	}
	var dns *DNS
	if o.ResolvConf != "" {
		if dns, err = ReadResolvConf(o.ResolvConf); err != nil {
			return nil, fmt.Errorf("netns setup %s: %w", o.NetNSPath, err)
		}
	}
	ns, h, err := open(o.NetNSPath)
	if err != nil {
		return nil, fmt.Errorf("netns setup: %w", err)
	}
	defer ns.Close()
	defer h.Close()

	pod, err := h.LinkByName(o.Interface)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("netns setup %s: interface %s: %w", o.NetNSPath, o.Interface, ErrNoInterface)
		}
		return nil, fmt.Errorf("netns setup %s: interface %s: %w", o.NetNSPath, o.Interface, err)
	}
	pa := pod.Attrs()
	if len(pa.HardwareAddr) != 6 {
		return nil, fmt.Errorf("netns setup %s: interface %s: no Ethernet MAC address (%q)", o.NetNSPath, o.Interface, pa.HardwareAddr)
	}
	netCfg, err := guestNetwork(h, pod, dns, o)
	if err != nil {
		return nil, fmt.Errorf("netns setup %s: %w", o.NetNSPath, err)
	}

	tapFile, err := openTap(ns, o.TapName)
	if err != nil {
		return nil, fmt.Errorf("netns setup %s: tap %s: %w", o.NetNSPath, o.TapName, err)
	}
	// Undo only what this call created: a failed Setup must not touch another VM's wiring.
	podIngress := false
	defer func() {
		if err == nil {
			return
		}
		if podIngress {
			if e := delIngress(h, pa.Index); e != nil {
				o.Logger.Warn("netns setup: undo ingress qdisc", "netns", o.NetNSPath, "interface", o.Interface, "error", e)
			}
		}
		if tap, e := h.LinkByName(o.TapName); e == nil {
			h.LinkDel(tap)
		}
		tapFile.Close()
	}()
	tap, err := h.LinkByName(o.TapName)
	if err != nil {
		return nil, fmt.Errorf("netns setup %s: tap %s: %w", o.NetNSPath, o.TapName, err)
	}
	if err = h.LinkSetMTU(tap, pa.MTU); err != nil {
		return nil, fmt.Errorf("netns setup %s: tap %s: mtu %d: %w", o.NetNSPath, o.TapName, pa.MTU, err)
	}
	// No IPv6 link-local address on the tap: the pod namespace's stack would otherwise send
	// router solicitations and MLD reports out of it, into the guest. Not fatal (a kernel
	// without IPv6 has nothing to send).
	if e := h.LinkSetIP6AddrGenMode(tap, nl.IN6_ADDR_GEN_MODE_NONE); e != nil {
		o.Logger.Debug("netns setup: tap addrgenmode none", "netns", o.NetNSPath, "error", e)
	}
	if err = h.LinkSetUp(tap); err != nil {
		return nil, fmt.Errorf("netns setup %s: tap %s: up: %w", o.NetNSPath, o.TapName, err)
	}
	if err = addIngress(h, tap.Attrs().Index); err != nil {
		return nil, fmt.Errorf("netns setup %s: %s: %w", o.NetNSPath, o.TapName, err)
	}
	if err = addIngress(h, pa.Index); err != nil {
		return nil, fmt.Errorf("netns setup %s: %s: %w", o.NetNSPath, o.Interface, err)
	}
	podIngress = true
	if err = addRedirect(h, pa.Index, tap.Attrs().Index); err != nil {
		return nil, fmt.Errorf("netns setup %s: redirect %s -> %s: %w", o.NetNSPath, o.Interface, o.TapName, err)
	}
	if err = addRedirect(h, tap.Attrs().Index, pa.Index); err != nil {
		return nil, fmt.Errorf("netns setup %s: redirect %s -> %s: %w", o.NetNSPath, o.TapName, o.Interface, err)
	}
	res = &Result{
		Tap: tapFile, TapName: o.TapName, TapIndex: tap.Attrs().Index,
		Interface: o.Interface, InterfaceIndex: pa.Index,
		MAC: slices.Clone(pa.HardwareAddr), MTU: pa.MTU,
		Network: netCfg, Duration: time.Since(start),
	}
	o.Logger.Info("pod network wired", "netns", o.NetNSPath, "interface", o.Interface, "tap", o.TapName,
		"mac", res.MAC.String(), "mtu", res.MTU, "setup_us", res.Duration.Microseconds())
	return res, nil
}

// Teardown removes what Setup added: the tap (if it still exists) and the ingress qdiscs of
// the tap and the pod interface, with their filters. It is idempotent; a namespace that no
// longer exists (CNI already removed it) is not an error.
func Teardown(opts Options) error {
	o := opts.withDefaults()
	if o.NetNSPath == "" {
		return errors.New("netns teardown: NetNSPath: required")
	}
	h, err := Handle(o.NetNSPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("netns teardown: %w", err)
	}
	defer h.Close()
	if err := teardown(h, o); err != nil {
		return fmt.Errorf("netns teardown %s: %w", o.NetNSPath, err)
	}
	return nil
}

func teardown(h *netlink.Handle, o Options) error {
	var errs []error
	if tap, err := h.LinkByName(o.TapName); err == nil {
		if err := h.LinkDel(tap); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete tap %s: %w", o.TapName, err))
		}
	}
	if pod, err := h.LinkByName(o.Interface); err == nil {
		if err := delIngress(h, pod.Attrs().Index); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", o.Interface, err))
		}
	}
	return errors.Join(errs...)
}

func checkIfName(field, n string) error {
	if n == "" || len(n) > unix.IFNAMSIZ-1 || strings.ContainsAny(n, "/ \t\n\x00:") || n == "." || n == ".." {
		return fmt.Errorf("netns: %s: %q is not a valid interface name (1..15 bytes, no '/', ':' or spaces)", field, n)
	}
	return nil
}

// openTap creates the tap device inside ns and returns its queue. The device's namespace is
// the one of the thread that opens /dev/net/tun, so that open runs on a thread moved into ns
// (and back); if the thread cannot be moved back it is not reused (never unlocked).
func openTap(ns vnetns.NsHandle, name string) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("current namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := vnetns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("enter namespace: %w", err)}
			return
		}
		fd, openErr := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err := vnetns.Set(orig); err != nil {
			// Leave the thread locked: the runtime ends it with this goroutine.
			if openErr == nil {
				unix.Close(fd)
			}
			ch <- result{err: fmt.Errorf("return to the shim's namespace: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		if openErr != nil {
			ch <- result{err: fmt.Errorf("open /dev/net/tun: %w", openErr)}
			return
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			ch <- result{err: err}
			return
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
				err = fmt.Errorf("%w (a device of that name exists: a previous VM's tap?)", err)
			}
			ch <- result{err: fmt.Errorf("TUNSETIFF: %w", err)}
			return
		}
		ch <- result{f: os.NewFile(uintptr(fd), "/dev/net/tun:"+name)}
	}()
	r := <-ch
	return r.f, r.err
}

var ingressHandle = netlink.MakeHandle(0xffff, 0)

func addIngress(h *netlink.Handle, index int) error {
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: index, Handle: ingressHandle, Parent: netlink.HANDLE_INGRESS}}
	if err := h.QdiscAdd(q); err != nil {
		return fmt.Errorf("add ingress qdisc: %w", err)
	}
	return nil
}

func delIngress(h *netlink.Handle, index int) error {
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: index, Handle: ingressHandle, Parent: netlink.HANDLE_INGRESS}}
	err := h.QdiscDel(q)
	if err == nil || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENODEV) {
		return nil
	}
	return fmt.Errorf("delete ingress qdisc: %w", err)
}

// addRedirect adds, on the ingress of link from, a u32 filter whose one all-zero key matches
// every frame (Kata's tcfilter), with a mirred action that redirects it to the egress of link
// to and stops processing (TC_ACT_STOLEN). u32 rather than matchall: CONFIG_NET_CLS_MATCHALL
// is missing from some kernels (this CI machine's among them), u32 is nearly always built.
func addRedirect(h *netlink.Handle, from, to int) error {
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: from,
			Parent:    ingressHandle,
			Priority:  FilterPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		// Sel nil: the library's match-all selector (one key, mask 0, TC_U32_TERMINAL).
		Actions: []netlink.Action{netlink.NewMirredAction(to)},
	}
	if err := h.FilterAdd(f); err != nil {
		return fmt.Errorf("add u32 filter: %w", err)
	}
	return nil
}

// open returns the namespace at path and a netlink handle inside it; the caller closes both.
func open(path string) (vnetns.NsHandle, *netlink.Handle, error) {
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		return vnetns.None(), nil, fmt.Errorf("open %s: %w", path, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return vnetns.None(), nil, fmt.Errorf("netns %s: netlink handle: %w", path, err)
	}
	return ns, h, nil
}

// Handle returns a netlink handle inside the network namespace at path (the caller closes
// it): for the shim's diagnostics and for tests that inspect a pod namespace.
func Handle(path string) (*netlink.Handle, error) {
	ns, h, err := open(path)
	if err != nil {
		return nil, err
	}
	ns.Close() // the handle keeps its own reference to the namespace
	return h, nil
}

// Redirects lists the mirred egress-redirect filters (u32 or matchall) on the ingress of the
// link named linkName in the namespace at netnsPath: the target ifindex of each (tests,
// diagnostics).
func Redirects(netnsPath string, linkName string) ([]int, error) {
	h, err := Handle(netnsPath)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	l, err := h.LinkByName(linkName)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %s: %w", netnsPath, linkName, err)
	}
	fs, err := h.FilterList(l, ingressHandle)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil, nil // no ingress qdisc
		}
		return nil, fmt.Errorf("netns %s: %s: list filters: %w", netnsPath, linkName, err)
	}
	var out []int
	for _, f := range fs {
		var actions []netlink.Action
		switch f := f.(type) {
		case *netlink.U32:
			actions = f.Actions
		case *netlink.MatchAll:
			actions = f.Actions
		}
		for _, a := range actions {
			if mr, ok := a.(*netlink.MirredAction); ok && mr.MirredAction == netlink.TCA_EGRESS_REDIR {
				out = append(out, mr.Ifindex)
			}
		}
	}
	return out, nil
}

// guestNetwork reads the pod interface's addresses and routes into the guest configuration.
func guestNetwork(h *netlink.Handle, pod netlink.Link, dns *DNS, o Options) (*api.NetworkConfig, error) {
	pa := pod.Attrs()
	mac := pa.HardwareAddr.String()
	itf := &api.Interface{Mac: mac, Name: GuestInterfaceName, Mtu: uint32(pa.MTU)}
	addrs, err := h.AddrList(pod, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("interface %s: addresses: %w", pa.Name, err)
	}
	for _, a := range addrs {
		if a.IPNet == nil || a.IP.IsLinkLocalUnicast() || a.IP.IsLoopback() || a.IP.IsMulticast() {
			continue // the guest kernel makes its own IPv6 link-local address
		}
		itf.Addresses = append(itf.Addresses, a.IPNet.String())
	}
	if len(itf.Addresses) == 0 {
		return nil, fmt.Errorf("interface %s: no IP address (did CNI run?)", pa.Name)
	}
	routes, err := h.RouteList(pod, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("interface %s: routes: %w", pa.Name, err)
	}
	var direct, viaGW []*api.Route
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL || r.Type != unix.RTN_UNICAST {
			continue // connected routes: the guest kernel derives them from the addresses
		}
		if r.Dst != nil && (r.Dst.IP.IsLinkLocalUnicast() || r.Dst.IP.IsMulticast()) {
			continue
		}
		ar := &api.Route{Destination: "default"}
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 || !r.Dst.IP.IsUnspecified() {
				ar.Destination = r.Dst.String()
			}
		}
		if r.Gw != nil {
			ar.Gateway = r.Gw.String()
			if r.Gw.IsLinkLocalUnicast() {
				ar.Mac = mac // an IPv6 link-local gateway needs its device
			}
			viaGW = append(viaGW, ar)
		} else {
			ar.Mac = mac
			direct = append(direct, ar)
		}
	}
	// Device routes first: a gateway may only be reachable through one (CNI ptp plugin).
	cfg := &api.NetworkConfig{
		Interfaces: []*api.Interface{itf},
		Routes:     append(direct, viaGW...),
		Hostname:   o.Hostname,
	}
	if dns != nil {
		cfg.DnsServers = dns.Servers
		cfg.DnsSearch = dns.Search
		cfg.DnsOptions = dns.Options
		if dns.Truncated {
			o.Logger.Warn("resolv.conf has more nameservers or search domains than the guest takes; extra ones dropped",
				"path", o.ResolvConf, "max", netconfig.MaxDNS)
		}
		if len(dns.DroppedOptions) > 0 {
			o.Logger.Warn("resolv.conf options the guest does not take (docs/agent.md, \"resolv.conf\"); dropped",
				"path", o.ResolvConf, "options", dns.DroppedOptions)
		}
	}
	if err := netconfig.Validate(cfg); err != nil {
		return nil, fmt.Errorf("guest network configuration: %w", err)
	}
	return cfg, nil
}

// maxDroppedOptions bounds DNS.DroppedOptions (they are only logged).
const maxDroppedOptions = 8

// DNS is what the guest takes from a resolv.conf.
type DNS struct {
	Servers []string
	Search  []string
	// Options are the resolver options the guest accepts (netconfig.ValidDNSOption), in the
	// order first given, each with its last value.
	Options []string
	// DroppedOptions are options the guest does not take (unknown, malformed, out of range),
	// at most maxDroppedOptions of them: the shim logs them.
	DroppedOptions []string
	// Truncated is set when more than netconfig.MaxDNS servers or search domains were listed
	// (the first ones are kept, as a resolver would use them).
	Truncated bool
}

// ReadResolvConf reads and parses a resolv.conf (at most MaxResolvConf bytes). The path comes
// from the pod's OCI spec: it is opened without following a final symbolic link and without
// blocking (a FIFO would hold the shim), and anything but a regular file is refused.
func ReadResolvConf(path string) (*DNS, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("resolv.conf %s: %w: is a symbolic link", path, ErrResolvConf)
		}
		return nil, fmt.Errorf("resolv.conf %s: %w", path, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("resolv.conf %s: %w", path, err)
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("resolv.conf %s: %w: not a regular file (%s)", path, ErrResolvConf, st.Mode().Type())
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxResolvConf+1)); err != nil {
		return nil, fmt.Errorf("resolv.conf %s: %w", path, err)
	}
	if buf.Len() > MaxResolvConf {
		return nil, fmt.Errorf("resolv.conf %s: %w: larger than %d bytes", path, ErrResolvConf, MaxResolvConf)
	}
	d, err := ParseResolvConf(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("resolv.conf %s: %w", path, err)
	}
	return d, nil
}

// ParseResolvConf parses resolv.conf contents: "nameserver IP" lines (IPv4 or IPv6, no zone),
// the last "search"/"domain" line (as the resolver does) and the "options" lines (allow-listed
// ones kept, see addOption); comments (# ;) and other keywords (sortlist, lookup) are
// ignored. Search domains are lowercased, a trailing dot is removed. Every kept value is
// checked as agent/netconfig will check it.
func ParseResolvConf(b []byte) (*DNS, error) {
	if len(b) > MaxResolvConf {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrResolvConf, MaxResolvConf)
	}
	d := &DNS{}
	var search []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), MaxResolvConf+1)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) != 2 {
				return nil, fmt.Errorf("%w: line %d: nameserver takes one address", ErrResolvConf, n)
			}
			a, err := netip.ParseAddr(f[1])
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%w: line %d: nameserver %.60q is not an IP address", ErrResolvConf, n, f[1])
			}
			if len(d.Servers) == netconfig.MaxDNS {
				d.Truncated = true
				continue
			}
			d.Servers = append(d.Servers, a.String())
		case "options":
			for _, o := range f[1:] {
				addOption(d, o)
			}
		case "search", "domain":
			search = search[:0]
			for _, s := range f[1:] {
				s = strings.TrimSuffix(strings.ToLower(s), ".")
				if s == "" {
					continue
				}
				if !netconfig.ValidDNSName(s) {
					return nil, fmt.Errorf("%w: line %d: search domain %.60q is not a DNS name", ErrResolvConf, n, s)
				}
				search = append(search, s)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrResolvConf, err)
	}
	if len(search) > netconfig.MaxDNS {
		search = search[:netconfig.MaxDNS]
		d.Truncated = true
	}
	if len(search) > 0 {
		d.Search = slices.Clone(search)
	}
	return d, nil
}

// addOption adds resolver option o to d.Options in the guest's canonical form
// (netconfig.ValidDNSOption): a number above its range is capped as glibc caps it ("ndots:20"
// is "ndots:15"), leading zeros go; an option seen before keeps its place and takes the new
// value (the resolver applies options in order). Anything else is dropped into
// d.DroppedOptions.
func addOption(d *DNS, o string) {
	name, val, hasVal := strings.Cut(o, ":")
	lo, hi, numeric, allowed := netconfig.DNSOptionBounds(name)
	canon := ""
	switch {
	case !allowed:
	case !numeric:
		if !hasVal {
			canon = name
		}
	case val != "" && strings.Trim(val, "0123456789") == "":
		n := 0
		for i := 0; i < len(val) && n <= hi; i++ {
			n = n*10 + int(val[i]-'0')
		}
		if n >= lo {
			canon = fmt.Sprintf("%s:%d", name, min(n, hi))
		}
	}
	if canon == "" {
		if len(d.DroppedOptions) < maxDroppedOptions {
			if len(o) > 64 {
				o = o[:64] + "..."
			}
			d.DroppedOptions = append(d.DroppedOptions, o)
		}
		return
	}
	if i := slices.IndexFunc(d.Options, func(x string) bool { return netconfig.DNSOptionName(x) == name }); i >= 0 {
		d.Options[i] = canon
		return
	}
	d.Options = append(d.Options, canon)
}
