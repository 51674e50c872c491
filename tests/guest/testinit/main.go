// Command testinit is a tiny static /init for the guest boot smoke test (tests/guest): it mounts
// /proc, /sys and /dev, loads the initrd's kernel modules with agent/kmod, reports what it
// finds on the console and powers the VM off. Build it with CGO_ENABLED=0.
//
// Console lines (all prefixed "sealpod-testinit: "):
//
//	started uptime=<s>
//	modules loaded <N> in <duration> uptime=<s>
//	module without device <path>  one per module that declined to load (ENODEV)
//	virtio-port <name>           one per named port under /sys/class/virtio-ports
//	netdev <name>                one per network interface other than lo
//	hwrng <name>                 the current hardware RNG, if any
//	done
//	FAIL <error>                 instead of the lines above on failure
//
// Environment (the kernel passes unknown name=value cmdline words to init): SEALPOD_TESTINIT_PORTS=N
// makes it wait up to 30 s for N named virtio-serial ports before listing them.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/internal/guestinit"

	"github.com/sealpod/sealpod/agent/kmod"
)

// console prints the lines above.
const console = guestinit.Console("sealpod-testinit: ")

var say = console.Say

func main() { console.Main(run) }

func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func run() error {
	if err := guestinit.MountEarly(unix.MS_NOSUID | unix.MS_NOEXEC); err != nil {
		return err
	}
	say("started uptime=%s", uptime())

	dir, err := kmod.DefaultDir()
	if err != nil {
		return err
	}
	res, err := kmod.LoadAll(dir)
	if err != nil {
		return err
	}
	say("modules loaded %d in %s uptime=%s", res.Count(), res.Duration.Round(time.Millisecond), uptime())
	for _, m := range res.NoDevice {
		say("module without device %s", m)
	}

	want, _ := strconv.Atoi(os.Getenv("SEALPOD_TESTINIT_PORTS"))
	ports := virtioPorts()
	for deadline := time.Now().Add(30 * time.Second); len(ports) < want && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		ports = virtioPorts()
	}
	for _, p := range ports {
		say("virtio-port %s", p)
	}
	if len(ports) < want {
		return fmt.Errorf("%d named virtio ports, want %d", len(ports), want)
	}

	nets, _ := filepath.Glob("/sys/class/net/*")
	sort.Strings(nets)
	for _, n := range nets {
		if b := filepath.Base(n); b != "lo" {
			say("netdev %s", b)
		}
	}
	if b, err := os.ReadFile("/sys/class/misc/hw_random/rng_current"); err == nil {
		if s := strings.TrimSpace(string(b)); s != "" && s != "none" {
			say("hwrng %s", s)
		}
	}
	return nil
}

// virtioPorts returns the sorted names of the virtio-serial ports that have one.
func virtioPorts() []string {
	files, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}
