package installer

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	shimconfig "github.com/sealpod/sealpod/runtime-shim/config"
)

func jsonConfig(c shimconfig.Config) ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	return append(b, '\n'), err
}

func statusOf(rep *CheckReport) map[string]CheckStatus {
	m := map[string]CheckStatus{}
	for _, it := range rep.Items {
		m[it.Name] = it.Status
	}
	return m
}

// checkFails runs Check and compares the failed items with want (nil: ready).
func checkFails(t *testing.T, o CheckOptions, want ...string) *CheckReport {
	t.Helper()
	rep, err := Check(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if got := rep.Failed(""); !slices.Equal(got, want) {
		t.Fatalf("failed items %q, want %q\n%s", got, want, text.String())
	}
	if rep.Ready != (len(want) == 0) {
		t.Fatalf("Ready = %v with failures %q", rep.Ready, want)
	}
	if len(want) > 0 && !strings.Contains(text.String(), "node not ready") {
		t.Fatalf("text report does not say not ready:\n%s", text.String())
	}
	return rep
}

// TestCheckFakeSNPHost: a fake root describing an SNP host passes; breaking any one thing
// the SNP path needs fails exactly that item.
func TestCheckFakeSNPHost(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(t *testing.T, h *fakeHost)
		want   []string
	}{
		{"ready", func(*testing.T, *fakeHost) {}, nil},
		{"no /dev/kvm", func(t *testing.T, h *fakeHost) { os.Remove(h.path("/dev/kvm")) }, []string{ItemKVM}},
		{"sev_snp off", func(t *testing.T, h *fakeHost) { write(t, h.path("/"+snpHostParam), []byte("N\n"), 0o444) }, []string{ItemTEEEnabled}},
		{"qemu 9.0", func(t *testing.T, h *fakeHost) {
			h.opts.QEMU = fakeQEMU(t, "9.0.2", "sev-guest", "sev-snp-guest")
		}, []string{ItemQEMUVersion}},
		{"qemu without sev-snp-guest", func(t *testing.T, h *fakeHost) {
			h.opts.QEMU = fakeQEMU(t, "9.2.0", "sev-guest")
		}, []string{ItemQEMUObject}},
		{"qemu missing", func(t *testing.T, h *fakeHost) { h.opts.QEMU = filepath.Join(t.TempDir(), "nope") }, []string{ItemQEMUVersion, ItemQEMUObject}},
		{"OvmfX64 firmware", func(t *testing.T, h *fakeHost) {
			write(t, h.path(firmwareHostPath), sharedFirmware(t, "ovmf_OvmfX64_suffix.bin"), 0o644)
		}, []string{ItemFirmware}},
		{"TDVF as SNP firmware", func(t *testing.T, h *fakeHost) { write(t, h.path(firmwareHostPath), tdvf(t), 0o644) }, []string{ItemFirmware}},
		{"firmware missing", func(t *testing.T, h *fakeHost) { os.Remove(h.path(firmwareHostPath)) }, []string{ItemFirmware}},
		{"cpu without snp", func(t *testing.T, h *fakeHost) {
			writeCPUID(t, h.path("/dev/cpu/0/cpuid"), snpCPUID(0x0f, 51|1<<6))
		}, []string{ItemCBitPos}},
		{"no cpuid driver", func(t *testing.T, h *fakeHost) { os.RemoveAll(h.path("/dev/cpu")) }, []string{ItemCBitPos}},
		{"node config for sim", func(t *testing.T, h *fakeHost) {
			d, _ := jsonConfig(shimconfig.Config{TEE: "sim", SimKey: DefaultSimKeyPath, QEMU: h.qemu})
			write(t, h.path(shimconfig.DefaultPath), d, 0o644)
		}, []string{ItemNodeConfig}},
		{"node config accel tcg", func(t *testing.T, h *fakeHost) {
			// The shim refuses it (snp needs kvm): the node config item fails, naming accel.
			d, _ := jsonConfig(shimconfig.Config{TEE: "snp", Accel: "tcg", QEMU: h.qemu})
			write(t, h.path(shimconfig.DefaultPath), d, 0o644)
			h.opts.QEMU = h.qemu
		}, []string{ItemNodeConfig}},
		{"shim missing", func(t *testing.T, h *fakeHost) { os.Remove(h.path(DefaultShimDir + "/" + ShimBinaryName)) }, []string{ItemShim}},
		{"handler missing", func(t *testing.T, h *fakeHost) { write(t, h.path(DefaultConfigPath), []byte("version = 2\n"), 0o644) }, []string{ItemContainerd}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(t, TEESNP)
			tc.break_(t, h)
			rep := checkFails(t, h.opts, tc.want...)
			st := statusOf(rep)
			if st[ItemQGS] != CheckSkip || st[ItemRuntimeClass] != CheckSkip {
				t.Errorf("qgs/runtimeclass not skipped on an snp node without API: %v", st)
			}
			if tc.want == nil {
				if rep.SNP == nil || rep.SNP.CBitPos != 51 || rep.QEMUVersion != "10.1.2" {
					t.Errorf("report SNP %+v QEMU %q", rep.SNP, rep.QEMUVersion)
				}
				for name, s := range st {
					if s != CheckOK && name != ItemQGS && name != ItemRuntimeClass {
						t.Errorf("%s: %s, want ok", name, s)
					}
				}
			}
		})
	}
}

func TestCheckFakeTDXHost(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(t *testing.T, h *fakeHost)
		want   []string
	}{
		{"ready", func(*testing.T, *fakeHost) {}, nil},
		{"tdx off", func(t *testing.T, h *fakeHost) { os.Remove(h.path("/" + tdxHostParam)) }, []string{ItemTEEEnabled}},
		{"qemu 9.2 has no tdx-guest", func(t *testing.T, h *fakeHost) {
			h.opts.QEMU = fakeQEMU(t, "9.2.0", "sev-snp-guest")
		}, []string{ItemQEMUVersion, ItemQEMUObject}},
		{"AmdSev OVMF as TDX firmware", func(t *testing.T, h *fakeHost) {
			write(t, h.path(firmwareHostPath), sharedFirmware(t, "ovmf_AmdSev_suffix.bin"), 0o644)
		}, []string{ItemFirmware}},
		{"QGS not listening", func(t *testing.T, h *fakeHost) { h.opts.QGS = "unix:/run/none/qgs.socket" }, []string{ItemQGS}},
		// install --qgs-socket writes the node config; check reads it without --qgs.
		{"QGS at the node config's socket", func(t *testing.T, h *fakeHost) {
			cfg, err := shimconfig.Load(h.path(shimconfig.DefaultPath))
			if err != nil {
				t.Fatal(err)
			}
			cfg.QGSSocket = "/run/other-qgs/qgs.socket"
			data, err := jsonConfig(*cfg)
			if err != nil {
				t.Fatal(err)
			}
			write(t, h.path(shimconfig.DefaultPath), data, 0o644)
			h.listenQGSAt(t, cfg.QGSSocket)
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(t, TEETDX)
			if tc.name != "QGS at the node config's socket" {
				h.listenQGS(t)
			}
			tc.break_(t, h)
			rep := checkFails(t, h.opts, tc.want...)
			if st := statusOf(rep); st[ItemCBitPos] != CheckSkip || tc.want == nil && st[ItemQGS] != CheckOK {
				t.Errorf("statuses %v", st)
			}
		})
	}
}

// TestCheckSimHere: a sim node on this machine (no KVM, no TEE, QEMU 7.2) is ready: only the
// node's own install is checked. Hardware items run against the real host ("/").
func TestCheckSimHere(t *testing.T) {
	dir := t.TempDir()
	cfg, _ := jsonConfig(shimconfig.Config{TEE: "sim", SimKey: filepath.Join(dir, "sim-vcek.pem")})
	write(t, filepath.Join(dir, "shim.json"), cfg, 0o644)
	write(t, filepath.Join(dir, "bin", ShimBinaryName), []byte("#!/bin/sh\n"), 0o755)
	ctrd, _ := AddRuntime(nil, RuntimeOptions{})
	write(t, filepath.Join(dir, "config.toml"), ctrd, 0o644)
	o := CheckOptions{HostRoot: "/", TEE: TEESim, ShimConfigPath: filepath.Join(dir, "shim.json"),
		ContainerdConfig: filepath.Join(dir, "config.toml"), ShimDir: filepath.Join(dir, "bin")}
	rep := checkFails(t, o)
	st := statusOf(rep)
	for _, name := range []string{ItemKVM, ItemTEEEnabled, ItemQEMUVersion, ItemQEMUObject, ItemFirmware, ItemCBitPos, ItemQGS} {
		if st[name] != CheckSkip {
			t.Errorf("%s: %s on a sim node, want skip", name, st[name])
		}
	}
	// The same node config with accel kvm needs KVM.
	cfg, _ = jsonConfig(shimconfig.Config{TEE: "sim", SimKey: "/k.pem", Accel: "kvm"})
	write(t, filepath.Join(dir, "shim.json"), cfg, 0o644)
	o.KVMProbe = func(string) (string, error) { return "", errors.New("no kvm") }
	checkFails(t, o, ItemKVM)
}

// TestCheckThisMachineSNP: this machine (no usable KVM, no SNP) is not ready for snp.
func TestCheckThisMachineSNP(t *testing.T) {
	if _, err := ProbeKVM("/dev/kvm"); err == nil {
		if b, _ := os.ReadFile("/" + snpHostParam); strings.TrimSpace(string(b)) == "Y" {
			t.Skip("this machine is an SNP host")
		}
	}
	rep, err := Check(context.Background(), CheckOptions{TEE: TEESNP, ShimConfigPath: "/nonexistent/shim.json"})
	if err != nil {
		t.Fatal(err)
	}
	st := statusOf(rep)
	if rep.Ready || rep.NodeReady || st[ItemTEEEnabled] != CheckFail || st[ItemNodeConfig] != CheckFail {
		t.Fatalf("statuses %v, ready %v", st, rep.Ready)
	}
	if err := rep.Err(""); !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), ItemTEEEnabled) {
		t.Fatalf("Err = %v", err)
	}
}

func TestCheckOptionErrors(t *testing.T) {
	h := newFakeHost(t, TEESNP)
	for name, mod := range map[string]func(*CheckOptions){
		"relative firmware":  func(o *CheckOptions) { o.Firmware = "fw.fd" },
		"relative config":    func(o *CheckOptions) { o.ContainerdConfig = "config.toml" },
		"bad qgs":            func(o *CheckOptions) { o.QGS = "tcp:1.2.3.4:1" },
		"unknown tee":        func(o *CheckOptions) { o.TEE = "sev" },
		"no tee to be found": func(o *CheckOptions) { o.TEE, o.ShimConfigPath, o.HostRoot = "", "/none.json", t.TempDir() },
	} {
		o := h.opts
		mod(&o)
		if _, err := Check(context.Background(), o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Without --tee the node config's TEE is checked.
	o := h.opts
	o.TEE = ""
	if rep := checkFails(t, o); rep.TEE != TEESNP {
		t.Errorf("TEE from node config: %s", rep.TEE)
	}
}

type fakeRuntimeClasses map[string]string

func (f fakeRuntimeClasses) RuntimeClassHandler(_ context.Context, name string) (string, bool, error) {
	h, ok := f[name]
	return h, ok, nil
}

// TestInstallLabelsOnlyWhenReady: Install labels a ready node, refuses (and removes the label
// from) a node that is not ready, and does not hold the label back for a missing RuntimeClass.
func TestInstallLabelsOnlyWhenReady(t *testing.T) {
	install := func(t *testing.T, h *fakeHost, rc RuntimeClassGetter) (Result, *recordingLabeler, error) {
		lab := &recordingLabeler{}
		ro := h.opts
		ro.HostRoot, ro.TEE, ro.RuntimeClasses = "", "", rc // taken from Install's options
		res, err := Install(context.Background(), Options{
			HostRoot: h.root, TEEs: []TEE{TEESNP}, Labeler: lab, Readiness: &ro,
			ShimConfig: &ShimNodeConfig{Config: shimconfig.Config{QEMU: h.qemu, Accel: "kvm"}},
		})
		return res, lab, err
	}
	t.Run("ready", func(t *testing.T) {
		h := newFakeHost(t, TEESNP)
		res, lab, err := install(t, h, fakeRuntimeClasses{"sealpod-snp": HandlerName})
		if err != nil || !res.Labeled || !slices.Equal(lab.calls, []string{"set snp"}) || len(res.Checks) != 1 || !res.Checks[0].Ready {
			t.Fatalf("install: %v labeled=%v calls=%v", err, res.Labeled, lab.calls)
		}
	})
	t.Run("not ready", func(t *testing.T) {
		h := newFakeHost(t, TEESNP)
		write(t, h.path("/"+snpHostParam), []byte("N\n"), 0o444)
		res, lab, err := install(t, h, nil)
		if !errors.Is(err, ErrNotReady) || res.Labeled || !slices.Equal(lab.calls, []string{"remove"}) {
			t.Fatalf("install: %v labeled=%v calls=%v", err, res.Labeled, lab.calls)
		}
		var nr *NotReadyError
		if !errors.As(err, &nr) || !slices.Equal(nr.Report.Failed(""), []string{ItemTEEEnabled}) {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("runtimeclass missing", func(t *testing.T) {
		h := newFakeHost(t, TEESNP)
		res, lab, err := install(t, h, fakeRuntimeClasses{"sealpod-sim": HandlerName})
		if err != nil || !res.Labeled || !slices.Equal(lab.calls, []string{"set snp"}) {
			t.Fatalf("install: %v labeled=%v calls=%v", err, res.Labeled, lab.calls)
		}
		if rep := res.Checks[0]; rep.Ready || !rep.NodeReady || !slices.Equal(rep.Failed(""), []string{ItemRuntimeClass}) {
			t.Fatalf("report %+v", rep)
		}
	})
}

func TestRuntimeClassHandler(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/apis/node.k8s.io/v1/runtimeclasses/sealpod-snp":
			w.Write([]byte(`{"kind":"RuntimeClass","apiVersion":"node.k8s.io/v1","metadata":{"name":"sealpod-snp"},"handler":"sealpod"}`))
		case "/apis/node.k8s.io/v1/runtimeclasses/sealpod-tdx":
			w.Write([]byte(`{"kind":"RuntimeClass","handler":"kata"}`))
		default:
			http.Error(w, `{"kind":"Status","reason":"NotFound"}`, http.StatusNotFound)
		}
	}))
	defer srv.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	k := &KubeNodeLabeler{Server: srv.URL, Token: "tok", CAPEM: ca, NodeName: "n"}
	ctx := context.Background()
	if h, found, err := k.RuntimeClassHandler(ctx, "sealpod-snp"); err != nil || !found || h != "sealpod" {
		t.Fatalf("sealpod-snp: %q %v %v", h, found, err)
	}
	if _, found, err := k.RuntimeClassHandler(ctx, "sealpod-pef"); err != nil || found {
		t.Fatalf("sealpod-pef: %v %v", found, err)
	}
	bad := &KubeNodeLabeler{Server: srv.URL, Token: "nope", CAPEM: ca, NodeName: "n"}
	if _, _, err := bad.RuntimeClassHandler(ctx, "sealpod-snp"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("unauthorized: %v", err)
	}
	// The check item: ok, wrong handler, missing.
	h := newFakeHost(t, TEESNP)
	for tee, want := range map[TEE][]string{TEESNP: nil, TEETDX: {ItemRuntimeClass}, TEEPEF: {ItemRuntimeClass}} {
		o := h.opts
		o.RuntimeClasses = k
		rep, err := Check(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		o.Handler = HandlerName
		rc := o.checkRuntimeClass(ctx, tee)
		if (rc.Status == CheckFail) != (want != nil) || rc.Scope != ScopeCluster {
			t.Errorf("%s: %+v", tee, rc)
		}
		if tee == TEESNP && !rep.Ready {
			t.Errorf("snp with RuntimeClass: not ready: %v", rep.Failed(""))
		}
	}
}

func TestCheckReportJSON(t *testing.T) {
	h := newFakeHost(t, TEESNP)
	write(t, h.path("/"+snpHostParam), []byte("0\n"), 0o444)
	rep := checkFails(t, h.opts, ItemTEEEnabled)
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var got struct {
		TEE    string `json:"tee"`
		Ready  bool   `json:"ready"`
		Checks []struct {
			Name, Status, Detail, Fix string
		} `json:"checks"`
		SNP *struct {
			CBitPos int `json:"cbitpos"`
		} `json:"snp"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.TEE != "snp" || got.Ready || len(got.Checks) != 11 || got.SNP == nil || got.SNP.CBitPos != 51 {
		t.Fatalf("json %s", buf.String())
	}
	for _, c := range got.Checks {
		if (c.Status == "fail") != (c.Name == ItemTEEEnabled) || c.Status == "fail" && c.Fix == "" {
			t.Errorf("check %+v", c)
		}
	}
}
