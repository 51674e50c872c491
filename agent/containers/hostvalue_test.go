package containers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/hostvalue"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Host values are data, never code: a host value reaches a container only after its field's
// syntax check, an annotation value (no syntax) never reaches argv, and resourceFieldRef
// values are divided by the sealed divisor as the kubelet does.
func TestHostValuesAreData(t *testing.T) {
	podName := spec.EnvVar{Name: "POD_NAME", FromHost: "fieldRef:metadata.name"}
	note := spec.EnvVar{Name: "NOTE", FromHost: "fieldRef:metadata.annotations['note']"}
	f := newPodHV(t, map[string]string{
		"fieldRef:metadata.name":                   "x; echo INJECTED",
		"fieldRef:metadata.annotations['note']":    "a; echo ANN-INJECTED $(POD_NAME)",
		"resourceFieldRef:resources/limits.cpu":    "1500",
		"resourceFieldRef:resources/limits.memory": "134217729", // 128Mi + 1 byte
		"resourceFieldRef:peer/requests.cpu":       "250",
	},
		spec.Container{Name: "inject", Command: []string{"sh", "-c", "echo $(POD_NAME)"}, Env: []spec.EnvVar{podName}},
		spec.Container{Name: "ann-argv", Command: []string{"sh", "-c", "echo $(NOTE)"}, Env: []spec.EnvVar{note}},
		spec.Container{Name: "ann-indirect", Command: []string{"sh", "-c"}, Args: []string{"echo $(WRAPPED)"},
			Env: []spec.EnvVar{note, {Name: "WRAPPED", Value: "<$(NOTE)>"}}},
		spec.Container{Name: "ann-env", Command: []string{"sh", "-c", `echo "$NOTE|$WRAPPED"`},
			Env: []spec.EnvVar{note, {Name: "WRAPPED", Value: "<$(NOTE)>"}}},
		spec.Container{Name: "resources", Command: []string{"sh", "-c", "echo $(CPU_M) $(CPU) $(MEM_MI) $(MEM) $(PEER_M)"}, Env: []spec.EnvVar{
			{Name: "CPU_M", FromHost: "resourceFieldRef:limits.cpu", Divisor: "1m"},
			{Name: "CPU", FromHost: "resourceFieldRef:limits.cpu"},
			{Name: "MEM_MI", FromHost: "resourceFieldRef:limits.memory", Divisor: "1Mi"},
			{Name: "MEM", FromHost: "resourceFieldRef:limits.memory", Divisor: "1"},
			{Name: "PEER_M", FromHost: "resourceFieldRef:requests.cpu", ContainerName: "peer", Divisor: "1m"},
		}},
		spec.Container{Name: "peer", Command: []string{"true"}},
	)
	for _, tt := range []struct {
		name    string
		want    string   // stdout when the container must run
		wantErr []string // parts of the Create error when it must be refused
	}{
		{name: "inject", wantErr: []string{"env POD_NAME", `fieldRef:metadata.name: "x; echo INJECTED" is not a DNS-1123 subdomain`}},
		{name: "ann-argv", wantErr: []string{"command[2]", "$(NOTE)", "metadata.annotations['note']"}},
		{name: "ann-indirect", wantErr: []string{"args[0]", "$(WRAPPED)", "metadata.annotations['note']"}},
		{name: "ann-env", want: "a; echo ANN-INJECTED $(POD_NAME)|<a; echo ANN-INJECTED $(POD_NAME)>\n"},
		{name: "resources", want: "1500 2 129 134217729 250\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.wantErr) == 0 {
				out, errOut, code := f.run(t, tt.name)
				if code != 0 || out != tt.want {
					t.Fatalf("exit %d, stdout %q (want %q), stderr %q", code, out, tt.want, errOut)
				}
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			c, err := f.m.Create(ctx, tt.name)
			if err == nil {
				stdout, stderr := collect(c.Stdout()), collect(c.Stderr())
				_ = c.Start()
				_, _ = c.Wait(ctx)
				t.Fatalf("created and ran: stdout %q stderr %q; want an error", stdout.wait(t), stderr.wait(t))
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v is not ErrInvalid", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// The sealing side finds the variables a command or args element substitutes with
// hostvalue.Refs; the agent's expansion must substitute exactly those.
func FuzzExpandRefs(f *testing.F) {
	for _, s := range []string{"echo $(A) $(B)", "$$(A) $(B", "$$$(A)", "$() $(A)$(A)", "$A ${A} $", "$(A$(B))", "x$(A b)y", "$"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var got []string
		expand(s, func(name string) (string, bool) {
			if name != "" {
				got = append(got, name)
			}
			return "", true
		})
		if want := hostvalue.Refs(s); strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			t.Fatalf("expand(%q) substitutes %q, hostvalue.Refs says %q", s, got, want)
		}
	})
}
