package netconfig

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/sealpod/sealpod/agent/api"
)

func slirp() *api.NetworkConfig {
	return &api.NetworkConfig{
		Interfaces: []*api.Interface{{Mac: "52:54:00:12:34:56", Name: "eth0", Addresses: []string{"10.0.2.15/24"}, Mtu: 1500}},
		Routes:     []*api.Route{{Destination: "default", Gateway: "10.0.2.2"}},
		DnsServers: []string{"10.0.2.3"}, DnsSearch: []string{"default.svc.cluster.local"}, Hostname: "web-0",
	}
}

func TestValidate(t *testing.T) {
	if err := Validate(slirp()); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	tests := map[string]func(c *api.NetworkConfig){
		"bad mac":        func(c *api.NetworkConfig) { c.Interfaces[0].Mac = "52:54:00:12:34" },
		"bad cidr":       func(c *api.NetworkConfig) { c.Interfaces[0].Addresses[0] = "10.0.2.15" },
		"tiny mtu":       func(c *api.NetworkConfig) { c.Interfaces[0].Mtu = 100 },
		"bad ifname":     func(c *api.NetworkConfig) { c.Interfaces[0].Name = "eth0; rm -rf" },
		"bad route":      func(c *api.NetworkConfig) { c.Routes[0].Destination = "everywhere" },
		"bad gateway":    func(c *api.NetworkConfig) { c.Routes[0].Gateway = "gw" },
		"no gw nor dev":  func(c *api.NetworkConfig) { c.Routes[0].Gateway = "" },
		"bad dns":        func(c *api.NetworkConfig) { c.DnsServers[0] = "dns.example" },
		"dns injection":  func(c *api.NetworkConfig) { c.DnsSearch[0] = "a\nnameserver 6.6.6.6" },
		"bad hostname":   func(c *api.NetworkConfig) { c.Hostname = "Web_0" },
		"too many dns":   func(c *api.NetworkConfig) { c.DnsServers = make([]string, MaxDNS+1) },
		"too many ifs":   func(c *api.NetworkConfig) { c.Interfaces = make([]*api.Interface, MaxInterfaces+1) },
		"too many addrs": func(c *api.NetworkConfig) { c.Interfaces[0].Addresses = make([]string, MaxAddresses+1) },
		"search too long": func(c *api.NetworkConfig) {
			c.DnsSearch = []string{strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 63)}
		},
		"search empty label":    func(c *api.NetworkConfig) { c.DnsSearch[0] = "a..b" },
		"search uppercase":      func(c *api.NetworkConfig) { c.DnsSearch[0] = "Default.svc" },
		"option not allowed":    func(c *api.NetworkConfig) { c.DnsOptions = []string{"debug"} },
		"option injection":      func(c *api.NetworkConfig) { c.DnsOptions = []string{"ndots:5\nnameserver 6.6.6.6"} },
		"option space":          func(c *api.NetworkConfig) { c.DnsOptions = []string{"ndots:5 rotate"} },
		"ndots out of range":    func(c *api.NetworkConfig) { c.DnsOptions = []string{"ndots:16"} },
		"ndots not a number":    func(c *api.NetworkConfig) { c.DnsOptions = []string{"ndots:five"} },
		"ndots sign":            func(c *api.NetworkConfig) { c.DnsOptions = []string{"ndots:+5"} },
		"ndots without value":   func(c *api.NetworkConfig) { c.DnsOptions = []string{"ndots"} },
		"timeout zero":          func(c *api.NetworkConfig) { c.DnsOptions = []string{"timeout:0"} },
		"attempts too many":     func(c *api.NetworkConfig) { c.DnsOptions = []string{"attempts:6"} },
		"flag with value":       func(c *api.NetworkConfig) { c.DnsOptions = []string{"rotate:1"} },
		"duplicate option":      func(c *api.NetworkConfig) { c.DnsOptions = []string{"ndots:5", "ndots:2"} },
		"too many options":      func(c *api.NetworkConfig) { c.DnsOptions = make([]string, MaxDNSOptions+1) },
		"too many search":       func(c *api.NetworkConfig) { c.DnsSearch = make([]string, MaxDNS+1) },
		"server with zone":      func(c *api.NetworkConfig) { c.DnsServers[0] = "fe80::1%eth0" },
		"gateway with zone":     func(c *api.NetworkConfig) { c.Routes[0].Gateway = "fe80::1%x y" },
		"server zone injection": func(c *api.NetworkConfig) { c.DnsServers[0] = "fe80::1%x\nnameserver 6.6.6.6" },
		"server with newline":   func(c *api.NetworkConfig) { c.DnsServers[0] = "10.0.0.1\nsearch evil" },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			c := slirp()
			mutate(c)
			if err := Validate(c); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate: %v, want ErrInvalid", err)
			}
		})
	}
}

// TestResolvConf: what the agent writes for valid configurations, e.g. what the kubelet gives
// a ClusterFirst pod (containerd's sandbox resolv.conf, parsed by runtime-shim/netns).
func TestResolvConf(t *testing.T) {
	cases := []struct {
		name                    string
		servers, search, option []string
		want                    string
	}{
		{name: "none"},
		{name: "slirp", servers: []string{"10.0.2.3"}, want: "nameserver 10.0.2.3\n"},
		{name: "ClusterFirst", servers: []string{"10.96.0.10"},
			search: []string{"team-a.svc.cluster.local", "svc.cluster.local", "cluster.local"}, option: []string{"ndots:5"},
			want: "nameserver 10.96.0.10\nsearch team-a.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"},
		{name: "pod dnsConfig options", servers: []string{"10.96.0.10", "fd00::a"}, option: []string{"ndots:2", "edns0", "timeout:3", "attempts:2",
			"rotate", "single-request-reopen", "use-vc", "no-tld-query", "trust-ad"},
			want: "nameserver 10.96.0.10\nnameserver fd00::a\noptions ndots:2 edns0 timeout:3 attempts:2 rotate single-request-reopen use-vc no-tld-query trust-ad\n"},
		{name: "options only", option: []string{"ndots:0"}, want: "options ndots:0\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &api.NetworkConfig{DnsServers: tc.servers, DnsSearch: tc.search, DnsOptions: tc.option}
			if err := Validate(c); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if got := ResolvConf(c); got != tc.want {
				t.Fatalf("resolv.conf:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// TestValidateNamesField: a refused DNS value is named by its field and index.
func TestValidateNamesField(t *testing.T) {
	c := slirp()
	c.DnsOptions = []string{"ndots:5", "debug"}
	if err := Validate(c); err == nil || !strings.Contains(err.Error(), "dns_options[1]") {
		t.Fatalf("Validate: %v, want an error naming dns_options[1]", err)
	}
}

// FuzzValidate decodes arbitrary NetworkConfig bytes (as the agent receives them inside
// UnsealRequest) and validates them; anything valid must render a resolv.conf with one
// directive per line.
func FuzzValidate(f *testing.F) {
	b, _ := proto.Marshal(slirp())
	f.Add(b)
	f.Add([]byte{0x0a, 0x00})
	withOpts := slirp()
	withOpts.DnsOptions = []string{"ndots:5", "edns0"}
	b, _ = proto.Marshal(withOpts)
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var c api.NetworkConfig
		if proto.Unmarshal(data, &c) != nil {
			return
		}
		if Validate(&c) != nil {
			return
		}
		for _, line := range strings.Split(strings.TrimSuffix(ResolvConf(&c), "\n"), "\n") {
			if line != "" && !strings.HasPrefix(line, "nameserver ") && !strings.HasPrefix(line, "search ") &&
				!strings.HasPrefix(line, "options ") {
				t.Fatalf("resolv.conf line %q", line)
			}
		}
	})
}
