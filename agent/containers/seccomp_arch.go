package containers

import (
	"errors"
	"os"
	"runtime"
	"slices"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// kernelABIs is what the running kernel can execute besides its native system calls: 32-bit
// x86 code (IA32 emulation) and x32 system calls. Probed once; the guest kernel is measured,
// so this is no host input.
type kernelABIs struct{ ia32, x32 bool }

var runningKernelABIs = sync.OnceValue(func() kernelABIs {
	if runtime.GOARCH != "amd64" {
		return kernelABIs{}
	}
	// The abi.vsyscall32 sysctl exists only in a kernel built with IA32 emulation
	// (arch/x86/entry/vdso/vdso32-setup.c).
	_, err := os.Stat("/proc/sys/abi/vsyscall32")
	ia32 := err == nil || !errors.Is(err, os.ErrNotExist) // unknown: keep the architectures
	return kernelABIs{ia32: ia32, x32: x32Syscalls()}
})

// x32Syscalls reports whether the kernel serves x32 system calls: getpid with the x32 bit
// (__X32_SYSCALL_BIT) fails with ENOSYS in a kernel without x32 support (or with it disabled,
// syscall.x32=n), and returns the pid in one with.
func x32Syscalls() bool {
	const x32Bit = 0x40000000
	_, _, errno := unix.RawSyscall(x32Bit|unix.SYS_GETPID, 0, 0, 0)
	return errno != unix.ENOSYS
}

// narrowArches drops from containerd's default architecture list for amd64 (x86_64, x86, x32)
// the ones the kernel cannot run: the minimal guest kernel has neither IA32 emulation nor
// x32, so no such system call can reach the filter. It matters for speed: libseccomp compiles
// the filter again in every `runc init` (each container start and each exec, probes
// included), and the two extra architectures make that ten times the work (1.5 ms against
// 15 ms natively, some 0.3 s under software emulation). With x32 gone from the list, a
// system call numbered as x32 kills the thread instead of failing with ENOSYS; no program
// makes one on a kernel that cannot run x32 code. Other lists (ppc64le, Localhost profiles)
// are kept as they are.
func narrowArches(arches []specs.Arch, k kernelABIs) []specs.Arch {
	return slices.DeleteFunc(slices.Clone(arches), func(a specs.Arch) bool {
		return (a == specs.ArchX86 && !k.ia32) || (a == specs.ArchX32 && !k.x32)
	})
}
