//go:build linux && cgo

// Package preinit is the agent's first stage, in C, linked into the agent binary only (a
// blank import of its main package). The kernel runs the agent as /init from the initramfs;
// libcontainer starts every container init and exec from the agent's own binary and copies
// all of it into a fresh memfd each time unless it already runs from a sealed memfd (runc's
// CVE-2019-5736 protection; docs/agent.md "Boot"). So the agent runs from one sealed copy.
//
// Making that copy used to take a whole Go start: the first stage started the Go runtime and
// initialised every package of the 14 MB binary only to copy itself and re-execute, about
// 0.5 s under emulation (boot.RunFromSealedCopy, which remains as the fallback and for builds
// without cgo). Here a C constructor does it before the Go runtime starts: when the process
// is PID 1, the kernel executed it as "/init" (AT_EXECFN: runc init, the pause process and the
// Go first stage are executed through /proc paths) and "/" is a ramfs or tmpfs, it copies
// /init into a sealed memfd (the seals runc's exeseal.IsCloned requires), unlinks /init and
// executes the copy with argv[0] "sealpod-agent". Nothing else is read from the environment
// or the command line; the copy's Go code then leaves the initramfs as before
// (boot.LeaveInitramfs, which decides for itself whether "/" is still the initramfs). Any
// failure before the exec prints one constant line and leaves the work to the Go stage.
package preinit

// #cgo CFLAGS: -Wall -Werror -O2
// #include <stdlib.h>
// #include "preinit.h"
import "C"

import (
	"os"
	"unsafe"
)

// Linked reports whether the C first stage is in the binary.
const Linked = true

// Clone copies the regular file at path into a sealed memfd as the first stage does (tests).
func Clone(path string) (*os.File, error) {
	p := C.CString(path)
	defer C.free(unsafe.Pointer(p))
	fd, err := C.sealpod_preinit_clone(p)
	if fd < 0 {
		return nil, &os.PathError{Op: "preinit clone", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), "memfd:"+C.SEALPOD_PREINIT_NAME), nil
}

// Wanted reports whether a process with these arguments would run the first stage (tests:
// never in a test process, which is not PID 1).
func Wanted(args []string) bool {
	argv := make([]*C.char, len(args)+1)
	for i, a := range args {
		argv[i] = C.CString(a)
		defer C.free(unsafe.Pointer(argv[i]))
	}
	return C.sealpod_preinit_wanted(C.int(len(args)), &argv[0]) != 0
}
