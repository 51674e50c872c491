// Package measure computes a guest's reference launch measurements for every TEE from its
// artifacts alone (firmware, kernel, initrd, command line, vCPUs), offline and reproducibly.
// `make guest` uses it to fill guest.json, `sealctl guest measure` exposes it to owners, and
// the shim's simulated AMD-SP uses it to report what it booted — one code path for all three.
package measure

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/sealpod/sealpod/guest-image/measure/ovmf"
	"github.com/sealpod/sealpod/guest-image/measure/snp"
	"github.com/sealpod/sealpod/guest-image/measure/tdx"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/tee"
)

// Defaults used when an Inputs field is left zero.
const (
	DefaultVCPUType      = "EPYC-v4"
	DefaultGuestFeatures = 0x1 // SEV_FEATURES: SNPActive only
	DefaultVMM           = "qemu"
)

// ErrNoFirmware is returned when a TEE that needs a firmware image (snp, tdx) has none.
var ErrNoFirmware = errors.New("firmware: required")

// Boot are the artifacts of a direct kernel boot.
type Boot struct {
	Kernel  []byte
	Initrd  []byte // empty = no initrd
	Cmdline string
}

// Inputs are everything a launch measurement depends on.
type Inputs struct {
	// Firmware is the firmware image exactly as the VMM loads it (for SNP: the -bios file; for
	// TDX: the unified OVMF.fd / TDVF image). nil = no firmware (sim only).
	Firmware []byte
	// Boot holds kernel, initrd and command line; nil = no direct kernel boot.
	Boot *Boot
	// VCPUs is the number of vCPUs (≥ 1).
	VCPUs int
	// VCPUType is a QEMU CPU model name (EPYC-v4, EPYC-Milan, ...) or a CPUID signature
	// ("0x00800f12"); "" = DefaultVCPUType.
	VCPUType string
	// GuestFeatures is the SNP SEV_FEATURES value; 0 = DefaultGuestFeatures.
	GuestFeatures uint64
	// VMM is qemu, ec2 or gce (SNP VMSA conventions); "" = qemu.
	VMM string
	// FirmwareDigest optionally gives the SNP launch digest after the firmware pages (hex),
	// for firmware too large to ship; the firmware's metadata must still be supplied.
	FirmwareDigest string
	// TDXOrder is the TDX page add/extend order ("per-page" default, "adds-first").
	TDXOrder string
	// TDXKernelHeader is how the host's QEMU hands the kernel's setup header to TDVF
	// ("qemu" default: patched by QEMU's loader; "unmodified"); it changes RTMR[1].
	TDXKernelHeader string
	// TEEs selects the measurements to compute (snp, tdx, sim, pef); empty = all of them that
	// the inputs support (see Compute).
	TEEs []tee.TEE
}

// Compute returns the reference measurements for the requested TEEs. A requested TEE whose
// measurement cannot be computed is an error naming it. With no TEEs requested it computes
// sim always, snp when the firmware has SEV metadata (and a kernel-hashes section if there is
// a kernel), tdx when its TDX metadata parses (a warning is logged otherwise), pef when
// there is a direct-boot kernel and sim-tdx when that kernel is an EFI stub; a failure of any
// of those is still an error.
func Compute(in Inputs) (bundle.Measurements, error) {
	var m bundle.Measurements
	var fw *ovmf.Firmware
	if in.Firmware != nil {
		var err error
		if fw, err = ovmf.Parse(in.Firmware); err != nil {
			return m, fmt.Errorf("firmware: %w", err)
		}
	}
	tees, err := in.selectTEEs(fw)
	if err != nil {
		return m, err
	}
	h := in.hashBoot(slices.Contains(tees, tee.SNP) || slices.Contains(tees, tee.Sim) || slices.Contains(tees, tee.PEF))
	for _, t := range tees {
		switch t {
		case tee.SNP:
			if fw == nil {
				return m, fmt.Errorf("measure snp: %w", ErrNoFirmware)
			}
			d, err := in.snpDigest(fw, h, snp.LaunchDigest)
			if err != nil {
				return m, fmt.Errorf("measure snp: %w", err)
			}
			m.SNP = hex.EncodeToString(d[:])
		case tee.Sim:
			d, err := in.snpDigest(fw, h, snp.SimLaunchDigest)
			if err != nil {
				return m, fmt.Errorf("measure sim: %w", err)
			}
			m.Sim = hex.EncodeToString(d[:])
		case tee.TDX:
			tm, err := in.tdxMeasurement(fw)
			if err != nil {
				return m, fmt.Errorf("measure tdx: %w", err)
			}
			m.TDX = tm
		case tee.SimTDX:
			tm, err := in.simTDXMeasurement()
			if err != nil {
				return m, fmt.Errorf("measure sim-tdx: %w", err)
			}
			m.SimTDX = tm
		case tee.PEF:
			if in.Boot == nil {
				return m, errors.New("measure pef: a direct-boot kernel is required")
			}
			c := sha256.Sum256([]byte(in.Boot.Cmdline))
			m.PEF = &bundle.PEFMeasurement{
				Kernel:  hex.EncodeToString(h.Kernel[:]),
				Initrd:  hex.EncodeToString(h.Initrd[:]),
				Cmdline: hex.EncodeToString(c[:]),
			}
		}
	}
	return m, nil
}

// BundleInputs returns the Inputs describing the boot of a guest bundle: its firmware (if any),
// kernel, initrd, guest.json command line, vCPU count and vCPU type. `make guest` and the sim
// AMD-SP both measure through it, so they agree on the value.
func BundleInputs(b *bundle.Bundle, tees ...tee.TEE) Inputs {
	return Inputs{
		Firmware: b.Firmware,
		Boot:     &Boot{Kernel: b.Kernel, Initrd: b.Initrd, Cmdline: b.Config.Cmdline},
		VCPUs:    b.Config.VCPUs,
		VCPUType: b.Config.VCPUType,
		TEEs:     tees,
	}
}

func (in *Inputs) selectTEEs(fw *ovmf.Firmware) ([]tee.TEE, error) {
	if len(in.TEEs) > 0 {
		var out []tee.TEE
		for _, t := range in.TEEs {
			if err := t.Validate(); err != nil {
				return nil, fmt.Errorf("measure: %w", err)
			}
			if !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
		return out, nil
	}
	out := []tee.TEE{tee.Sim}
	if fw != nil {
		// SNP needs a firmware that measures the kernel when there is one.
		if len(fw.SEVSections()) > 0 && (in.Boot == nil || fw.HasSEVSection(ovmf.SNPKernelHashes)) {
			out = append(out, tee.SNP)
		}
		if fw.HasTDXMetadata() {
			// Not requested explicitly: a firmware whose TDX metadata does not fit (typically
			// the CODE half of a split OVMF) is measured for the other TEEs, with a warning.
			if _, err := fw.TDXSections(); err != nil {
				slog.Warn("tdx not measured: the firmware's TDX metadata is unusable (request --tee tdx to make this an error)", "err", err)
			} else {
				out = append(out, tee.TDX)
			}
		}
	}
	if in.Boot != nil {
		out = append(out, tee.PEF)
	}
	if in.simTDXComputable() {
		out = append(out, tee.SimTDX) // an EFI-stub kernel (simtdx.go)
	}
	return out, nil
}

// hashBoot computes the SHA-256 digests of kernel, initrd and cmdline.
func (in *Inputs) hashBoot(needed bool) *snp.BootHashes {
	if in.Boot == nil || !needed {
		return nil
	}
	h := snp.HashBoot(in.Boot.Kernel, in.Boot.Initrd, in.Boot.Cmdline)
	return &h
}

func (in *Inputs) snpParams(fw *ovmf.Firmware, h *snp.BootHashes) (snp.Params, error) {
	p := snp.Params{Firmware: fw, Boot: h, VCPUs: in.VCPUs, GuestFeatures: in.GuestFeatures}
	if p.GuestFeatures == 0 {
		p.GuestFeatures = DefaultGuestFeatures
	}
	vt := in.VCPUType
	if vt == "" {
		vt = DefaultVCPUType
	}
	var err error
	if p.VCPUSig, err = snp.ParseVCPUType(vt); err != nil {
		return p, err
	}
	vmm := in.VMM
	if vmm == "" {
		vmm = DefaultVMM
	}
	if p.VMM, err = snp.ParseVMM(vmm); err != nil {
		return p, err
	}
	if in.FirmwareDigest != "" {
		b, err := hex.DecodeString(in.FirmwareDigest)
		if err != nil || len(b) != snp.DigestSize {
			return p, fmt.Errorf("firmware digest: want %d bytes of hex", snp.DigestSize)
		}
		p.FirmwareDigest = (*[snp.DigestSize]byte)(b)
	}
	return p, nil
}

func (in *Inputs) snpDigest(fw *ovmf.Firmware, h *snp.BootHashes, f func(snp.Params) ([snp.DigestSize]byte, error)) ([snp.DigestSize]byte, error) {
	p, err := in.snpParams(fw, h)
	if err != nil {
		return [snp.DigestSize]byte{}, err
	}
	return f(p)
}

// tdxMeasurement computes MRTD and, for a direct kernel boot, RTMR[1] and RTMR[2] — both or
// neither: a value that pins only one of them would not bind the boot, and the broker refuses
// it. RTMR[0] (TD HOB, QEMU's ACPI tables, boot variables: host and QEMU dependent) and RTMR[3]
// (the guest's, at run time) are left empty (= not pinned). See docs/measurements.md.
func (in *Inputs) tdxMeasurement(fw *ovmf.Firmware) (*bundle.TDXMeasurement, error) {
	if fw == nil {
		return nil, ErrNoFirmware
	}
	order, err := tdx.ParseOrder(in.TDXOrder)
	if err != nil {
		return nil, err
	}
	hdr, err := tdx.ParseKernelHeader(in.TDXKernelHeader)
	if err != nil {
		return nil, err
	}
	mrtd, err := tdx.MRTD(fw, order)
	if err != nil {
		return nil, err
	}
	t := &bundle.TDXMeasurement{MRTD: hex.EncodeToString(mrtd[:])}
	if in.Boot == nil {
		return t, nil
	}
	r1, r2, err := tdxBootRTMRs(in.Boot, hdr)
	if err != nil {
		slog.Warn("tdx: RTMR[1]/RTMR[2] not pinned, so the TDX value does not bind kernel, initrd and command line (the broker refuses it)", "err", err)
		return t, nil
	}
	t.RTMRs = []string{"", hex.EncodeToString(r1[:]), hex.EncodeToString(r2[:]), ""}
	return t, nil
}

// ErrTDXBootUnbound is wrapped when RTMR[1] and RTMR[2] cannot bind a direct boot.
var ErrTDXBootUnbound = errors.New("tdx boot not bound by RTMR[1]/RTMR[2]")

// tdxBootRTMRs predicts RTMR[1] (kernel) and RTMR[2] (what the kernel's EFI stub measures).
// A Linux < 6.9 stub measures nothing into RTMR[2] (it stays zero), so its initrd and command
// line are bound only when they are built into the kernel (CONFIG_INITRAMFS_SOURCE,
// CONFIG_CMDLINE_OVERRIDE) and RTMR[1] covers them: a separate initrd is refused.
func tdxBootRTMRs(b *Boot, hdr tdx.KernelHeader) (r1, r2 [tdx.DigestSize]byte, err error) {
	version, err := tdx.KernelVersion(b.Kernel)
	if err != nil {
		return r1, r2, fmt.Errorf("%w: %w", ErrTDXBootUnbound, err)
	}
	measuresCC, err := tdx.StubMeasuresCC(version)
	if err != nil {
		return r1, r2, fmt.Errorf("%w: %w", ErrTDXBootUnbound, err)
	}
	hasInitrd := len(b.Initrd) > 0
	if !measuresCC && hasInitrd {
		return r1, r2, fmt.Errorf("%w: kernel %q (< 6.9) does not measure the separate initrd; build it into the kernel", ErrTDXBootUnbound, version)
	}
	kd, err := tdx.KernelDigest(b.Kernel, b.Cmdline, hasInitrd, hdr)
	if err != nil {
		return r1, r2, fmt.Errorf("%w: %w", ErrTDXBootUnbound, err)
	}
	r1 = tdx.RTMR1Value(kd)
	if measuresCC {
		r2 = tdx.RTMR2Value(b.Cmdline, b.Initrd)
	}
	return r1, r2, nil
}
