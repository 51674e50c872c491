// Command escape probes a container's isolation from inside it (tests/guest
// TestContainerIsolation). It is pushed as the only file of a test image and run by the agent
// in a sealed container.
//
//	escape chroot PATH...  the classic chroot escape (needs CAP_SYS_CHROOT): chroot into a
//	                       subdirectory without chdir, chdir("..") many times, chroot("."),
//	                       then try to read each PATH
//	escape setns PATH...   with CAP_SYS_ADMIN: detach the mount on "/" (umount2 MNT_DETACH),
//	                       setns into the own mount namespace (which resets the root to the
//	                       namespace's root mount), then try to read each PATH
//	escape add_key         one add_key(2) call, a syscall the default seccomp profile denies
//
// Output, one line per step: "step NAME ok" or "step NAME ERRNO"; "read PATH ok N" or
// "read PATH ERRNO"; "add_key ok" or "add_key ERRNO". Exit 2 on bad usage only.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: escape chroot PATH... | escape setns PATH... | escape add_key")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "chroot":
		chrootEscape(os.Args[2:])
	case "setns":
		setnsEscape(os.Args[2:])
	case "add_key":
		_, err := unix.AddKey("user", "sealpod-escape-probe", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
		fmt.Println("add_key", result(err))
	default:
		fmt.Fprintf(os.Stderr, "escape: unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
}

func chrootEscape(paths []string) {
	const jail = "/tmp/escape-jail"
	step := func(name string, err error) {
		fmt.Println("step", name, result(err))
	}
	err := os.MkdirAll(jail, 0o755)
	step("mkdir", err)
	step("chroot-jail", unix.Chroot(jail)) // the working directory stays outside the new root
	var cdErr error
	for range 64 {
		if err := unix.Chdir(".."); err != nil && cdErr == nil {
			cdErr = err
		}
	}
	step("chdir-up", cdErr)
	step("chroot-dot", unix.Chroot("."))
	readAll(paths)
}

// setnsEscape: under MS_MOVE+chroot the namespace's root mount is the agent's root, covered
// by the container's; uncover it and let setns put the root there.
func setnsEscape(paths []string) {
	ns, err := os.Open("/proc/self/ns/mnt")
	fmt.Println("step open-ns", result(err))
	if err != nil {
		return
	}
	// setns(CLONE_NEWNS) wants an fs_struct of its own: lock this thread and unshare it.
	runtime.LockOSThread()
	fmt.Println("step unshare-fs", result(unix.Unshare(unix.CLONE_FS)))
	fmt.Println("step umount-root", result(unix.Unmount("/", unix.MNT_DETACH)))
	fmt.Println("step setns", result(unix.Setns(int(ns.Fd()), unix.CLONE_NEWNS)))
	readAll(paths)
}

func readAll(paths []string) {
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			fmt.Println("read", p, result(err))
			continue
		}
		fmt.Println("read", p, "ok", len(b))
	}
}

// result is "ok" or the errno's name (EPERM, ENOENT...).
func result(err error) string {
	if err == nil {
		return "ok"
	}
	var e unix.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
	}
	return "error"
}
