package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/internal/testdeps"
	"github.com/sealpod/sealpod/runtime-shim/qemu/qmptest"
)

func TestMaxHotplugSlotsIsSpec(t *testing.T) {
	if MaxHotplugSlots != spec.MaxPlaceholderVolumes {
		t.Fatalf("MaxHotplugSlots %d, spec.MaxPlaceholderVolumes %d", MaxHotplugSlots, spec.MaxPlaceholderVolumes)
	}
	if s := VolumeSerial(MaxHotplugSlots - 1); len(s) > 20 {
		t.Fatalf("serial %q longer than virtio-blk's 20 bytes", s)
	}
}

// TestHotplugArgs: slots give one root port each with its own id and slot number, native
// hot-plug, and are refused out of range or on pef; a QMP listener needs its socket path.
func TestHotplugArgs(t *testing.T) {
	base := Config{TEE: TEESim, Guest: guest(""), AgentSocket: "/run/a.sock", SimSPSocket: "/run/s.sock"}
	for _, n := range []int{1, MaxHotplugSlots} {
		c := base
		c.HotplugSlots = n
		cmd, err := c.Command()
		if err != nil {
			t.Fatal(err)
		}
		ids, slots := map[string]bool{}, map[string]bool{}
		global := 0
		for i, a := range cmd.Args {
			if a == "-global" && cmd.Args[i+1] == NativeHotplugGlobal {
				global++
			}
			if rest, ok := strings.CutPrefix(a, "pcie-root-port,"); ok {
				for _, kv := range strings.Split(rest, ",") {
					k, v, _ := strings.Cut(kv, "=")
					switch k {
					case "id":
						ids[v] = true
					case "slot":
						slots[v] = true
					}
				}
			}
		}
		if len(ids) != n || len(slots) != n || global != 1 || !ids[RootPortID(n-1)] {
			t.Errorf("%d slots: root port ids %v, slots %v, %d native hot-plug options", n, ids, slots, global)
		}
	}
	cmd, _ := base.Command()
	if strings.Contains(strings.Join(cmd.Args, " "), "pcie-root-port") || strings.Contains(strings.Join(cmd.Args, " "), NativeHotplugGlobal) {
		t.Error("root ports without HotplugSlots")
	}
	f, _ := os.Open(os.DevNull)
	defer f.Close()
	for name, c := range map[string]Config{
		"HotplugSlots":   func() Config { c := base; c.HotplugSlots = MaxHotplugSlots + 1; return c }(),
		"HotplugSlots ":  func() Config { c := base; c.HotplugSlots = -1; return c }(),
		"HotplugSlots  ": {TEE: TEEPEF, Guest: guest(""), AgentSocket: "/run/a.sock", HotplugSlots: 1},
		"QMPListener":    func() Config { c := base; c.QMPListener = f; return c }(),
	} {
		if _, err := c.Command(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), strings.TrimSpace(name)) {
			t.Errorf("%s: %v, want ErrInvalidConfig naming it", name, err)
		}
	}
}

// qemuDeviceProps lists the properties `qemu -device <driver>,help` shows.
func qemuDeviceProps(t *testing.T, bin, driver string) map[string]bool {
	t.Helper()
	out, err := exec.Command(bin, "-device", driver+",help").CombinedOutput()
	if err != nil {
		t.Fatalf("%s -device %s,help: %v\n%s", bin, driver, err, out)
	}
	props := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			k, _, _ := strings.Cut(f[0], "=")
			props[k] = true
		}
	}
	return props
}

// TestHotplugPropertiesKnownToQEMU: every property of the root ports (golden *-volumes.args),
// the -global and the device_add of a hot-plug exists in the installed QEMU's device help (the
// devices are the same q35 ones for sim, snp and tdx; QEMU's QAPI schema does not describe
// qdev properties).
func TestHotplugPropertiesKnownToQEMU(t *testing.T) {
	bin, err := exec.LookPath(BinaryX86)
	if err != nil {
		testdeps.Missing(t, "%s not installed: %v", BinaryX86, err)
	}
	check := func(src, driver string, keys []string) {
		props := qemuDeviceProps(t, bin, driver)
		for _, k := range keys {
			if k == "driver" || k == "id" || k == "bus" {
				continue // qdev's own options
			}
			if !props[k] {
				t.Errorf("%s: %s has no property %q", src, driver, k)
			}
		}
	}
	n := 0
	for _, name := range []string{"sim-tcg-volumes", "snp-node-volumes", "tdx-node-volumes"} {
		golden, err := os.ReadFile(filepath.Join("testdata", name+".args"))
		if err != nil {
			t.Fatal(err)
		}
		args := strings.Split(string(golden), "\n")
		for i, a := range args {
			switch {
			case a == "-device" && strings.HasPrefix(args[i+1], "pcie-root-port,"):
				var keys []string
				for _, kv := range strings.Split(args[i+1], ",")[1:] {
					k, _, _ := strings.Cut(kv, "=")
					keys = append(keys, k)
				}
				check(name, "pcie-root-port", keys)
				n++
			case a == "-global":
				drv, kv, _ := strings.Cut(args[i+1], ".")
				k, _, _ := strings.Cut(kv, "=")
				check(name, drv, []string{k})
			}
		}
	}
	if n != 6 {
		t.Fatalf("%d root ports checked in the golden files, want 6", n)
	}
	for _, conf := range []bool{false, true} {
		cmds, err := HotplugCommands(Disk{Slot: 3, Driver: DriverFile, Confidential: conf})
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for k := range cmds[2]["arguments"].(map[string]any) {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		check(fmt.Sprintf("device_add (confidential %v)", conf), "virtio-blk-pci", keys)
	}
}

// TestHotplugSequence: the QMP commands of a hot-plug (golden testdata/hotplug-*.qmp.json),
// the descriptor passed with add-fd, and on a refusal the removal of what was added.
func TestHotplugSequence(t *testing.T) {
	ctx := context.Background()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tests := []struct {
		golden  string
		disk    Disk
		fail    string
		wantErr string
	}{
		{"hotplug-file", Disk{Slot: 0, File: f, Driver: DriverFile, Direct: true}, "", ""},
		{"hotplug-hostdevice-confidential", Disk{Slot: 15, File: f, Driver: DriverHostDevice, Direct: true, Confidential: true}, "", ""},
		{"hotplug-fail-blockdev", Disk{Slot: 1, File: f, Driver: DriverFile}, "blockdev-add", "blockdev-add refused"},
		{"hotplug-fail-device", Disk{Slot: 2, File: f, Driver: DriverFile}, "device_add", "device_add refused"},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			srv := qmptest.Start(t, qmptest.Hotplug(tc.fail))
			q, err := DialQMP(ctx, srv.Path, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			err = Hotplug(ctx, q, tc.disk)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Hotplug: %v, want error %q", err, tc.wantErr)
			}
			srv.CheckGolden(t, filepath.Join("testdata", tc.golden+".qmp.json"), *update)
		})
	}
	for _, d := range []Disk{{Slot: -1, File: f, Driver: DriverFile}, {Slot: 16, File: f, Driver: DriverFile},
		{Slot: 0, File: f, Driver: "raw"}, {Slot: 0, Driver: DriverFile}} {
		if err := Hotplug(ctx, nil, d); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Hotplug(%+v): %v, want ErrInvalidConfig", d, err)
		}
	}
}
