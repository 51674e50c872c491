package snp

import (
	"errors"
	"fmt"

	"github.com/sealpod/sealpod/guest-image/measure/ovmf"
)

// ErrNoKernelHashes is returned when direct-boot hashes are given for a firmware whose SEV
// metadata has no SNP_KERNEL_HASHES section: such a firmware would not measure the kernel, so
// a digest that ignored it would silently vouch for any kernel.
var ErrNoKernelHashes = errors.New("firmware has no SNP_KERNEL_HASHES section: it cannot measure a direct-boot kernel")

// MaxVCPUs bounds the vCPU count (one VMSA page each).
const MaxVCPUs = 512

// maxMetadataPages bounds the pages the SEV metadata may describe (1 GiB), so that a hostile
// firmware cannot make the computation run for hours.
const maxMetadataPages = 1 << 18

// Params are the inputs of the SNP launch digest.
type Params struct {
	// Firmware is the parsed firmware image (required). Its bytes are measured as normal
	// pages ending at 4 GiB unless FirmwareDigest is set.
	Firmware *ovmf.Firmware
	// FirmwareDigest, if set, is the precomputed launch digest after the firmware pages (see
	// FirmwareDigest()); the firmware bytes are then only used for their metadata.
	FirmwareDigest *[DigestSize]byte
	// Boot holds the hashes of kernel, initrd and cmdline for measured direct boot; nil when
	// the guest does not boot a kernel directly.
	Boot *BootHashes
	// VCPUs is the number of vCPUs (one VMSA each).
	VCPUs int
	// VCPUSig is the CPUID(1).EAX signature QEMU puts into RDX (ignored for ec2/gce).
	VCPUSig uint32
	// GuestFeatures is the SEV_FEATURES field of the VMSAs (0x1 = SNP active).
	GuestFeatures uint64
	// VMM selects the hypervisor's VMSA and CPUID-page conventions.
	VMM VMM
}

// FirmwareDigest returns the launch digest after measuring only the firmware pages (the value
// sev-snp-measure calls the "OVMF hash"), for use as Params.FirmwareDigest.
func FirmwareDigest(fw *ovmf.Firmware) ([DigestSize]byte, error) {
	if err := checkFirmwareLayout(fw); err != nil {
		return [DigestSize]byte{}, err
	}
	c := newLaunchContext(nil)
	c.normalPages(fw.GPA(), fw.Data())
	return c.ld, nil
}

func checkFirmwareLayout(fw *ovmf.Firmware) error {
	n := len(fw.Data())
	if n == 0 || n%pageSize != 0 {
		return fmt.Errorf("firmware: size %d is not a positive multiple of %d", n, pageSize)
	}
	if uint64(n) > ovmf.FourGiB {
		return fmt.Errorf("firmware: size %d exceeds 4 GiB", n)
	}
	return nil
}

func (p *Params) check() error {
	if p.VCPUs < 1 || p.VCPUs > MaxVCPUs {
		return fmt.Errorf("vcpus: %d out of range 1..%d", p.VCPUs, MaxVCPUs)
	}
	return nil
}

// LaunchDigest computes the SEV-SNP launch digest (the attestation report's MEASUREMENT).
func LaunchDigest(p Params) ([DigestSize]byte, error) {
	var zero [DigestSize]byte
	if p.Firmware == nil {
		return zero, errors.New("firmware: required for the SNP launch digest")
	}
	if err := p.check(); err != nil {
		return zero, err
	}
	c, err := measureFirmware(p)
	if err != nil {
		return zero, err
	}
	if err := measureMetadata(c, p); err != nil {
		return zero, err
	}
	apEIP, err := p.Firmware.SEVESResetEIP()
	if err != nil {
		return zero, fmt.Errorf("firmware: AP reset vector: %w", err)
	}
	if err := measureVMSAs(c, p, apEIP); err != nil {
		return zero, err
	}
	return c.ld, nil
}

func measureFirmware(p Params) (*launchContext, error) {
	if p.FirmwareDigest != nil {
		return newLaunchContext(p.FirmwareDigest), nil
	}
	if err := checkFirmwareLayout(p.Firmware); err != nil {
		return nil, err
	}
	c := newLaunchContext(nil)
	c.normalPages(p.Firmware.GPA(), p.Firmware.Data())
	return c, nil
}

// measureMetadata measures the pages the SEV metadata describes, in firmware order, as QEMU
// hands them to SNP_LAUNCH_UPDATE.
func measureMetadata(c *launchContext, p Params) error {
	fw := p.Firmware
	sections := fw.SEVSections()
	if len(sections) == 0 {
		return errors.New("firmware: no SEV metadata (not an SEV-SNP capable OVMF)")
	}
	if p.Boot != nil && !fw.HasSEVSection(ovmf.SNPKernelHashes) {
		return ErrNoKernelHashes
	}
	var pages uint64
	for i, s := range sections {
		if s.GPA%pageSize != 0 {
			return fmt.Errorf("firmware: SEV metadata section %d (%s): gpa %#x not page aligned", i, s.Type, s.GPA)
		}
		if s.Type != ovmf.SNPSecrets && s.Type != ovmf.SNPCPUID && s.Size%pageSize != 0 {
			return fmt.Errorf("firmware: SEV metadata section %d (%s): size %#x not a multiple of the page size", i, s.Type, s.Size)
		}
		if pages += uint64(s.Size) / pageSize; pages > maxMetadataPages {
			return fmt.Errorf("firmware: SEV metadata describes more than %d pages", maxMetadataPages)
		}
		gpa, size := uint64(s.GPA), uint64(s.Size)
		switch s.Type {
		case ovmf.SNPSecMem:
			if p.VMM == VMMGCE {
				c.typedPages(pageTypeUnmeasured, gpa, size)
			} else {
				c.typedPages(pageTypeZero, gpa, size)
			}
		case ovmf.SNPSecrets:
			c.update(pageTypeSecrets, gpa, &zeroDigest)
		case ovmf.SNPCPUID:
			if p.VMM != VMMEC2 { // EC2 adds the CPUID page(s) last
				c.update(pageTypeCPUID, gpa, &zeroDigest)
			}
		case ovmf.SNPSVSMCAA:
			c.typedPages(pageTypeZero, gpa, size)
		case ovmf.SNPKernelHashes:
			if p.Boot == nil {
				c.typedPages(pageTypeZero, gpa, size)
				continue
			}
			page, err := hashesPage(fw, p.Boot, size)
			if err != nil {
				return err
			}
			c.normalPages(gpa, page)
		default:
			return fmt.Errorf("firmware: SEV metadata section %d: unknown type %s", i, s.Type)
		}
	}
	if p.VMM == VMMEC2 {
		for _, s := range sections {
			if s.Type == ovmf.SNPCPUID {
				c.update(pageTypeCPUID, uint64(s.GPA), &zeroDigest)
			}
		}
	}
	return nil
}

func hashesPage(fw *ovmf.Firmware, h *BootHashes, sectionSize uint64) ([]byte, error) {
	if sectionSize != pageSize {
		return nil, fmt.Errorf("firmware: SNP_KERNEL_HASHES section: size %#x, want one page", sectionSize)
	}
	tableGPA, err := fw.SEVHashTableGPA()
	if err != nil {
		return nil, fmt.Errorf("firmware: kernel hashes table address: %w", err)
	}
	off := int(tableGPA & (pageSize - 1))
	if off+paddedTableSize > pageSize {
		return nil, fmt.Errorf("firmware: kernel hashes table at %#x does not fit in its page", tableGPA)
	}
	return h.page(off), nil
}

func measureVMSAs(c *launchContext, p Params, apEIP uint32) error {
	if p.VCPUs > 1 && apEIP == 0 {
		return errors.New("firmware: AP reset vector is 0: cannot start more than one vCPU")
	}
	bsp := vmsaPage(bspEIP, p.GuestFeatures, p.VCPUSig, p.VMM)
	c.vmsaPage(bsp)
	if p.VCPUs > 1 {
		ap := vmsaPage(apEIP, p.GuestFeatures, p.VCPUSig, p.VMM)
		for range p.VCPUs - 1 {
			c.vmsaPage(ap)
		}
	}
	return nil
}
