package installer

import (
	"context"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	shimconfig "github.com/sealpod/sealpod/runtime-shim/config"
)

// TestInstallLabelsEachReadyTEE: a node offering several TEEs is checked once per TEE and
// labelled for every TEE whose check passes (one label per TEE, so that the node matches the
// RuntimeClass of each); the labels of the others are removed; none ready is an error.
func TestInstallLabelsEachReadyTEE(t *testing.T) {
	tests := []struct {
		name    string
		tees    []TEE
		breakIt func(h *fakeHost)
		calls   []string // label calls
		ready   []bool   // per TEE: the report's NodeReady
		wantErr string   // "" : Install succeeds
	}{
		{"all ready", []TEE{TEESNP, TEESimTDX}, nil, []string{"set snp,sim-tdx"}, []bool{true, true}, ""},
		{"one ready", []TEE{TEESNP, TEESimTDX}, func(h *fakeHost) { write(t, h.path("/"+snpHostParam), []byte("N\n"), 0o444) },
			[]string{"set sim-tdx"}, []bool{false, true}, ""},
		{"order kept", []TEE{TEESimTDX, TEESim, TEESNP}, nil, []string{"set sim-tdx,sim,snp"}, []bool{true, true, true}, ""},
		{"none ready", []TEE{TEESNP, TEESimTDX}, func(h *fakeHost) { _ = os.Remove(h.path("/dev/kvm")) },
			[]string{"remove"}, []bool{false, false}, "node not ready for TEE snp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(t, TEESNP)
			if tc.breakIt != nil {
				tc.breakIt(h)
			}
			lab := &recordingLabeler{}
			ro := h.opts
			ro.HostRoot, ro.TEE = "", "" // taken from Install's options
			cfg := shimconfig.Config{QEMU: h.qemu, Accel: "kvm", SimTDXKey: DefaultSimTDXKeyPath}
			if slices.Contains(tc.tees, TEESim) {
				cfg.SimKey = DefaultSimKeyPath
			}
			res, err := Install(context.Background(), Options{
				HostRoot: h.root, TEEs: tc.tees, Labeler: lab, Readiness: &ro,
				ShimConfig: &ShimNodeConfig{Config: cfg},
			})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Install: %v", err)
			case tc.wantErr != "" && (!errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "sim-tdx")):
				t.Fatalf("Install: %v, want ErrNotReady naming %q and sim-tdx", err, tc.wantErr)
			}
			if !slices.Equal(lab.calls, tc.calls) {
				t.Fatalf("label calls %q, want %q", lab.calls, tc.calls)
			}
			if len(res.Checks) != len(tc.tees) {
				t.Fatalf("%d reports for %d TEEs", len(res.Checks), len(tc.tees))
			}
			var labelled []TEE
			for i, rep := range res.Checks {
				if rep.TEE != tc.tees[i] || rep.NodeReady != tc.ready[i] {
					t.Errorf("report %d: TEE %s NodeReady %v, want %s %v (failed %v)", i, rep.TEE, rep.NodeReady, tc.tees[i], tc.ready[i], rep.Failed(""))
				}
				if tc.ready[i] {
					labelled = append(labelled, tc.tees[i])
				}
			}
			if !slices.Equal(res.LabeledTEEs, labelled) || res.Labeled != (len(labelled) > 0) {
				t.Errorf("Result labelled %v %v, want %v", res.Labeled, res.LabeledTEEs, labelled)
			}
		})
	}
	// The TEE comes from Options.TEEs, one check each: a TEE in the readiness options is refused.
	h := newFakeHost(t, TEESNP)
	ro := h.opts
	ro.HostRoot = ""
	if _, err := Install(context.Background(), Options{HostRoot: h.root, TEEs: []TEE{TEESNP}, Readiness: &ro,
		ShimConfig: &ShimNodeConfig{Config: shimconfig.Config{QEMU: h.qemu, Accel: "kvm"}}}); err == nil || !strings.Contains(err.Error(), "checks each of its TEEs") {
		t.Fatalf("Install with Readiness.TEE: %v", err)
	}
}

// TestTEELabel: the label keys are valid Kubernetes label keys (prefix/name, name ≤ 63
// characters of [A-Za-z0-9._-], alphanumeric at both ends) for every known TEE.
func TestTEELabel(t *testing.T) {
	for _, tt := range []TEE{TEESNP, TEETDX, TEEPEF, TEESim, TEESimTDX} {
		k := TEELabel(tt)
		prefix, name, ok := strings.Cut(k, "/")
		if !ok || prefix != "sealpod.io" || name != "tee."+string(tt) || len(name) > 63 || !labelNameRE.MatchString(name) {
			t.Errorf("TEELabel(%s) = %q", tt, k)
		}
	}
}

var labelNameRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
