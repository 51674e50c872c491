package containers

import (
	"slices"
	"testing"
)

// kubeletEnv is what kubelet v1.33 puts into a container of a pod in namespace "web" with
// the default enableServiceLinks, for the kubernetes Service (10.96.0.1:443, port "https")
// and a Service redis-leader (10.96.0.23:6379, unnamed port): source pkg/kubelet/envvars.
var kubeletEnv = map[string]string{
	"KUBERNETES_SERVICE_HOST":          "10.96.0.1",
	"KUBERNETES_SERVICE_PORT":          "443",
	"KUBERNETES_SERVICE_PORT_HTTPS":    "443",
	"KUBERNETES_PORT":                  "tcp://10.96.0.1:443",
	"KUBERNETES_PORT_443_TCP":          "tcp://10.96.0.1:443",
	"KUBERNETES_PORT_443_TCP_PROTO":    "tcp",
	"KUBERNETES_PORT_443_TCP_PORT":     "443",
	"KUBERNETES_PORT_443_TCP_ADDR":     "10.96.0.1",
	"REDIS_LEADER_SERVICE_HOST":        "10.96.0.23",
	"REDIS_LEADER_SERVICE_PORT":        "6379",
	"REDIS_LEADER_PORT":                "tcp://10.96.0.23:6379",
	"REDIS_LEADER_PORT_6379_TCP":       "tcp://10.96.0.23:6379",
	"REDIS_LEADER_PORT_6379_TCP_PROTO": "tcp",
	"REDIS_LEADER_PORT_6379_TCP_PORT":  "6379",
	"REDIS_LEADER_PORT_6379_TCP_ADDR":  "10.96.0.23",
	"V6_SERVICE_HOST":                  "fd00::17",
	"V6_PORT":                          "tcp://[fd00::17]:80",
	// A Service named foo-service: its URL variable is FOO_SERVICE_PORT.
	"FOO_SERVICE_PORT": "tcp://10.96.0.9:80",
}

func TestServiceEnv(t *testing.T) {
	names := func(kvs [][2]string) []string {
		var out []string
		for _, kv := range kvs {
			out = append(out, kv[0])
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		env   map[string]string
		links bool
		want  []string
	}{
		{name: "kubelet's variables, links on", env: kubeletEnv, links: true, want: []string{
			"FOO_SERVICE_PORT",
			"KUBERNETES_PORT", "KUBERNETES_PORT_443_TCP", "KUBERNETES_PORT_443_TCP_ADDR", "KUBERNETES_PORT_443_TCP_PORT",
			"KUBERNETES_PORT_443_TCP_PROTO", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBERNETES_SERVICE_PORT_HTTPS",
			"REDIS_LEADER_PORT", "REDIS_LEADER_PORT_6379_TCP", "REDIS_LEADER_PORT_6379_TCP_ADDR", "REDIS_LEADER_PORT_6379_TCP_PORT",
			"REDIS_LEADER_PORT_6379_TCP_PROTO", "REDIS_LEADER_SERVICE_HOST", "REDIS_LEADER_SERVICE_PORT",
			"V6_PORT", "V6_SERVICE_HOST"}},
		{name: "enableServiceLinks false: the API server's only", env: kubeletEnv, links: false, want: []string{
			"KUBERNETES_PORT", "KUBERNETES_PORT_443_TCP", "KUBERNETES_PORT_443_TCP_ADDR", "KUBERNETES_PORT_443_TCP_PORT",
			"KUBERNETES_PORT_443_TCP_PROTO", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBERNETES_SERVICE_PORT_HTTPS"}},
		{name: "values without the kubelet's syntax are dropped", links: true, env: map[string]string{
			"A_SERVICE_HOST":      "10.0.0.1; rm -rf /",
			"B_SERVICE_HOST":      "example.com",
			"C_SERVICE_PORT":      "0",
			"D_SERVICE_PORT":      "65536",
			"E_SERVICE_PORT":      "080",
			"F_PORT":              "http://10.0.0.1:80",
			"G_PORT_80_TCP":       "udp://10.0.0.1:80",
			"H_PORT_80_TCP_PROTO": "udp",
			"I_PORT_80_TCP_ADDR":  "fe80::1%eth0",
			"J_SERVICE_HOST":      "010.0.0.1",
			"LD_PRELOAD":          "/tmp/x.so",
			"PATH":                "/evil",
			"lower_SERVICE_HOST":  "10.0.0.1",
			"K_SERVICE_HOST":      "10.0.0.1\n",
			"SECRET_TOKEN":        "abc",
			"M_PORT":              "tcp://10.0.0.1:0",
			"N_SERVICE_PORT_X":    "1x",
			"OK_SERVICE_HOST":     "10.0.0.2",
		}, want: []string{"OK_SERVICE_HOST"}},
		{name: "a host-provided envFrom Secret's keys are not Services", links: true, env: map[string]string{
			"SEALPOD_ENVFROM_0_DB_SERVICE_HOST": "10.0.0.3", // tagged by the placeholder
			"DB_SERVICE_HOST":                   "10.96.0.7",
		}, want: []string{"DB_SERVICE_HOST"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := names(serviceEnv(tc.env, tc.links))
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func FuzzServiceVar(f *testing.F) {
	for k, v := range kubeletEnv {
		f.Add(k, v)
	}
	f.Fuzz(func(t *testing.T, name, value string) {
		svc, ok := serviceVar(name, value)
		if !ok {
			return
		}
		if svc == "" || len(value) > 64 {
			t.Fatalf("accepted %q=%q (service %q)", name, value, svc)
		}
		for _, r := range name + value {
			if r < 0x20 || r > 0x7e || r == ' ' || r == '$' || r == '\'' || r == '"' || r == ';' {
				t.Fatalf("accepted %q=%q with %q", name, value, r)
			}
		}
	})
}
