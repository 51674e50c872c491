package hostvalue

import (
	"fmt"
	"strings"
)

// Resource divisors Kubernetes allows (validateContainerResourceDivisor), in the
// canonical form resource.Quantity.String() gives, as multiples of the base unit the host
// supplies: millicores for cpu, bytes for memory, ephemeral-storage and hugepages.
var (
	cpuDivisors = map[string]int64{"1m": 1, "1": 1000}
	memDivisors = map[string]int64{
		"1": 1, "1k": 1e3, "1M": 1e6, "1G": 1e9, "1T": 1e12, "1P": 1e15, "1E": 1e18,
		"1Ki": 1 << 10, "1Mi": 1 << 20, "1Gi": 1 << 30, "1Ti": 1 << 40, "1Pi": 1 << 50, "1Ei": 1 << 60,
	}
)

// IsResource reports whether r is a resource an env var's resourceFieldRef can read:
// {limits,requests}.{cpu,memory,ephemeral-storage,hugepages-<size>}.
func IsResource(r string) bool {
	kind, name, ok := strings.Cut(r, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return false
	}
	switch name {
	case "cpu", "memory", "ephemeral-storage":
		return true
	}
	size, ok := strings.CutPrefix(name, "hugepages-")
	return ok && isPageSize(size)
}

// isPageSize accepts a hugepage size as Kubernetes writes it: digits and an optional
// binary or decimal SI suffix ("2Mi", "1Gi").
func isPageSize(s string) bool {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 || i > 18 {
		return false
	}
	switch s[i:] {
	case "", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei":
		return true
	}
	return false
}

// Divisor returns the divisor d (canonical form, "" = "1") of resource r in base units,
// or an error if Kubernetes does not allow it for r.
func Divisor(r, d string) (int64, error) {
	if d == "" {
		d = "1"
	}
	table, allowed := memDivisors, "1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi, 1Ei"
	if strings.HasSuffix(r, ".cpu") {
		table, allowed = cpuDivisors, "1m, 1"
	}
	if !IsResource(r) {
		return 0, fmt.Errorf("resource %q cannot be read by an env var", r)
	}
	if n, ok := table[d]; ok {
		return n, nil
	}
	return 0, fmt.Errorf("divisor %q is not allowed for %s (Kubernetes allows %s)", d, r, allowed)
}

// isBaseUnits accepts a non-negative int64 in decimal without sign or leading zeros, as
// the kubelet renders a resource (strconv.FormatInt).
func isBaseUnits(s string) bool {
	if s == "" || len(s) > 19 || (len(s) > 1 && s[0] == '0') {
		return false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
		n = n*10 + uint64(s[i]-'0')
	}
	return n <= 1<<63-1
}
