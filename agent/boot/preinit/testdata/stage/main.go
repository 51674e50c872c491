// Command stage stands in for the agent in preinit's tests: a static binary with the C first
// stage linked in. The test runs it as /init, PID 1 of a new PID and mount namespace chrooted
// into a tmpfs; it reports what the second stage sees.
package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/agent/boot/preinit"
)

func main() {
	_, initErr := os.Lstat("/init")
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		fmt.Println("mount proc:", err)
		os.Exit(1)
	}
	exe, err := os.Open("/proc/self/exe")
	if err != nil {
		fmt.Println("open exe:", err)
		os.Exit(1)
	}
	seals, err := unix.FcntlInt(exe.Fd(), unix.F_GET_SEALS, 0)
	fmt.Printf("linked=%v pid=%d argv0=%s args=%q init-gone=%v seals=%#x (%v)\n", preinit.Linked, os.Getpid(), os.Args[0], os.Args[1:], os.IsNotExist(initErr), seals, err)
}
