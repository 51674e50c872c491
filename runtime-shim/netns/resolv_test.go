package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/netconfig"
)

func TestParseResolvConf(t *testing.T) {
	many := func(kw string, n int) string {
		var b strings.Builder
		for i := range n {
			if kw == "nameserver" {
				fmt.Fprintf(&b, "nameserver 10.0.0.%d\n", i+1)
			}
		}
		if kw == "search" {
			b.WriteString("search")
			for i := range n {
				fmt.Fprintf(&b, " d%d.example", i)
			}
			b.WriteString("\n")
		}
		return b.String()
	}
	cases := []struct {
		name, in  string
		servers   []string
		search    []string
		options   []string
		dropped   []string
		truncated bool
		wantErr   bool
	}{
		{name: "empty"},
		{name: "kubelet", in: "search ns1.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
			servers: []string{"10.96.0.10"}, search: []string{"ns1.svc.cluster.local", "svc.cluster.local", "cluster.local"},
			options: []string{"ndots:5"}},
		// containerd's sandbox resolv.conf for a ClusterFirst pod with dnsConfig (kubelet
		// pkg/kubelet/network/dns: servers, searches, then options, host search domains appended)
		{name: "ClusterFirst with dnsConfig", in: "search team-a.svc.cluster.local svc.cluster.local cluster.local example.internal\n" +
			"nameserver 10.96.0.10\noptions ndots:2 edns0 single-request-reopen\n",
			servers: []string{"10.96.0.10"}, search: []string{"team-a.svc.cluster.local", "svc.cluster.local", "cluster.local", "example.internal"},
			options: []string{"ndots:2", "edns0", "single-request-reopen"}},
		{name: "options: later value wins, first place kept", in: "options ndots:1 rotate\noptions timeout:2 ndots:5\n",
			options: []string{"ndots:5", "rotate", "timeout:2"}},
		{name: "options: numbers capped as the resolver does", in: "options ndots:20 timeout:99 attempts:9 ndots:007\n",
			options: []string{"ndots:7", "timeout:30", "attempts:5"}},
		{name: "options: unknown or malformed dropped", in: "options debug ndots:x inet6 timeout:0 rotate:1 ndots: attempts:2 " + strings.Repeat("9", 40) + "\n",
			options: []string{"attempts:2"}, dropped: []string{"debug", "ndots:x", "inet6", "timeout:0", "rotate:1", "ndots:", strings.Repeat("9", 40)}},
		{name: "options: many dropped, the list bounded", in: "options" + strings.Repeat(" debug", 100) + "\n",
			dropped: slices.Repeat([]string{"debug"}, maxDroppedOptions)},
		{name: "comments and ipv6", in: "# generated\n; also a comment\nnameserver fd00::a # inline\nnameserver 10.0.0.1\n",
			servers: []string{"fd00::a", "10.0.0.1"}},
		{name: "last search wins", in: "search a.example\ndomain b.example\n", search: []string{"b.example"}},
		{name: "case and trailing dot", in: "search Example.COM.\n", search: []string{"example.com"}},
		{name: "tabs", in: "nameserver\t10.1.2.3\n", servers: []string{"10.1.2.3"}},
		{name: "unknown keywords ignored", in: "sortlist 10.0.0.0/8\nlookup file bind\n"},
		{name: "too many servers", in: many("nameserver", 10), servers: []string{"10.0.0.1", "10.0.0.2", "10.0.0.3",
			"10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8"}, truncated: true},
		{name: "too many search domains", in: many("search", 9), search: []string{"d0.example", "d1.example", "d2.example",
			"d3.example", "d4.example", "d5.example", "d6.example", "d7.example"}, truncated: true},
		{name: "bad server", in: "nameserver dns.example\n", wantErr: true},
		{name: "zoned server", in: "nameserver fe80::1%eth0\n", wantErr: true},
		{name: "two servers on a line", in: "nameserver 10.0.0.1 10.0.0.2\n", wantErr: true},
		{name: "bad search", in: "search under_score.example\n", wantErr: true},
		{name: "search label too long", in: "search " + strings.Repeat("a", 64) + ".example\n", wantErr: true},
		{name: "too big", in: strings.Repeat("#", MaxResolvConf+1), wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ParseResolvConf([]byte(tc.in))
			if tc.wantErr {
				if !errors.Is(err, ErrResolvConf) {
					t.Fatalf("got %v, want ErrResolvConf", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(d.Servers, tc.servers) || !slices.Equal(d.Search, tc.search) || d.Truncated != tc.truncated {
				t.Fatalf("got %+v, want servers %v search %v truncated %v", d, tc.servers, tc.search, tc.truncated)
			}
			if !slices.Equal(d.Options, tc.options) || !slices.Equal(d.DroppedOptions, tc.dropped) {
				t.Fatalf("got options %q dropped %q, want %q dropped %q", d.Options, d.DroppedOptions, tc.options, tc.dropped)
			}
			cfg := &api.NetworkConfig{DnsServers: d.Servers, DnsSearch: d.Search, DnsOptions: d.Options}
			if err := netconfig.Validate(cfg); err != nil {
				t.Fatalf("the guest refuses what the shim parsed: %v", err)
			}
		})
	}
}

func TestReadResolvConf(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(p, []byte("nameserver 10.96.0.10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if d, err := ReadResolvConf(p); err != nil || !slices.Equal(d.Servers, []string{"10.96.0.10"}) {
		t.Fatalf("%+v %v", d, err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, MaxResolvConf+10), 0o644)
	if _, err := ReadResolvConf(big); !errors.Is(err, ErrResolvConf) {
		t.Fatalf("oversized: %v", err)
	}
	if _, err := ReadResolvConf(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
}

// FuzzParseResolvConf: never panics, and whatever it accepts the guest's validator accepts.
func FuzzParseResolvConf(f *testing.F) {
	f.Add([]byte("search ns.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"))
	f.Add([]byte("nameserver fd00::1\nnameserver ::ffff:10.0.0.1\ndomain A.b.\n"))
	f.Add([]byte("nameserver 1.2.3.4%x\nsearch -a.b\n"))
	f.Add([]byte("search\nnameserver\n#\n;\n\x00\xff"))
	f.Add([]byte("options ndots:99 timeout:0 attempts:01 rotate edns0 debug ndots:1\noptions ndots:"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseResolvConf(b)
		if err != nil {
			if !errors.Is(err, ErrResolvConf) {
				t.Fatalf("error does not wrap ErrResolvConf: %v", err)
			}
			return
		}
		cfg := &api.NetworkConfig{DnsServers: d.Servers, DnsSearch: d.Search, DnsOptions: d.Options}
		if len(d.DroppedOptions) > maxDroppedOptions {
			t.Fatalf("%d dropped options kept (max %d)", len(d.DroppedOptions), maxDroppedOptions)
		}
		if err := netconfig.Validate(cfg); err != nil {
			t.Fatalf("parsed %q into %+v, which the guest refuses: %v", b, d, err)
		}
	})
}

// TestReadResolvConfRefusesSpecialFiles: the resolv.conf path comes from the pod's OCI spec; a
// FIFO there must be refused at once (opening it for reading blocks until a writer comes),
// and so must a symbolic link or a directory.
func TestReadResolvConfRefusesSpecialFiles(t *testing.T) {
	cases := []struct {
		name string
		make func(p string) error
		want string
	}{
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o644) }, "not a regular file"},
		{"directory", func(p string) error { return os.Mkdir(p, 0o755) }, "not a regular file"},
		{"symlink", func(p string) error {
			target := p + ".target"
			if err := os.WriteFile(target, []byte("nameserver 10.0.0.10\n"), 0o644); err != nil {
				return err
			}
			return os.Symlink(target, p)
		}, "symbolic link"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "resolv.conf")
			if err := tc.make(p); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { // unblock a reader stuck in open
				if f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					f.Close()
				}
			})
			done := make(chan error, 1)
			go func() { _, err := ReadResolvConf(p); done <- err }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
					t.Fatalf("ReadResolvConf(%s): %v, want an error naming it and %q", tc.name, err, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("ReadResolvConf of a %s blocked for 5 s", tc.name)
			}
		})
	}
}
