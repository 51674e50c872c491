package containers

import (
	"os"
	"os/signal"

	// nsenter's C constructor runs before the Go runtime in the re-executed "init" process
	// and joins/creates the container's namespaces.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
	// Device cgroup rules (v1 and v2 eBPF) for the cgroupfs manager.
	_ "github.com/opencontainers/cgroups/devices"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// Arguments with which the agent binary is re-executed.
const (
	// initArg is libcontainer's container init ("runc init").
	initArg = "init"
	// pauseArg is the pod's PID-namespace holder (PID 1 of the pod's PID namespace).
	pauseArg = "sealpod-pause"
)

// MaybeInit must be the first thing main (and a test's TestMain) calls. When the binary was
// re-executed by this package as a container's init or as the pod's pause process it runs
// that role and never returns; otherwise it returns at once.
func MaybeInit() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case initArg:
		if os.Getenv("_LIBCONTAINER_INITPIPE") == "" {
			return // "init" given by a user, not by libcontainer
		}
		libcontainer.Init() // never returns
	case pauseArg:
		if os.Getenv(pauseEnv) != "1" {
			return
		}
		pause()
	}
}

const (
	pauseEnv         = "_SEALPOD_PAUSE"
	pauseHostnameEnv = "_SEALPOD_HOSTNAME"
	pauseRootEnv     = "_SEALPOD_PAUSE_ROOT"
)

// pause is PID 1 of the pod's PID, IPC and UTS namespaces: it sets the pod hostname, reaps
// orphans and exits on SIGTERM/SIGINT (SIGKILL from the agent in practice).
//
// Containers share its PID namespace and so see it as PID 1: it confines itself to an empty
// root, drops every capability and marks itself non-dumpable, so that /proc/1/root, /proc/1/fd
// and friends give a container nothing (the guest's root filesystem stays out of reach).
func pause() {
	fail := func(what string, err error) {
		os.Stderr.WriteString("sealpod-pause: " + what + ": " + err.Error() + "\n")
		os.Exit(1)
	}
	if h := os.Getenv(pauseHostnameEnv); h != "" {
		if err := unix.Sethostname([]byte(h)); err != nil {
			fail("sethostname", err)
		}
	}
	if root := os.Getenv(pauseRootEnv); root != "" {
		if err := unix.Chroot(root); err != nil {
			fail("chroot", err)
		}
		if err := unix.Chdir("/"); err != nil {
			fail("chdir", err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		fail("set non-dumpable", err)
	}
	for c := 0; c <= 63; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			fail("drop bounding capability", err)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		fail("capset", err)
	}
	if _, err := os.Stdout.WriteString("ready\n"); err != nil {
		os.Exit(1)
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err == nil {
		_ = unix.Dup2(int(devnull.Fd()), 1)
		devnull.Close()
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGCHLD)
	for s := range sigs {
		if s == unix.SIGCHLD {
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
