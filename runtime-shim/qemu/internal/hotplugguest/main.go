// Command hotplugguest is a tiny static /init for runtime-shim/qemu's hot-plug boot test
// (TestHotplugBoot): it mounts /proc, /sys and /dev, loads the initrd's kernel modules
// (agent/kmod), says "ready", and for each serial of SEALPOD_HOTPLUG_SERIALS (comma-separated)
// waits up to 90 s for the virtio disk with that serial to appear (the host hot-plugs it over
// QMP), reports it with the hex of its first 32 bytes, writes Marker at offset 4096 and
// flushes; then it powers the VM off. Build it with CGO_ENABLED=0.
//
// Console lines, prefixed "sealpod-hotplug: ": "pciehp ports <n>" (root ports under native
// PCIe hot-plug), "ready", per disk "disk <vdX> serial <s>
// bytes <n> head <hex>" and "wrote <serial>", then "done", or "FAIL <error>".
package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/agent/kmod"
	"github.com/sealpod/sealpod/internal/guestinit"
)

const prefix = "sealpod-hotplug: "

// Marker is what the guest writes at offset 4096 of the disk.
const Marker = "sealpod-hotplug-guest-wrote-this"

var say = guestinit.Console(prefix).Say

var serialRE = regexp.MustCompile(`^sealpod-[0-9]{1,2}$`)

func main() { guestinit.Console(prefix).Main(run) }

func run() error {
	if err := guestinit.MountEarly(unix.MS_NOSUID | unix.MS_NOEXEC); err != nil {
		return err
	}
	dir, err := kmod.DefaultDir()
	if err != nil {
		return err
	}
	if _, err := kmod.LoadAll(dir); err != nil {
		return err
	}
	serials := strings.Split(os.Getenv("SEALPOD_HOTPLUG_SERIALS"), ",")
	for _, s := range serials {
		if !serialRE.MatchString(s) {
			return fmt.Errorf("SEALPOD_HOTPLUG_SERIALS: %q malformed", s)
		}
	}
	// Native PCIe hot-plug: pciehp serves each root port (a pcie004 port service device);
	// under ACPI hot-plug QEMU hides the ports' hot-plug capability and there are none.
	pciehp, _ := filepath.Glob("/sys/bus/pci_express/devices/*:pcie004")
	say("pciehp ports %d", len(pciehp))
	say("ready")
	for _, s := range serials {
		if err := disk(s); err != nil {
			return err
		}
	}
	return nil
}

// disk waits for the disk with serial, reports it and writes Marker.
func disk(serial string) error {
	var name string
	for deadline := time.Now().Add(90 * time.Second); name == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		files, _ := filepath.Glob("/sys/block/vd*/serial")
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == serial {
				name = filepath.Base(filepath.Dir(f))
			}
		}
	}
	if name == "" {
		return fmt.Errorf("no virtio disk with serial %s within 90 s", serial)
	}
	f, err := os.OpenFile("/dev/"+name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := f.Seek(0, 2)
	if err != nil {
		return err
	}
	head := make([]byte, 32)
	if _, err := f.ReadAt(head, 0); err != nil {
		return err
	}
	say("disk %s serial %s bytes %d head %s", name, serial, size, hex.EncodeToString(head))
	if _, err := f.WriteAt([]byte(Marker), 4096); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	say("wrote %s", serial)
	return nil
}
