package qemu

// Tests of issue 14 items 2-4: the launch boots exactly what guest-image measured, sim-tdx is
// the sim VM, and the hardware boundary fails naming what the host lacks.

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/guest-image/measure"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/internal/testdeps"
)

// argValue returns the value after the first flag in args ("" and false if absent).
func argValue(args []string, flag string) (string, bool) {
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		return "", false
	}
	return args[i+1], true
}

// writeTestBundle writes a guest bundle with every file (firmware included) and loads it.
func writeTestBundle(t *testing.T, cfg bundle.Config, initrd []byte) *bundle.Bundle {
	t.Helper()
	dir := t.TempDir()
	cfg.Version = bundle.Version
	data, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{bundle.KernelFile: []byte("kernel bytes"), bundle.InitrdFile: initrd,
		bundle.FirmwareFile: []byte("firmware bytes"), bundle.ConfigFile: data} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := bundle.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// launchInputs reads back from a built command line what the VM boots, as measure.Inputs: the
// files -bios, -kernel and -initrd name, -append, -smp and, for SNP (whose launch digest
// depends on the vCPU model), -cpu.
func launchInputs(t *testing.T, te TEE, args []string) measure.Inputs {
	t.Helper()
	read := func(flag string) []byte {
		p, ok := argValue(args, flag)
		if !ok {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%s %s: %v", flag, p, err)
		}
		return b
	}
	in := measure.Inputs{Firmware: read("-bios"), Boot: &measure.Boot{Kernel: read("-kernel"), Initrd: read("-initrd")}}
	in.Boot.Cmdline, _ = argValue(args, "-append")
	smp, _ := argValue(args, "-smp")
	in.VCPUs, _ = strconv.Atoi(smp)
	if te == TEESNP {
		in.VCPUType, _ = argValue(args, "-cpu")
	}
	return in
}

// TestLaunchIsMeasured: the command line boots what the launch digest was computed over (the
// same guest.json, kernel, initrd and firmware, through measure.BundleInputs): vCPU count and
// type, firmware, kernel, initrd and command line. It fails if the argv and the measurement
// inputs diverge.
func TestLaunchIsMeasured(t *testing.T) {
	bundles := map[string]*bundle.Bundle{
		"default": writeTestBundle(t, bundle.Config{Cmdline: "console=hvc0 quiet", VCPUs: 1, MemoryMiB: 512}, []byte("initrd bytes")),
		"sized":   writeTestBundle(t, bundle.Config{Cmdline: "console=hvc0 panic=-1 a=\"b c\"", VCPUs: 3, MemoryMiB: 2048, VCPUType: "EPYC-Milan"}, []byte("initrd")),
		// A kernel with its initramfs built in (the TDX guest): an empty initrd.img is no initrd.
		"no initrd": writeTestBundle(t, bundle.Config{Cmdline: "console=hvc0", VCPUs: 2, MemoryMiB: 512}, nil),
	}
	for bname, b := range bundles {
		for _, te := range []TEE{TEESim, TEESimTDX, TEESNP, TEETDX} {
			t.Run(bname+"/"+string(te), func(t *testing.T) {
				cfg := Config{TEE: te, Guest: GuestFromBundle(b), HostData: digest, AgentSocket: "/r/agent.sock"}
				if emulated(te) {
					cfg.SimSPSocket = "/r/sp.sock"
				}
				cmd, err := cfg.Command()
				if err != nil {
					t.Fatal(err)
				}
				got := launchInputs(t, te, cmd.Args)
				want := measure.BundleInputs(b)
				if te == TEESNP && want.VCPUType == "" {
					want.VCPUType = measure.DefaultVCPUType // Compute's default
				}
				if !bytes.Equal(got.Boot.Kernel, want.Boot.Kernel) || !bytes.Equal(got.Boot.Initrd, want.Boot.Initrd) ||
					got.Boot.Cmdline != want.Boot.Cmdline || got.VCPUs != want.VCPUs {
					t.Errorf("booted kernel %q initrd %q cmdline %q vcpus %d; measured kernel %q initrd %q cmdline %q vcpus %d",
						got.Boot.Kernel, got.Boot.Initrd, got.Boot.Cmdline, got.VCPUs, want.Boot.Kernel, want.Boot.Initrd, want.Boot.Cmdline, want.VCPUs)
				}
				if (got.Boot.Initrd == nil) != (len(want.Boot.Initrd) == 0) {
					t.Errorf("-initrd given: %v; measured initrd: %d bytes", got.Boot.Initrd != nil, len(want.Boot.Initrd))
				}
				if te == TEESNP && got.VCPUType != want.VCPUType {
					t.Errorf("-cpu %q, measured vCPU type %q", got.VCPUType, want.VCPUType)
				}
				if fwWanted := te == TEESNP || te == TEETDX; fwWanted && !bytes.Equal(got.Firmware, want.Firmware) {
					t.Errorf("-bios holds %q, measured firmware %q", got.Firmware, want.Firmware)
				}
				if emulated(te) {
					// The sim launch digest the shim's simulated TEE reports, computed from the
					// argv's files, is the one computed from the bundle.
					got.TEEs, want.TEEs = []tee.TEE{tee.Sim}, []tee.TEE{tee.Sim}
					// Under emulation QEMU runs -cpu TCGCPU; the VMSA vCPU signature in the sim
					// digest is the one the simulated SP assumes (guest.json vcpuType).
					got.VCPUType = want.VCPUType
					got.Firmware, want.Firmware = nil, nil // SeaBIOS: not measured under sim
					mg, err1 := measure.Compute(got)
					mw, err2 := measure.Compute(want)
					if err1 != nil || err2 != nil || mg.Sim != mw.Sim {
						t.Errorf("sim launch digest of the argv %s (%v), of the bundle %s (%v)", mg.Sim, err1, mw.Sim, err2)
					}
				}
			})
		}
	}
}

// TestSimTDXArgvIsSim: sim-tdx boots the sim VM (the shim answers TDX quote requests on the
// same sealpod.sim-sp port), argument for argument.
func TestSimTDXArgvIsSim(t *testing.T) {
	for name, cfg := range goldenCases(t) {
		if cfg.TEE != TEESim || cfg.Guest.Arch != "" { // TDX is x86: a ppc64le guest is refused under sim-tdx (TestRefusals)
			continue
		}
		t.Run(name, func(t *testing.T) {
			sim, err := cfg.Command()
			if err != nil {
				t.Fatal(err)
			}
			cfg.TEE = TEESimTDX
			st, err := cfg.Command()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(sim.Args, st.Args) || len(sim.ExtraFiles) != len(st.ExtraFiles) {
				t.Errorf("sim-tdx argv differs from sim's:\n%q\n%q", st.Args, sim.Args)
			}
		})
	}
}

// TestCheckHost: the hardware boundary names each missing piece, only where the VM needs it.
func TestCheckHost(t *testing.T) {
	cases := goldenCases(t)
	noKVM := filepath.Join(t.TempDir(), "kvm")
	notChar := filepath.Join(t.TempDir(), "kvm-file")
	if err := os.WriteFile(notChar, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	objects := func(list ...string) func(string) ([]string, error) {
		return func(string) ([]string, error) { return list, nil }
	}
	tests := []struct {
		name    string
		cfg     Config
		kvm     string
		objects func(string) ([]string, error)
		want    []string // substrings of the error; nil: no error
	}{
		{"sim tcg needs nothing", cases["sim-tcg"], noKVM, objects(), nil},
		{"sim kvm without kvm", cases["sim-kvm-tapname"], noKVM, objects(), []string{"no usable " + noKVM, "accel kvm needs KVM"}},
		{"snp without kvm nor object", cases["snp"], noKVM, objects("memory-backend-memfd", "sev-guest"),
			[]string{"no usable " + noKVM, "lacks object sev-snp-guest", "QEMU >= 9.1"}},
		{"snp kvm not a device", cases["snp"], notChar, objects("sev-snp-guest"), []string{"not a character device"}},
		{"snp ready", cases["snp"], os.DevNull, objects("sev-snp-guest"), nil},
		{"snp without object", cases["snp-node"], os.DevNull, objects("sev-guest"), []string{"lacks object sev-snp-guest"}},
		{"tdx without kvm nor object", cases["tdx"], noKVM, objects("sev-snp-guest"), []string{"no usable " + noKVM, "lacks object tdx-guest", "QEMU >= 10.1"}},
		{"tdx ready", cases["tdx-node"], os.DevNull, objects("tdx-guest"), nil},
		{"tdx qemu fails", cases["tdx"], os.DevNull, func(string) ([]string, error) { return nil, errors.New("exec format error") },
			[]string{"did not list its objects", "exec format error", "tdx-guest"}},
		{"pef without object", cases["pef"], os.DevNull, objects(), []string{"lacks object pef-guest"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckHost(tc.cfg, HostOptions{DevKVM: tc.kvm, Objects: tc.objects})
			if tc.want == nil {
				if err != nil {
					t.Fatalf("CheckHost: %v", err)
				}
				return
			}
			var he *HostLacksError
			if !errors.As(err, &he) || !errors.Is(err, ErrHostLacks) || he.TEE != tc.cfg.TEE {
				t.Fatalf("CheckHost: %v, want a *HostLacksError for %s", err, tc.cfg.TEE)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("CheckHost: %v\nlacks %q", err, w)
				}
			}
		})
	}
	if err := CheckHost(Config{TEE: TEESNP}, HostOptions{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("CheckHost of an invalid config: %v", err)
	}
}

func TestParseObjectHelp(t *testing.T) {
	out := []byte("List of user creatable objects:\n  authz-list\n  sev-guest\n  sev-snp-guest\n  tdx-guest\n")
	if got := ParseObjectHelp(out); !slices.Equal(got, []string{"authz-list", "sev-guest", "sev-snp-guest", "tdx-guest"}) {
		t.Errorf("ParseObjectHelp = %q", got)
	}
}

// TestStartAtHardwareBoundary: on a host without KVM or with a QEMU that lacks the TEE's
// object (this machine: no /dev/kvm, QEMU 7.2), an snp or tdx launch fails before QEMU runs,
// naming what is missing. Real QEMU, real /dev.
func TestStartAtHardwareBoundary(t *testing.T) {
	qemuPath, err := exec.LookPath(BinaryX86)
	if err != nil {
		testdeps.Missing(t, "%s not installed (apt-get install -y qemu-system-x86): %v", BinaryX86, err)
	}
	objs, err := QEMUObjects(qemuPath)
	if err != nil {
		t.Fatal(err)
	}
	_, kvmErr := os.Stat(DevKVM)
	for _, name := range []string{"snp-node", "tdx-node"} {
		t.Run(name, func(t *testing.T) {
			cfg := goldenCases(t)[name]
			cfg.Binary = qemuPath
			obj, _ := TEEObject(cfg.TEE)
			var want []string
			if kvmErr != nil {
				want = append(want, "no usable /dev/kvm")
			}
			if !slices.Contains(objs, obj) {
				want = append(want, "lacks object "+obj)
			}
			if len(want) == 0 {
				t.Skipf("this host has /dev/kvm and QEMU with %s: no boundary to test", obj)
			}
			vm, err := Start(cfg, StartOptions{})
			if err == nil {
				vm.Kill()
				t.Fatal("a hardware TEE VM started on a host that lacks it")
			}
			if !errors.Is(err, ErrHostLacks) {
				t.Fatalf("Start: %v, want ErrHostLacks", err)
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Start: %v\nlacks %q", err, w)
				}
			}
			t.Logf("%s: %v", name, err)
		})
	}
}
