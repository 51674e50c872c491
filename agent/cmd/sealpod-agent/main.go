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
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/boot"
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
	// Before anything else: move "/" off the initramfs (re-executes this binary from a tmpfs
	// root) so that containers get pivot_root, not an escapable chroot. Fail closed.
	if err := boot.LeaveInitramfs(os.Args[0]); err != nil {
		fmt.Fprintln(os.Stderr, "sealpod-agent:", err)
		boot.PowerOff(slog.New(slog.NewTextHandler(os.Stderr, nil)))
		select {}
	}
	// The console is host-visible: only allow-listed attributes reach it (boot.ConsoleKeys).
	log := boot.NewConsoleLogger(os.Stderr, false)
	// libcontainer logs (and forwards its init's logs) through logrus as free text, which can
	// quote sealed paths and commands: none of it reaches the console.
	logrus.SetOutput(io.Discard)
	if err := run(log); err != nil {
		log.Error("agent failed", "err", err)
	}
	boot.PowerOff(log)
	select {} // PID 1 must not exit
}

func run(log *slog.Logger) error {
	start := time.Now()
	if err := boot.Mount(log); err != nil {
		return err
	}
	if sw, ok := boot.SwitchedRoot(); ok {
		// Keys of the console allow-list: total_ms = the switch's cost, count = entries moved.
		log.Info("root moved off the initramfs", "total_ms", sw.Duration.Milliseconds(), "count", sw.Files)
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
	if len(opts.InsecureRegistries) > 0 {
		log.Warn("INSECURE: plain-HTTP pulls allowed (measured kernel command line)", "registries", strings.Join(opts.InsecureRegistries, ","))
	}
	if err := boot.LoadModules(log); err != nil {
		return err
	}
	ctx := context.Background()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := boot.WaitEntropy(wctx, log); err != nil {
		return err
	}
	port, err := vport.Wait(wctx, api.PortName)
	if err != nil {
		return err
	}
	att, err := boot.DetectTEE(ctx, log)
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
	log.Info("sealpod agent ready", "version", version, "tee", att.TEE(), "port", port, "boot_ms", time.Since(start).Milliseconds())
	return srv.Serve(ctx, vport.NewListener(port))
}
