package hostvalue

import (
	"net/netip"
	"strings"
)

// The validators below follow k8s.io/apimachinery/pkg/util/validation (v0.33); the tests
// compare them with it.

func isLower(c byte) bool { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlnum(c byte) bool { return isLower(c) || isDigit(c) || (c >= 'A' && c <= 'Z') }

// dnsLabelChars reports whether s matches [a-z0-9]([-a-z0-9]*[a-z0-9])? (no length limit).
func dnsLabelChars(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLower(c) && !isDigit(c) && c != '-' {
			return false
		}
	}
	return true
}

// IsDNS1123Label: at most 63 characters of [a-z0-9-], alphanumeric at both ends.
func IsDNS1123Label(s string) bool { return len(s) <= 63 && dnsLabelChars(s) }

// IsDNS1123Subdomain: at most 253 characters, dot-separated DNS-1123 labels.
func IsDNS1123Subdomain(s string) bool {
	if len(s) > 253 {
		return false
	}
	for part := range strings.SplitSeq(s, ".") {
		if !dnsLabelChars(part) {
			return false
		}
	}
	return true
}

// qualifiedNamePart matches ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9], at most 63.
func qualifiedNamePart(s string) bool {
	if s == "" || len(s) > 63 || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// IsQualifiedName: a label or annotation key, [prefix/]name with a DNS-1123 subdomain prefix.
func IsQualifiedName(s string) bool {
	prefix, name, ok := strings.Cut(s, "/")
	if !ok {
		return qualifiedNamePart(s)
	}
	return prefix != "" && IsDNS1123Subdomain(prefix) && qualifiedNamePart(name)
}

// IsLabelValue: empty, or at most 63 characters of [-A-Za-z0-9_.], alphanumeric at both ends.
func IsLabelValue(s string) bool { return s == "" || qualifiedNamePart(s) }

// IsUUID: 8-4-4-4-12 hexadecimal digits, as Kubernetes writes object UIDs.
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !isDigit(c) && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
				return false
			}
		}
	}
	return true
}

// IsIP: an IPv4 or IPv6 address without zone (leading zeros are refused).
func IsIP(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Zone() == ""
}

// The kubelet renders an unknown IP as "".
func isIPOrEmpty(s string) bool { return s == "" || IsIP(s) }

// isIPListOrEmpty: IPs joined by "," as the kubelet renders status.podIPs/hostIPs.
func isIPListOrEmpty(s string) bool {
	if s == "" {
		return true
	}
	for ip := range strings.SplitSeq(s, ",") {
		if !IsIP(ip) {
			return false
		}
	}
	return true
}
