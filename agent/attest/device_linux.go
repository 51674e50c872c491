package attest

import (
	"fmt"
	"unsafe"

	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	sevabi "github.com/google/go-sev-guest/client/linuxabi"
	tdxabi "github.com/google/go-tdx-guest/client/linuxabi"
	"golang.org/x/sys/unix"
)

// Default is the guest's environment.
func Default() Env {
	return Env{
		TSMDir:   TSMReportDir,
		TSM:      linuxtsm.MakeClient,
		SEVGuest: SEVGuestDevice,
		TDXGuest: TDXGuestDevice,
		OpenSEV:  func(p string) (SEVDevice, error) { return openDevice(p, false) },
		OpenTDX:  func(p string) (TDXDevice, error) { return openDevice(p, true) },
	}
}

// linuxDevice is /dev/sev-guest or /dev/tdx_guest, kept open for the agent's life. Unlike
// go-sev-guest's LinuxDevice it does not sleep 2 s between commands (a workaround for Linux
// 6.1 guests that the host throttles; an agent asks for one or two reports per pod).
type linuxDevice struct {
	fd  int
	tdx bool
}

func openDevice(path string, tdx bool) (*linuxDevice, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &linuxDevice{fd: fd, tdx: tdx}, nil
}

// Ioctl runs one command of the ABI types of go-sev-guest (SNP) or go-tdx-guest (TDX).
func (d *linuxDevice) Ioctl(command uintptr, req any) (uintptr, error) {
	switch r := req.(type) {
	case *sevabi.SnpUserGuestRequest:
		if d.tdx {
			break
		}
		a := r.ABI()
		result, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), command, uintptr(a.Pointer()))
		if err := a.Finish(r); err != nil {
			return 0, fmt.Errorf("sev-guest request: %w", err)
		}
		// As go-sev-guest: the kernel writes the firmware error back only with EIO (older
		// kernels leave other values uninitialised).
		if errno != unix.EIO {
			r.FwErr = 0
		}
		if errno != 0 {
			return 0, errno
		}
		return result, nil
	case *tdxabi.TdxQuoteReq:
		if !d.tdx {
			break
		}
		a := r.ABI()
		result, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), command, uintptr(a.Pointer()))
		if err := a.Finish(r); err != nil {
			return 0, fmt.Errorf("tdx_guest request: %w", err)
		}
		if errno != 0 {
			return 0, errno
		}
		return result, nil
	case *tdxabi.TdxReportReq:
		if !d.tdx {
			break
		}
		result, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), command, uintptr(unsafe.Pointer(r)))
		if errno != 0 {
			return 0, errno
		}
		return result, nil
	}
	return 0, fmt.Errorf("guest device: unexpected request %T", req)
}
