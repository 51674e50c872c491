package snp

import (
	"errors"
	"fmt"

	"github.com/sealpod/sealpod/guest-image/measure/ovmf"
)

// SimHashesGPA is the guest-physical address recorded for the kernel-hashes page in the "sim"
// construction when the firmware has no SNP_KERNEL_HASHES section (or there is no firmware).
// Page 0 is never part of OVMF's SEV metadata, so the record cannot be confused with one.
const SimHashesGPA = 0

// SimLaunchDigest computes the launch digest the simulated AMD-SP of the `sim` TEE reports.
//
// With a firmware that has an SNP_KERNEL_HASHES section it is exactly LaunchDigest. Otherwise
// (no firmware, as for QEMU direct kernel boot under software emulation, or a firmware such as
// Debian's OVMF that cannot measure a kernel) it is the same page chaining over:
//  1. the firmware pages ending at 4 GiB (or FirmwareDigest), if there is a firmware;
//  2. the firmware's SEV metadata pages (zero/secrets/CPUID), if it has SEV metadata;
//  3. the kernel-hashes page (the SEV hashes table at offset 0) as a normal page at
//     SimHashesGPA — required when there is no firmware;
//  4. one VMSA per vCPU: the BSP at the reset vector, APs at the firmware's SEV-ES AP reset
//     vector, or also at the reset vector when there is none.
//
// Sim digests are never hardware-enforced; they only let the real SNP verification code run
// on machines without a TEE.
func SimLaunchDigest(p Params) ([DigestSize]byte, error) {
	var zero [DigestSize]byte
	if p.Firmware != nil && p.Firmware.HasSEVSection(ovmf.SNPKernelHashes) {
		return LaunchDigest(p)
	}
	if err := p.check(); err != nil {
		return zero, err
	}
	if p.Firmware == nil && p.Boot == nil {
		return zero, errors.New("sim digest: needs a firmware or a direct-boot kernel")
	}
	if p.Firmware == nil && p.FirmwareDigest != nil {
		return zero, errors.New("sim digest: a firmware digest was given without the firmware")
	}
	c := newLaunchContext(nil)
	apEIP := uint32(bspEIP)
	if p.Firmware != nil {
		var err error
		if c, err = measureFirmware(p); err != nil {
			return zero, err
		}
		if len(p.Firmware.SEVSections()) > 0 {
			q := p
			q.Boot = nil // the hashes page is measured below, at SimHashesGPA
			if err := measureMetadata(c, q); err != nil {
				return zero, err
			}
		}
		if eip, err := p.Firmware.SEVESResetEIP(); err == nil && eip != 0 {
			apEIP = eip
		} else if err != nil && !errors.Is(err, ovmf.ErrNotFound) {
			return zero, fmt.Errorf("firmware: AP reset vector: %w", err)
		}
	}
	if p.Boot != nil {
		c.normalPages(SimHashesGPA, p.Boot.page(0))
	}
	if err := measureVMSAs(c, p, apEIP); err != nil {
		return zero, err
	}
	return c.ld, nil
}
