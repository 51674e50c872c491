package qemu

import (
	"context"
	"fmt"
	"os"
	"strconv"
)

// Hot-plugged disks (sealed volumes, docs/runtime.md#volumes). A VM started with
// Config.HotplugSlots = n has n empty PCIe root ports, RootPortID(0..n-1), on which Hotplug
// plugs one virtio-blk-pci disk each, named after its slot: block node NodeName(slot),
// device DeviceID(slot), serial VolumeSerial(slot), fd set slot.
//
// Hot-plug is native PCIe (the guest's pciehp driver), not ACPI: QEMU's q35 (machine types
// ≥ 6.1) defaults to ACPI hot-plug for root ports, which would have the guest run host-made
// AML on each plug; with ICH9-LPC's acpi-pci-hotplug-with-bridge-support off, QEMU's _OSC
// grants the guest native control. The guest kernel needs CONFIG_PCIEPORTBUS,
// CONFIG_HOTPLUG_PCI and CONFIG_HOTPLUG_PCI_PCIE.

// MaxHotplugSlots bounds Config.HotplugSlots (= spec.MaxPlaceholderVolumes, checked by a test).
const MaxHotplugSlots = 16

// NativeHotplugGlobal is the -global option that turns q35's ACPI PCI hot-plug off, so the
// root ports use native PCIe hot-plug.
const NativeHotplugGlobal = "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"

// RootPortID is the id of the PCIe root port of a hot-plug slot.
func RootPortID(slot int) string { return "sealpod-rp" + strconv.Itoa(slot) }

// NodeName is the block node name of the disk in a slot.
func NodeName(slot int) string { return "sealpod-vol" + strconv.Itoa(slot) }

// DeviceID is the QEMU device id of the disk in a slot.
func DeviceID(slot int) string { return "sealpod-blk" + strconv.Itoa(slot) }

// VolumeSerial is the virtio-blk serial of the disk in a slot, by which the guest finds it
// (/sys/block/vd*/serial; the agent accepts ^sealpod-[0-9]{1,2}$). At most 20 bytes.
func VolumeSerial(slot int) string { return "sealpod-" + strconv.Itoa(slot) }

// hotplugArgs are the arguments of c.HotplugSlots empty root ports: native hot-plug, one
// pcie-root-port each on the q35 root bus, chassis 1, slot (physical slot number) 1..n, no
// I/O window (modern virtio on PCIe has no I/O BAR; 16 ports would exhaust the 64 KiB).
func (c *Config) hotplugArgs() ([]string, error) {
	n := c.HotplugSlots
	if n == 0 {
		return nil, nil
	}
	if n < 0 || n > MaxHotplugSlots {
		return nil, invalid("HotplugSlots", "%d out of range 0..%d", n, MaxHotplugSlots)
	}
	if c.isPseries() {
		return nil, invalid("HotplugSlots", "the pef (pseries) VM has no PCIe root ports")
	}
	args := []string{"-global", NativeHotplugGlobal}
	for i := 0; i < n; i++ {
		args = append(args, "-device", fmt.Sprintf("pcie-root-port,id=%s,bus=pcie.0,chassis=1,slot=%d,io-reserve=0", RootPortID(i), i+1))
	}
	return args, nil
}

// Block drivers of hot-plugged disks.
const (
	DriverFile       = "file"        // a regular file (a Filesystem volume's image)
	DriverHostDevice = "host_device" // a block device (a Block volume)
)

// Disk is one disk to hot-plug.
type Disk struct {
	// Slot is the root port (0 ≤ Slot < Config.HotplugSlots).
	Slot int
	// File is the open disk (O_RDWR; with O_DIRECT when Direct): QEMU gets its descriptor
	// over the QMP socket (add-fd), so an unprivileged QEMU needs no access to the path.
	File *os.File
	// Driver is DriverFile or DriverHostDevice.
	Driver string
	// Direct bypasses the host page cache (cache.direct; aio threads either way).
	Direct bool
	// Confidential: the device is modern-only with the DMA API (SNP, TDX guests refuse
	// virtio devices without VIRTIO_F_ACCESS_PLATFORM), as Config.Command does for the others.
	Confidential bool
}

// HotplugCommands are the QMP commands Hotplug runs for d, in order (add-fd, blockdev-add,
// device_add); each is {"execute", "arguments"}.
func HotplugCommands(d Disk) ([]map[string]any, error) {
	if d.Slot < 0 || d.Slot >= MaxHotplugSlots {
		return nil, fmt.Errorf("%w: Disk.Slot: %d out of range 0..%d", ErrInvalidConfig, d.Slot, MaxHotplugSlots-1)
	}
	if d.Driver != DriverFile && d.Driver != DriverHostDevice {
		return nil, fmt.Errorf("%w: Disk.Driver: %q is neither %s nor %s", ErrInvalidConfig, d.Driver, DriverFile, DriverHostDevice)
	}
	dev := map[string]any{"driver": "virtio-blk-pci", "id": DeviceID(d.Slot), "bus": RootPortID(d.Slot),
		"drive": NodeName(d.Slot), "serial": VolumeSerial(d.Slot)}
	if d.Confidential {
		dev["disable-legacy"] = "on"
		dev["iommu_platform"] = true
	}
	return []map[string]any{
		{"execute": "add-fd", "arguments": map[string]any{"fdset-id": d.Slot, "opaque": NodeName(d.Slot)}},
		{"execute": "blockdev-add", "arguments": map[string]any{
			"driver": d.Driver, "node-name": NodeName(d.Slot), "filename": "/dev/fdset/" + strconv.Itoa(d.Slot),
			"cache": map[string]any{"direct": d.Direct, "no-flush": false}, "aio": "threads",
			"discard": "ignore", "read-only": false,
		}},
		{"execute": "device_add", "arguments": dev},
	}, nil
}

// Hotplug plugs d into the running VM over q: add-fd (d.File's descriptor as fd set d.Slot),
// blockdev-add on /dev/fdset/<slot>, device_add of a virtio-blk-pci on the slot's root port.
// On failure it removes what it added (best effort), so the slot can be plugged again.
func Hotplug(ctx context.Context, q *QMP, d Disk) error {
	cmds, err := HotplugCommands(d)
	if err != nil {
		return err
	}
	if d.File == nil {
		return fmt.Errorf("%w: Disk.File: required", ErrInvalidConfig)
	}
	var fdset struct {
		FDSetID *int `json:"fdset-id"`
		FD      *int `json:"fd"`
	}
	if err := q.ExecuteWithFile(ctx, "add-fd", cmds[0]["arguments"], d.File, &fdset); err != nil {
		return fmt.Errorf("hot-plug slot %d: %w", d.Slot, err)
	}
	if fdset.FDSetID == nil || *fdset.FDSetID != d.Slot || fdset.FD == nil {
		q.undo(ctx, d.Slot, -1, false)
		return fmt.Errorf("hot-plug slot %d: %w: add-fd returned fd set %v, want %d", d.Slot, ErrQMPProtocol, fdset.FDSetID, d.Slot)
	}
	if err := q.Execute(ctx, "blockdev-add", cmds[1]["arguments"], nil); err != nil {
		q.undo(ctx, d.Slot, *fdset.FD, false)
		return fmt.Errorf("hot-plug slot %d: %w", d.Slot, err)
	}
	if err := q.Execute(ctx, "device_add", cmds[2]["arguments"], nil); err != nil {
		q.undo(ctx, d.Slot, *fdset.FD, true)
		return fmt.Errorf("hot-plug slot %d: %w", d.Slot, err)
	}
	return nil
}

// undo removes a partial hot-plug: the block node (if added) and the descriptor it added to
// the fd set (fd < 0: the whole set).
func (q *QMP) undo(ctx context.Context, slot, fd int, node bool) {
	if node {
		_ = q.Execute(ctx, "blockdev-del", map[string]any{"node-name": NodeName(slot)}, nil)
	}
	args := map[string]any{"fdset-id": slot}
	if fd >= 0 {
		args["fd"] = fd
	}
	_ = q.Execute(ctx, "remove-fd", args, nil)
}
