// Package netconfig configures the guest network from the host's configuration. The host is
// untrusted: the configuration is validated strictly (sizes, syntax) before anything is
// applied, and it can only address links that exist in the guest (by MAC address).
package netconfig

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/internal/lazyregexp"
)

// Limits.
const (
	MaxInterfaces = 8
	MaxAddresses  = 16
	MaxRoutes     = 64
	MaxDNS        = 8
	MaxDNSOptions = 16 // more than the allow-list has names (ValidDNSOption)
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid network configuration")

var (
	// compiled on first use (lazyregexp: not at every start of the agent binary)
	dnsNameRe = lazyregexp.New(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$`)
	ifNameRe  = lazyregexp.New(`^[a-zA-Z0-9_.-]{1,15}$`)
)

func bad(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// Validate checks every field of c.
func Validate(c *api.NetworkConfig) error {
	if len(c.GetInterfaces()) > MaxInterfaces {
		return bad("interfaces: %d (max %d)", len(c.GetInterfaces()), MaxInterfaces)
	}
	for i, itf := range c.GetInterfaces() {
		if _, err := net.ParseMAC(itf.GetMac()); err != nil || len(itf.GetMac()) != 17 {
			return bad("interfaces[%d].mac: %.40q is not a MAC address", i, itf.GetMac())
		}
		if n := itf.GetName(); n != "" && !ifNameRe.MatchString(n) {
			return bad("interfaces[%d].name: %.40q", i, n)
		}
		if m := itf.GetMtu(); m != 0 && (m < 576 || m > 65535) {
			return bad("interfaces[%d].mtu: %d out of range 576..65535", i, m)
		}
		if len(itf.GetAddresses()) > MaxAddresses {
			return bad("interfaces[%d].addresses: %d (max %d)", i, len(itf.GetAddresses()), MaxAddresses)
		}
		for j, a := range itf.GetAddresses() {
			if _, err := netip.ParsePrefix(a); err != nil {
				return bad("interfaces[%d].addresses[%d]: %.60q is not CIDR", i, j, a)
			}
		}
	}
	if len(c.GetRoutes()) > MaxRoutes {
		return bad("routes: %d (max %d)", len(c.GetRoutes()), MaxRoutes)
	}
	for i, r := range c.GetRoutes() {
		if d := r.GetDestination(); d != "default" {
			if _, err := netip.ParsePrefix(d); err != nil {
				return bad("routes[%d].destination: %.60q is neither CIDR nor default", i, d)
			}
		}
		if g := r.GetGateway(); g != "" {
			if a, err := netip.ParseAddr(g); err != nil || a.Zone() != "" {
				return bad("routes[%d].gateway: %.60q is not an IP without zone", i, g)
			}
		}
		if m := r.GetMac(); m != "" {
			if _, err := net.ParseMAC(m); err != nil {
				return bad("routes[%d].mac: %.40q is not a MAC address", i, m)
			}
		}
		if r.GetGateway() == "" && r.GetMac() == "" {
			return bad("routes[%d]: needs a gateway or a device", i)
		}
	}
	if err := validateDNS(c); err != nil {
		return err
	}
	if h := c.GetHostname(); h != "" && !spec.ValidDNSLabel(h) {
		return bad("hostname: %.70q is not a DNS label", h)
	}
	return nil
}

// ResolvConf renders /etc/resolv.conf for c ("" when c has no DNS settings): one
// "nameserver" line per server, one "search" line, one "options" line. Only for a c that
// passed Validate (which makes every value a single token of its syntax).
func ResolvConf(c *api.NetworkConfig) string {
	var b strings.Builder
	for _, s := range c.GetDnsServers() {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(c.GetDnsSearch()) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(c.GetDnsSearch(), " "))
	}
	if len(c.GetDnsOptions()) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(c.GetDnsOptions(), " "))
	}
	return b.String()
}

// Apply validates c and configures the guest: loopback up, each interface (found by MAC) with
// its MTU and addresses and up, the routes, /etc/resolv.conf (under etcDir) and the hostname.
func Apply(c *api.NetworkConfig, etcDir string) error {
	if err := Validate(c); err != nil {
		return err
	}
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("network: loopback: %w", err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("network: list links: %w", err)
	}
	byMAC := func(mac string) (netlink.Link, error) {
		hw, _ := net.ParseMAC(mac)
		for _, l := range links {
			if l.Attrs().HardwareAddr.String() == hw.String() {
				return l, nil
			}
		}
		return nil, fmt.Errorf("network: no guest link with MAC %s", mac)
	}
	for i, itf := range c.GetInterfaces() {
		l, err := byMAC(itf.GetMac())
		if err != nil {
			return err
		}
		if m := itf.GetMtu(); m != 0 {
			if err := netlink.LinkSetMTU(l, int(m)); err != nil {
				return fmt.Errorf("network: interfaces[%d] mtu: %w", i, err)
			}
		}
		for j, a := range itf.GetAddresses() {
			addr, err := netlink.ParseAddr(a)
			if err != nil {
				return bad("interfaces[%d].addresses[%d]: %v", i, j, err)
			}
			if err := netlink.AddrReplace(l, addr); err != nil {
				return fmt.Errorf("network: interfaces[%d] address %s: %w", i, a, err)
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("network: interfaces[%d] up: %w", i, err)
		}
	}
	for i, r := range c.GetRoutes() {
		rt := &netlink.Route{}
		if d := r.GetDestination(); d != "default" {
			_, dst, err := net.ParseCIDR(d)
			if err != nil {
				return bad("routes[%d].destination: %v", i, err)
			}
			rt.Dst = dst
		}
		if g := r.GetGateway(); g != "" {
			rt.Gw = net.ParseIP(g)
		}
		if m := r.GetMac(); m != "" {
			l, err := byMAC(m)
			if err != nil {
				return err
			}
			rt.LinkIndex = l.Attrs().Index
		}
		if err := netlink.RouteReplace(rt); err != nil {
			return fmt.Errorf("network: routes[%d] %s via %s: %w", i, r.GetDestination(), r.GetGateway(), err)
		}
	}
	if rc := ResolvConf(c); rc != "" {
		if err := os.MkdirAll(etcDir, 0o755); err != nil {
			return fmt.Errorf("network: %w", err)
		}
		if err := os.WriteFile(filepath.Join(etcDir, "resolv.conf"), []byte(rc), 0o644); err != nil {
			return fmt.Errorf("network: resolv.conf: %w", err)
		}
	}
	if h := c.GetHostname(); h != "" {
		if err := unix.Sethostname([]byte(h)); err != nil {
			return fmt.Errorf("network: hostname: %w", err)
		}
	}
	return nil
}
