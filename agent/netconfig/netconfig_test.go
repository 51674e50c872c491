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
	if rc := ResolvConf(slirp()); rc != "nameserver 10.0.2.3\nsearch default.svc.cluster.local\n" {
		t.Fatalf("resolv.conf %q", rc)
	}
}

// FuzzValidate decodes arbitrary NetworkConfig bytes (as the agent receives them inside
// UnsealRequest) and validates them; anything valid must render a resolv.conf with one
// directive per line.
func FuzzValidate(f *testing.F) {
	b, _ := proto.Marshal(slirp())
	f.Add(b)
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		var c api.NetworkConfig
		if proto.Unmarshal(data, &c) != nil {
			return
		}
		if Validate(&c) != nil {
			return
		}
		for _, line := range strings.Split(strings.TrimSuffix(ResolvConf(&c), "\n"), "\n") {
			if line != "" && !strings.HasPrefix(line, "nameserver ") && !strings.HasPrefix(line, "search ") {
				t.Fatalf("resolv.conf line %q", line)
			}
		}
	})
}
