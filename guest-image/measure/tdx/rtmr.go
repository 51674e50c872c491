package tdx

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// RTMR indices.
const (
	RTMR0 = 0 // TDVF configuration: TD HOB, CFV, secure-boot variables, ACPI tables, boot variables
	RTMR1 = 1 // OS loader and kernel (PE/Authenticode digest of the loaded kernel) + boot events
	RTMR2 = 2 // OS: kernel command line and initrd, measured by the Linux EFI stub
	RTMR3 = 3 // reserved for the guest at run time
)

// NumRTMRs is the number of run-time measurement registers.
const NumRTMRs = 4

// Extend performs RTMR.EXTEND: reg = SHA-384(reg ‖ digest).
func Extend(reg *[DigestSize]byte, digest [DigestSize]byte) {
	h := sha512.New384()
	h.Write(reg[:])
	h.Write(digest[:])
	h.Sum(reg[:0])
}

// MinCCStubVersion is the first Linux release whose EFI stub measures the command line and
// the initrd through EFI_CC_MEASUREMENT_PROTOCOL when no TPM is present (Linux 6.9).
var MinCCStubVersion = [2]int{6, 9}

// ErrNotBzImage is returned when the kernel is not an x86 bzImage with a setup header.
var ErrNotBzImage = errors.New("kernel: not an x86 bzImage (no \"HdrS\" setup header)")

// KernelVersion returns the kernel_version string of an x86 bzImage setup header
// (e.g. "6.1.0-27-amd64 (debian-kernel@lists.debian.org) #1 SMP ...").
func KernelVersion(kernel []byte) (string, error) {
	const hdrMagicOff, versionPtrOff = 0x202, 0x20e
	if len(kernel) < versionPtrOff+2 || string(kernel[hdrMagicOff:hdrMagicOff+4]) != "HdrS" {
		return "", ErrNotBzImage
	}
	ptr := int(binary.LittleEndian.Uint16(kernel[versionPtrOff:]))
	start := 0x200 + ptr
	if ptr == 0 || start >= len(kernel) {
		return "", fmt.Errorf("kernel: kernel_version pointer %#x outside the image", ptr)
	}
	end := bytes.IndexByte(kernel[start:min(len(kernel), start+256)], 0)
	if end <= 0 {
		return "", fmt.Errorf("kernel: kernel_version at %#x is not a NUL-terminated string", start)
	}
	return string(kernel[start : start+end]), nil
}

// parseMajorMinor reads "6.9" from "6.9.0-rc1 ...".
func parseMajorMinor(version string) (int, int, error) {
	v := version
	if i := strings.IndexAny(v, " -+"); i >= 0 {
		v = v[:i]
	}
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, fmt.Errorf("kernel version %q: want major.minor", version)
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("kernel version %q: want major.minor", version)
	}
	return major, minor, nil
}

// StubMeasuresCC reports whether a kernel of the given version measures its command line and
// initrd into RTMR[2] when booted by TDVF (see MinCCStubVersion).
func StubMeasuresCC(version string) (bool, error) {
	major, minor, err := parseMajorMinor(version)
	if err != nil {
		return false, err
	}
	return major > MinCCStubVersion[0] || (major == MinCCStubVersion[0] && minor >= MinCCStubVersion[1]), nil
}

// loadOptions returns the UEFI LoadOptions OVMF passes to a directly booted kernel: the QEMU
// command line, with "initrd=initrd " put in front when an initrd is loaded (edk2
// X86QemuLoadImageLib: "%a%a%a", "", "initrd=initrd ", CommandLine), widened byte by byte to
// UCS-2 and NUL-terminated; nil when both are empty (OVMF then passes no LoadOptions and the
// stub measures nothing).
func loadOptions(cmdline string, hasInitrd bool) []byte {
	s := cmdline
	if hasInitrd {
		s = "initrd=initrd " + s
	}
	if s == "" {
		return nil
	}
	out := make([]byte, 0, 2*len(s)+2)
	for i := 0; i < len(s); i++ {
		out = append(out, s[i], 0)
	}
	return append(out, 0, 0)
}

// RTMR2Value predicts RTMR[2] at the time the kernel starts, for a kernel whose EFI stub
// measures into the CC measurement protocol (Linux ≥ 6.9) booted directly by TDVF: first the
// LoadOptions (command line) if there are any, then the initrd if one is loaded. An empty
// initrd counts as no initrd (QEMU then passes none); with neither, RTMR[2] stays zero.
func RTMR2Value(cmdline string, initrd []byte) (value [DigestSize]byte) {
	hasInitrd := len(initrd) > 0
	if opts := loadOptions(cmdline, hasInitrd); opts != nil {
		Extend(&value, sha512.Sum384(opts))
	}
	if hasInitrd {
		Extend(&value, sha512.Sum384(initrd))
	}
	return value
}
