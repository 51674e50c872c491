package tdx

import (
	"crypto/sha512"
	"fmt"
)

// simMRTDDomain separates the sim-tdx MRTD from any other SHA-384 of a firmware image.
const simMRTDDomain = "sealpod sim-tdx MRTD v1\x00"

// SimMRTD is MRTD in the `sim-tdx` TEE. Under emulation no TDX module builds the TD and no
// TDVF runs, so there is no TDH.MR.EXTEND sequence to replay; the simulated TDX module
// measures what it was given to boot as firmware instead:
//
//	MRTD = SHA-384("sealpod sim-tdx MRTD v1" ‖ 0x00 ‖ firmware)
//
// where firmware is the guest bundle's firmware.fd exactly as the VMM loads it, or empty when
// the bundle has none (QEMU's built-in firmware boots the kernel directly). A different
// firmware gives a different MRTD; kernel, initrd and command line are in the RTMRs.
func SimMRTD(firmware []byte) [DigestSize]byte {
	h := sha512.New384()
	h.Write([]byte(simMRTDDomain))
	h.Write(firmware)
	var out [DigestSize]byte
	h.Sum(out[:0])
	return out
}

// SimRTMRs are RTMR[1] and RTMR[2] in the `sim-tdx` TEE for a direct boot of kernel with
// initrd and cmdline, computed with the same functions as the tdx values: the simulated TDVF
// measures the kernel file as handed over, unmodified (KernelDigest with HeaderUnmodified:
// the SHA-384 Authenticode digest of the EFI-stub kernel, then TDVF's boot events,
// RTMR1Value), and the simulated EFI stub measures the command line and the initrd as a
// Linux ≥ 6.9 stub does (RTMR2Value), whatever the kernel's version, so a separate initrd is
// bound too. Nothing here depends on the host: a different kernel changes RTMR[1], a
// different initrd or command line RTMR[2]. The kernel must be an EFI-stub bzImage.
func SimRTMRs(kernel []byte, cmdline string, initrd []byte) (r1, r2 [DigestSize]byte, err error) {
	kd, err := KernelDigest(kernel, cmdline, len(initrd) > 0, HeaderUnmodified)
	if err != nil {
		return r1, r2, fmt.Errorf("sim-tdx RTMR[1]: %w", err)
	}
	return RTMR1Value(kd), RTMR2Value(cmdline, initrd), nil
}
