package tdx

import (
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/sealpod/sealpod/guest-image/measure/authenticode"
)

// KernelHeader says in what form the kernel's x86 setup header reaches TDVF over fw_cfg, which
// changes the kernel's Authenticode digest and so RTMR[1]. It depends on the host's QEMU and is
// an input of the reference value.
type KernelHeader int

const (
	// HeaderQEMU: QEMU's x86 direct-boot loader (x86_load_linux) writes type_of_loader,
	// loadflags.CAN_USE_HEAP, heap_end_ptr and cmd_line_ptr into the setup header (and the
	// initrd's address and size when there is one) before it hands the setup to the firmware.
	// QEMU skips this for SEV guests only; this is what TDX hosts have done so far, and what
	// Contrast's tdx-measure (verified on TDX hardware) models.
	HeaderQEMU KernelHeader = iota
	// HeaderUnmodified: the kernel file as given, for a QEMU that leaves the header of every
	// confidential guest alone (the proposed "machine->cgs" check in x86_load_linux).
	HeaderUnmodified
)

// ParseKernelHeader parses "qemu" (default) or "unmodified".
func ParseKernelHeader(s string) (KernelHeader, error) {
	switch strings.ToLower(s) {
	case "", "qemu":
		return HeaderQEMU, nil
	case "unmodified":
		return HeaderUnmodified, nil
	}
	return 0, fmt.Errorf("tdx kernel header %q: want qemu or unmodified", s)
}

func (k KernelHeader) String() string {
	if k == HeaderUnmodified {
		return "unmodified"
	}
	return "qemu"
}

// ErrNotPredictable is wrapped by the errors of RTMR predictions that depend on the host
// (for example the initrd load address QEMU writes into the kernel header, which depends on
// the guest's RAM layout).
var ErrNotPredictable = errors.New("not predictable from the guest artifacts")

// Setup header offsets (Linux Documentation/arch/x86/boot.rst).
const (
	hdrVidMode      = 0x1fa
	hdrSignature    = 0x202
	hdrVersion      = 0x206
	hdrTypeOfLoader = 0x210
	hdrLoadflags    = 0x211
	hdrRamdiskImage = 0x218
	hdrRamdiskSize  = 0x21c
	hdrHeapEndPtr   = 0x224
	hdrCmdLinePtr   = 0x228
	hdrEnd          = 0x230

	loadedHigh  = 0x01
	canUseHeap  = 0x80
	qemuLoader  = 0xb0    // type_of_loader QEMU writes
	qemuRealAdr = 0x10000 // where QEMU puts the real-mode setup for protocol >= 2.02, loaded high
	qemuCmdAdr  = 0x20000 // and the command line
)

// QEMUKernel returns a copy of kernel with the setup header as QEMU's x86_load_linux writes
// it for a direct boot without initrd: for a bzImage of boot protocol ≥ 2.02 loaded high,
// type_of_loader = 0xb0, loadflags |= CAN_USE_HEAP, heap_end_ptr = 0xfe00
// (cmdline − setup − 0x200) and cmd_line_ptr = 0x20000. With an initrd QEMU also writes the
// initrd's load address, which depends on the guest's RAM below 4 GiB and the QEMU version,
// and a "vga=" option on the command line rewrites vid_mode: both are refused as not
// predictable.
func QEMUKernel(kernel []byte, cmdline string, hasInitrd bool) ([]byte, error) {
	if len(kernel) < hdrEnd || binary.LittleEndian.Uint32(kernel[hdrSignature:]) != 0x53726448 { // "HdrS"
		return nil, ErrNotBzImage
	}
	if hasInitrd {
		return nil, fmt.Errorf("kernel header: QEMU writes the initrd load address (guest RAM dependent) into it: %w; build the initramfs into the kernel", ErrNotPredictable)
	}
	if strings.Contains(cmdline, "vga=") {
		return nil, fmt.Errorf("kernel header: QEMU rewrites vid_mode for a vga= command line option: %w", ErrNotPredictable)
	}
	protocol := binary.LittleEndian.Uint16(kernel[hdrVersion:])
	if protocol < 0x202 || kernel[hdrLoadflags]&loadedHigh == 0 {
		return nil, fmt.Errorf("kernel header: boot protocol %#x (loadflags %#x): want >= 2.02 and loaded high (a bzImage)", protocol, kernel[hdrLoadflags])
	}
	k := append([]byte(nil), kernel...)
	k[hdrTypeOfLoader] = qemuLoader
	k[hdrLoadflags] |= canUseHeap
	binary.LittleEndian.PutUint16(k[hdrHeapEndPtr:], qemuCmdAdr-qemuRealAdr-0x200)
	binary.LittleEndian.PutUint32(k[hdrCmdLinePtr:], qemuCmdAdr)
	return k, nil
}

// KernelDigest is the SHA-384 Authenticode digest TDVF measures for the kernel as it receives
// it (EV_EFI_BOOT_SERVICES_APPLICATION), with the header in the given form.
func KernelDigest(kernel []byte, cmdline string, hasInitrd bool, hdr KernelHeader) ([DigestSize]byte, error) {
	var out [DigestSize]byte
	k := kernel
	if hdr == HeaderQEMU {
		var err error
		if k, err = QEMUKernel(kernel, cmdline, hasInitrd); err != nil {
			return out, err
		}
	}
	d, err := authenticode.Digest(k, sha512.New384())
	if err != nil {
		return out, fmt.Errorf("kernel (must be an EFI-stub bzImage, CONFIG_EFI_STUB=y): %w", err)
	}
	copy(out[:], d)
	return out, nil
}

// TDVF's EV_EFI_ACTION strings and the separator, extended into RTMR[1] (edk2
// OvmfPkg/Tcg/TdTcg2Dxe: OnReadyToBoot, OnExitBootServices).
const (
	evCallingEFIApplication = "Calling EFI Application from Boot Option"
	evExitBootServices      = "Exit Boot Services Invocation"
	evExitBootServicesOK    = "Exit Boot Services Returned with Success"
)

var separator = []byte{0, 0, 0, 0}

// RTMR1Value predicts RTMR[1] when the kernel starts running after ExitBootServices, for a
// direct kernel boot by TDVF (OVMF's TryRunningQemuKernel): the kernel image is loaded and
// measured first, then ReadyToBoot extends "Calling EFI Application from Boot Option" and the
// separator, then the EFI stub's ExitBootServices extends its invocation and success.
func RTMR1Value(kernelDigest [DigestSize]byte) [DigestSize]byte {
	var r [DigestSize]byte
	Extend(&r, kernelDigest)
	for _, ev := range [][]byte{[]byte(evCallingEFIApplication), separator, []byte(evExitBootServices), []byte(evExitBootServicesOK)} {
		Extend(&r, sha512.Sum384(ev))
	}
	return r
}
