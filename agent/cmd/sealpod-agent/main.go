// Command sealpod-agent is PID 1 of the Sealpod guest: it mounts the early file systems,
// loads the initrd's kernel modules, serves the agent API (agent/api) to the host on the
// virtio-serial port sealpod.agent, and, on Unseal, attests, opens the sealed spec and runs
// its containers (agent/containers). See docs/agent.md.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/boot"
	_ "github.com/sealpod/sealpod/agent/boot/preinit" // the C first stage: a sealed copy before Go starts
	"github.com/sealpod/sealpod/agent/containers"
	"github.com/sealpod/sealpod/agent/internal/backend"
	"github.com/sealpod/sealpod/agent/netconfig"
	"github.com/sealpod/sealpod/agent/server"
	"github.com/sealpod/sealpod/agent/vport"
	"github.com/sealpod/sealpod/agent/vsock"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

const (
	tlsDir   = "/run/sealpod/tls"
	stateDir = "/run/sealpod/containers"
)

func main() {
	containers.MaybeInit() // re-executed as a container's init or the pod's pause process
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "sealpod-agent: must run as PID 1 of the Sealpod guest (it mounts, loads modules and powers off)")
		os.Exit(2)
	}
	t := timeline{start: boot.Uptime()}
	// libcontainer logs (and forwards its init's logs) through logrus as free text, which can
	// quote sealed paths and commands: none of it reaches the console.
	logrus.SetOutput(io.Discard)
	// The console is host-visible: only allow-listed attributes reach it (boot.ConsoleKeys).
	// Until the agent channel is up it gets this one line (the serial console is slow under
	// emulation); everything else about the boot is in the "agent ready" line.
	log := boot.NewConsoleLogger(os.Stderr, false)
	if start, sw, ok := boot.RunningFromSealedCopy(); ok {
		// Running from a sealed memfd: made by the C first stage (agent/boot/preinit) before
		// any Go ran, or by the Go first stage below, which also moved "/" already.
		if start > 0 {
			t.start = start
		} else {
			log.Info("sealpod agent starting", "start_ms", t.start.Milliseconds())
		}
		// Always asked, never taken from the environment (which the host can set through the
		// kernel command line): LeaveInitramfs looks at "/" itself and changes nothing when it
		// is no longer the initial ramfs.
		now, err := boot.LeaveInitramfs()
		if err != nil {
			fmt.Fprintln(os.Stderr, "sealpod-agent:", err) // constant paths and an errno only
			boot.PowerOff(log)
			select {}
		}
		t.rootSwitch = sw
		if now.Switched {
			t.rootSwitch = now
		}
	} else {
		log.Info("sealpod agent starting", "start_ms", t.start.Milliseconds())
		// Before anything else: move "/" off the initramfs onto a tmpfs (the agent binary is
		// unlinked, not copied) so that containers get pivot_root, not an escapable chroot;
		// then run from a sealed copy of the binary, so that libcontainer does not copy it for
		// every container and exec (boot.RunFromSealedCopy). Fail closed.
		sw, err := boot.LeaveInitramfs()
		if err == nil {
			err = boot.RunFromSealedCopy(t.start, sw) // returns only on failure
		}
		fmt.Fprintln(os.Stderr, "sealpod-agent:", err) // constant paths and an errno only
		boot.PowerOff(log)
		select {}
	}
	if err := run(log, &t); err != nil {
		log.Error("agent failed", "err", err)
	}
	boot.PowerOff(log)
	select {} // PID 1 must not exit
}

// timeline is the agent's boot, for the console's "agent ready" line. Times since kernel
// start (CLOCK_BOOTTIME) let the host split "QEMU start → agent ready" into kernel and agent.
type timeline struct {
	start, ready time.Duration // uptime at the agent's start and when its channel is open
	rootSwitch   boot.RootSwitch
	modules      int
	entropyWait  time.Duration
}

func run(log *slog.Logger, t *timeline) error {
	if err := boot.Mount(log); err != nil {
		return err
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	opts, err := boot.ParseCmdline(string(cmdline))
	if err != nil {
		return err
	}
	if opts.Debug {
		log = boot.NewConsoleLogger(os.Stderr, true) // more events, the same allow-list
	}
	slog.SetDefault(log)
	mods, err := boot.LoadModules()
	if err != nil {
		return err
	}
	t.modules = mods.Count()
	if err := boot.TunePageReporting(); err != nil {
		return err
	}
	ctx := context.Background()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if t.entropyWait, err = boot.WaitEntropy(wctx); err != nil {
		return err
	}
	port, err := vport.Wait(wctx, api.PortName)
	if err != nil {
		return err
	}
	att, err := boot.DetectTEE(ctx)
	if err != nil {
		return err
	}
	for _, d := range []string{tlsDir, stateDir} {
		if err := boot.MountTmpfs(d, "0755"); err != nil {
			return err
		}
	}
	srv, err := server.New(server.Config{
		Attester: att,
		Backend:  &backend.Containers{Options: containers.Options{StateDir: stateDir, InsecureRegistries: opts.InsecureRegistries, Logger: log}},
		Network:  func(_ context.Context, n *api.NetworkConfig) error { return netconfig.Apply(n, "/etc") },
		TLSDir:   tlsDir,
		PowerOff: func() { boot.PowerOff(log) },
		Version:  version,
		Logger:   log,
	})
	if err != nil {
		return err
	}
	if _, err := os.Stat("/dev/vsock"); err == nil {
		// KVM hosts with vhost-vsock: the same API on vsock port 1024 as well.
		if ln, err := vsock.Listen(vsock.DefaultPort); err != nil {
			log.Warn("vsock: not serving", "err", err)
		} else {
			go func() {
				if err := srv.Serve(ctx, ln); err != nil {
					log.Warn("vsock: serve", "err", err)
				}
			}()
		}
	}
	// Open the port before logging: the host's first Ping waits for this open, not for the
	// console.
	dev, err := vport.Open(port)
	if err != nil {
		return err
	}
	t.ready = boot.Uptime()
	ln := vport.NewListenerFunc(port, firstThen(dev, func() (io.ReadWriteCloser, error) { return vport.Open(port) }))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()

	// Keys of the console allow-list: start_ms/ready_ms = uptime (since the kernel started)
	// at the agent's start and when its channel opened; boot_ms = the agent's own part.
	log.Info("sealpod agent ready", "version", version, "tee", att.TEE(), "port", port,
		"start_ms", t.start.Milliseconds(), "ready_ms", t.ready.Milliseconds(), "boot_ms", (t.ready - t.start).Milliseconds(),
		"modules", t.modules, "waited", t.entropyWait)
	if t.rootSwitch.Switched {
		// tests/guest looks for this line; total_ms = the switch's cost.
		log.Info("root moved off the initramfs", "total_ms", t.rootSwitch.Duration.Milliseconds())
	}
	if att.TEE() == "sim" {
		log.Warn("TEE is sim: the simulated AMD-SP on the host signs this guest's reports; the host can read guest memory (CI/demo only)")
	}
	if att.TEE() == "sim-tdx" {
		log.Warn("TEE is sim-tdx: the simulated TDX on the host signs this guest's quotes; the host can read guest memory (CI/demo only)")
	}
	if att.TEE() == "sim-pef" {
		log.Warn("TEE is sim-pef: the host plays the PEF ultravisor and handed this guest its ESM attachments; the host can read guest memory (CI/demo only)")
	}
	if len(opts.InsecureRegistries) > 0 {
		log.Warn("INSECURE: plain-HTTP pulls allowed (measured kernel command line)", "registries", strings.Join(opts.InsecureRegistries, ","))
	}
	return <-served
}

// firstThen returns an open function that hands out dev first and calls open afterwards.
func firstThen(dev io.ReadWriteCloser, open func() (io.ReadWriteCloser, error)) func() (io.ReadWriteCloser, error) {
	var used atomic.Bool
	return func() (io.ReadWriteCloser, error) {
		if !used.Swap(true) {
			return dev, nil
		}
		return open()
	}
}
