package netconfig

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/sealpod/sealpod/agent/api"
)

// dnsOptionRange bounds the resolv.conf options that take a number, as glibc's resolver caps
// them (RES_MAXNDOTS 15, RES_MAXRETRANS 30, RES_MAXRETRY 5).
var dnsOptionRange = map[string][2]int{
	"ndots":    {0, 15},
	"timeout":  {1, 30},
	"attempts": {1, 5},
}

// dnsOptionFlags are the resolv.conf options without a value the guest accepts: the ones
// Kubernetes users set in a pod's dnsConfig.options and both glibc and musl ignore harmlessly
// when unknown to them.
var dnsOptionFlags = map[string]bool{
	"rotate": true, "edns0": true, "single-request": true, "single-request-reopen": true,
	"use-vc": true, "no-tld-query": true, "trust-ad": true, "no-aaaa": true, "no-reload": true,
}

// ValidDNSName reports whether s is a search domain the guest takes: lowercase RFC 1123
// labels of [a-z0-9-], not starting or ending with '-', 63 bytes each, 253 in all.
func ValidDNSName(s string) bool { return len(s) <= 253 && dnsNameRe.MatchString(s) }

// DNSOptionName is the name of a resolv.conf option ("ndots" for "ndots:5").
func DNSOptionName(o string) string {
	name, _, _ := strings.Cut(o, ":")
	return name
}

// DNSOptionBounds tells whether name is an allow-listed resolv.conf option and, if it takes a
// number (numeric), the number's range lo..hi.
func DNSOptionBounds(name string) (lo, hi int, numeric, allowed bool) {
	if r, ok := dnsOptionRange[name]; ok {
		return r[0], r[1], true, true
	}
	return 0, 0, false, dnsOptionFlags[name]
}

// ValidDNSOption reports whether o is an allow-listed resolv.conf option in canonical form:
// "ndots:N" (0..15), "timeout:N" (1..30), "attempts:N" (1..5) with N in decimal digits, or one
// of the flags rotate, edns0, single-request, single-request-reopen, use-vc, no-tld-query,
// trust-ad, no-aaaa, no-reload.
func ValidDNSOption(o string) bool {
	name, val, hasVal := strings.Cut(o, ":")
	if r, ok := dnsOptionRange[name]; ok {
		if !hasVal || val == "" || len(val) > 2 || strings.Trim(val, "0123456789") != "" {
			return false
		}
		n, err := strconv.Atoi(val)
		return err == nil && n >= r[0] && n <= r[1] && strconv.Itoa(n) == val
	}
	return !hasVal && dnsOptionFlags[name]
}

// validateDNS checks the resolver settings: nameserver IPs without zone (a zone is free text),
// search domains by DNS syntax (lowercase RFC 1123 labels, 253 bytes at most), allow-listed
// options, each list bounded.
func validateDNS(c *api.NetworkConfig) error {
	if n := len(c.GetDnsServers()); n > MaxDNS {
		return bad("dns_servers: %d (max %d)", n, MaxDNS)
	}
	if n := len(c.GetDnsSearch()); n > MaxDNS {
		return bad("dns_search: %d (max %d)", n, MaxDNS)
	}
	if n := len(c.GetDnsOptions()); n > MaxDNSOptions {
		return bad("dns_options: %d (max %d)", n, MaxDNSOptions)
	}
	for i, s := range c.GetDnsServers() {
		if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
			return bad("dns_servers[%d]: %.60q is not an IP address without zone", i, s)
		}
	}
	for i, s := range c.GetDnsSearch() {
		if !ValidDNSName(s) {
			return bad("dns_search[%d]: %.60q is not a DNS name", i, s)
		}
	}
	seen := map[string]bool{}
	for i, o := range c.GetDnsOptions() {
		if !ValidDNSOption(o) {
			return bad("dns_options[%d]: %.60q is not an allowed resolver option", i, o)
		}
		name := DNSOptionName(o)
		if seen[name] {
			return bad("dns_options[%d]: %q given twice", i, name)
		}
		seen[name] = true
	}
	return nil
}
