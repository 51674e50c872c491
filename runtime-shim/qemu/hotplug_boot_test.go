package qemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealpod/sealpod/guest-image/kernel/kerneltest"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/testdeps"
)

// hotplugMarker is what internal/hotplugguest writes at offset 4096 of each disk.
const hotplugMarker = "sealpod-hotplug-guest-wrote-this"

// TestHotplugBoot boots a sim guest (internal/hotplugguest as /init) with the command line the
// shim gives a pod with volumes (root ports, QMP on a passed descriptor, QEMU's seccomp
// sandbox) and hot-plugs, over QMP with Hotplug, a sparse image file (driver file, slot 1)
// and, as root, a loop device (driver host_device, slot 0) as the shim does for Filesystem
// and Block volumes: the guest finds each disk by its serial, reads the host's bytes and
// writes a marker the host then reads back from the file or device.
//
// The kernels: $SEALPOD_HOTPLUG_KERNELS (comma-separated, default "minimal,debian"; the
// minimal kernel needs CONFIG_PCIEPORTBUS, CONFIG_HOTPLUG_PCI, CONFIG_HOTPLUG_PCI_PCIE). The
// guest also counts its pciehp port services: the ports must be under native PCIe hot-plug
// (under ACPI hot-plug the Debian kernel would still plug, through acpiphp; the minimal one
// has none). A heavy test: -short skips it.
func TestHotplugBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no VM boot")
	}
	if _, err := exec.LookPath(BinaryX86); err != nil {
		testdeps.Missing(t, "%s not installed: %v", BinaryX86, err)
	}
	kernels := os.Getenv("SEALPOD_HOTPLUG_KERNELS")
	if kernels == "" {
		kernels = "minimal,debian"
	}
	for _, k := range strings.Split(kernels, ",") {
		t.Run(k, func(t *testing.T) { testHotplugBoot(t, k) })
	}
}

// hotplugDisk is one disk of the test: its backing path, what the host wrote at its head.
type hotplugDisk struct {
	Disk
	path string
	head []byte
}

func testHotplugBoot(t *testing.T, kernel string) {
	var args []string
	switch kernel {
	case "debian":
		args = []string{"--kernel-package", kerneltest.Tree(t).Package.String(),
			"--module", "virtio_pci,virtio_console,virtio_rng,virtio_blk"}
	case "minimal":
	default:
		t.Fatalf("kernel %q: minimal or debian", kernel)
	}
	b, err := bundle.Load(buildGuestWith(t, "./runtime-shim/qemu/internal/hotplugguest", false, args...))
	if err != nil {
		t.Fatal(err)
	}
	var disks []hotplugDisk
	if os.Geteuid() == 0 {
		if d, ok := loopDisk(t); ok {
			disks = append(disks, d)
		}
	}
	disks = append(disks, fileDisk(t, 1))
	var serials []string
	for _, d := range disks {
		serials = append(serials, VolumeSerial(d.Slot))
	}
	sock, qmpPath, lf := qmpListenDir(t, "sph")
	cfg := Config{TEE: TEESim, Guest: GuestFromBundle(b), AgentSocket: filepath.Join(sock, "agent.sock"),
		SimSPSocket: filepath.Join(sock, "sim-sp.sock"), QMPSocket: qmpPath, QMPListener: lf, HotplugSlots: 2, Name: "sealpod-hotplug"}
	cfg.Guest.Cmdline += " SEALPOD_HOTPLUG_SERIALS=" + strings.Join(serials, ",")
	var console syncBuf
	vm, err := Start(cfg, StartOptions{Console: &console})
	if err != nil {
		t.Fatal(err)
	}
	lf.Close()
	t.Cleanup(func() {
		vm.Kill()
		if t.Failed() {
			t.Logf("console:\n%s\nqemu stderr:\n%s", console.String(), vm.Stderr())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	waitConsole(t, ctx, vm, &console, "sealpod-hotplug: ready")
	ready := time.Now()
	if want := "sealpod-hotplug: pciehp ports " + strconv.Itoa(cfg.HotplugSlots); !strings.Contains(console.String(), want) {
		t.Errorf("the guest's root ports are not under native PCIe hot-plug: console lacks %q", want)
	}
	q, err := DialQMP(ctx, qmpPath, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for _, d := range disks {
		if err := Hotplug(ctx, q, d.Disk); err != nil {
			t.Fatalf("%s: %v", d.path, err)
		}
		d.File.Close() // QEMU holds its own copy, as in the shim
	}
	for _, d := range disks {
		waitConsole(t, ctx, vm, &console, "sealpod-hotplug: wrote "+VolumeSerial(d.Slot))
		want := "serial " + VolumeSerial(d.Slot) + " bytes " + strconv.Itoa(64<<20) + " head " + hex.EncodeToString(d.head)
		if !strings.Contains(console.String(), want) {
			t.Errorf("%s: the guest did not report %q", d.path, want)
		}
	}
	t.Logf("%s kernel: guest ready → %d disk(s) hot-plugged and written in %v", kernel, len(disks), time.Since(ready).Round(time.Millisecond))
	waitConsole(t, ctx, vm, &console, "sealpod-hotplug: done")
	if err := vm.Wait(ctx); err != nil {
		t.Fatalf("guest did not power off cleanly: %v", err)
	}
	for _, d := range disks {
		f, err := os.Open(d.path)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(hotplugMarker))
		_, err = f.ReadAt(got, 4096)
		f.Close()
		if err != nil || string(got) != hotplugMarker {
			t.Errorf("%s at 4096: %q (%v), want the guest's marker", d.path, got, err)
		}
	}
}

// fileDisk is a 64 MiB sparse image with random bytes at its head, opened as the shim opens
// a Filesystem volume's image (O_DIRECT where the file system has it).
func fileDisk(t *testing.T, slot int) hotplugDisk {
	t.Helper()
	d := hotplugDisk{path: filepath.Join(t.TempDir(), "sealpod-volume.img"), head: make([]byte, 32)}
	rand.Read(d.head)
	if err := os.WriteFile(d.path, d.head, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(d.path, 64<<20); err != nil {
		t.Fatal(err)
	}
	f, direct, err := openDirect(d.path)
	if err != nil {
		t.Fatal(err)
	}
	d.Disk = Disk{Slot: slot, File: f, Driver: DriverFile, Direct: direct}
	return d
}

// loopDisk is a loop device over a 64 MiB file (a Block volume's device), or false when
// this host has no loop devices.
func loopDisk(t *testing.T) (hotplugDisk, bool) {
	t.Helper()
	img := fileDisk(t, 0)
	img.File.Close()
	out, err := exec.Command("losetup", "--find", "--show", img.path).CombinedOutput()
	if err != nil {
		t.Logf("no loop device (%v: %s): hot-plugging the image file only", err, out)
		return hotplugDisk{}, false
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	f, direct, err := openDirect(dev)
	if err != nil {
		t.Fatal(err)
	}
	return hotplugDisk{Disk: Disk{Slot: 0, File: f, Driver: DriverHostDevice, Direct: direct}, path: dev, head: img.head}, true
}

func openDirect(path string) (*os.File, bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT, 0)
	if errors.Is(err, syscall.EINVAL) {
		f, err = os.OpenFile(path, os.O_RDWR, 0)
		return f, false, err
	}
	return f, err == nil, err
}

// waitConsole waits for a console line starting with prefix and returns it; a FAIL line or
// QEMU's exit ends the wait.
func waitConsole(t *testing.T, ctx context.Context, vm *VM, console *syncBuf, prefix string) string {
	t.Helper()
	for {
		for _, l := range strings.Split(console.String(), "\n") {
			if strings.HasPrefix(l, prefix) {
				return l
			}
			if strings.Contains(l, "sealpod-hotplug: FAIL") {
				t.Fatalf("guest: %s", l)
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %q: %v", prefix, ctx.Err())
		case <-vm.Exited():
			if !bytes.Contains([]byte(console.String()), []byte(prefix)) {
				t.Fatalf("QEMU exited (%v) before %q", vm.ExitError(), prefix)
			}
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestHotplugQEMUAccepts runs the hot-plug's QMP commands against the installed QEMU, paused
// (-S) before any guest code runs: the sim command line of a pod with two volumes minus the
// kernel, QEMU's seccomp sandbox on, QMP on a passed descriptor. QEMU must accept add-fd,
// blockdev-add on /dev/fdset/N and device_add on the root port, and then list the disk on
// its root port (query-pci) and the block node on the fd set (query-named-block-nodes).
// Light: no guest runs (TestHotplugBoot boots one).
func TestHotplugQEMUAccepts(t *testing.T) {
	bin, err := exec.LookPath(BinaryX86)
	if err != nil {
		testdeps.Missing(t, "%s not installed: %v", BinaryX86, err)
	}
	sock, qmpPath, lf := qmpListenDir(t, "spa")
	cfg := Config{Binary: bin, TEE: TEESim, Guest: guest(""), AgentSocket: filepath.Join(sock, "agent.sock"),
		SimSPSocket: filepath.Join(sock, "sim-sp.sock"), QMPSocket: qmpPath, QMPListener: lf, HotplugSlots: 2}
	cmd, err := cfg.Command()
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for i := 0; i < len(cmd.Args); i++ {
		switch cmd.Args[i] {
		case "-kernel", "-initrd", "-append":
			i++ // no guest: QEMU stays paused
			continue
		}
		args = append(args, cmd.Args[i])
	}
	cmd.Args = append(args, "-S")
	vm, err := StartCommand(cmd, StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lf.Close()
	t.Cleanup(func() { vm.Kill(); <-vm.Exited() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	q, err := DialQMP(ctx, qmpPath, 20*time.Second)
	if err != nil {
		t.Fatalf("%v\nqemu stderr: %s", err, vm.Stderr())
	}
	defer q.Close()
	disks := []hotplugDisk{fileDisk(t, 1)}
	if os.Geteuid() == 0 {
		if d, ok := loopDisk(t); ok {
			disks = append(disks, d)
		}
	}
	for _, d := range disks {
		if err := Hotplug(ctx, q, d.Disk); err != nil {
			t.Fatalf("%s (%s, direct %v): %v\nqemu stderr: %s", d.path, d.Driver, d.Direct, err, vm.Stderr())
		}
		d.File.Close()
		t.Logf("hot-plugged %s as %s (driver %s, direct %v)", d.path, VolumeSerial(d.Slot), d.Driver, d.Direct)
	}
	// The same slot again is refused by QEMU (ids in use), and leaves the first one working.
	again := fileDisk(t, 1)
	if err := Hotplug(ctx, q, again.Disk); err == nil {
		t.Error("a second hot-plug on slot 1 succeeded")
	}
	again.File.Close()
	onPort := map[string]string{}
	for _, d := range disks {
		var bus string
		if err := q.Execute(ctx, "qom-get", map[string]any{"path": "/machine/peripheral/" + DeviceID(d.Slot), "property": "parent_bus"}, &bus); err != nil {
			t.Fatal(err)
		}
		onPort[DeviceID(d.Slot)], _, _ = strings.Cut(strings.TrimPrefix(bus, "/machine/peripheral/"), "/")
	}
	var nodes []struct {
		NodeName string `json:"node-name"`
		File     string `json:"file"`
		Drv      string `json:"drv"`
	}
	if err := q.Execute(ctx, "query-named-block-nodes", nil, &nodes); err != nil {
		t.Fatal(err)
	}
	for _, d := range disks {
		if got := onPort[DeviceID(d.Slot)]; got != RootPortID(d.Slot) {
			t.Errorf("%s on %q, want root port %s (query-pci: %v)", DeviceID(d.Slot), got, RootPortID(d.Slot), onPort)
		}
		found := false
		for _, n := range nodes {
			if n.NodeName == NodeName(d.Slot) {
				found = true
				if n.File != "/dev/fdset/"+strconv.Itoa(d.Slot) || n.Drv != d.Driver {
					t.Errorf("node %s: file %q driver %q", n.NodeName, n.File, n.Drv)
				}
			}
		}
		if !found {
			t.Errorf("no block node %s", NodeName(d.Slot))
		}
	}
}

// qmpListenDir makes a temporary directory with a short name (unix socket paths are short)
// and a listening unix socket at its qmp.sock, as the shim binds one for Config.QMPListener:
// QEMU serves the socket from the descriptor, so closing the listener must not unlink it.
func qmpListenDir(t *testing.T, prefix string) (dir, qmpPath string, lf *os.File) {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	qmpPath = filepath.Join(dir, "qmp.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: qmpPath, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	lf, err = l.File()
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lf.Close() })
	return dir, qmpPath, lf
}
