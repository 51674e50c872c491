package snp

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// VMM selects the initial register conventions of the hypervisor that creates the VMSAs.
type VMM int

// Supported VMMs.
const (
	VMMQEMU VMM = iota // QEMU/KVM (default)
	VMMEC2             // AWS EC2
	VMMGCE             // Google Compute Engine
)

// ParseVMM parses "qemu", "ec2" or "gce" ("" = qemu).
func ParseVMM(s string) (VMM, error) {
	switch strings.ToLower(s) {
	case "", "qemu":
		return VMMQEMU, nil
	case "ec2":
		return VMMEC2, nil
	case "gce":
		return VMMGCE, nil
	}
	return 0, fmt.Errorf("vmm %q: want qemu, ec2 or gce", s)
}

func (v VMM) String() string {
	switch v {
	case VMMQEMU:
		return "qemu"
	case VMMEC2:
		return "ec2"
	case VMMGCE:
		return "gce"
	}
	return fmt.Sprintf("vmm(%d)", int(v))
}

// bspEIP is the x86 reset vector the bootstrap processor starts at.
const bspEIP = 0xfffffff0

// Offsets in the SEV-ES save area (AMD APM vol. 2, table B-4 "VMSA layout"; Linux struct
// sev_es_save_area).
const (
	offES          = 0x000
	offCS          = 0x010
	offSS          = 0x020
	offDS          = 0x030
	offFS          = 0x040
	offGS          = 0x050
	offGDTR        = 0x060
	offLDTR        = 0x070
	offIDTR        = 0x080
	offTR          = 0x090
	offEFER        = 0x0d0
	offCR4         = 0x148
	offCR0         = 0x158
	offDR7         = 0x160
	offDR6         = 0x168
	offRFLAGS      = 0x170
	offRIP         = 0x178
	offGPAT        = 0x268
	offRDX         = 0x310
	offSEVFeatures = 0x3b0
	offXCR0        = 0x3e8
	offMXCSR       = 0x408
	offX87FCW      = 0x410
)

// putSeg writes a VMCB segment: selector u16, attrib u16, limit u32, base u64.
func putSeg(p []byte, off int, selector, attrib uint16, limit uint32, base uint64) {
	binary.LittleEndian.PutUint16(p[off:], selector)
	binary.LittleEndian.PutUint16(p[off+2:], attrib)
	binary.LittleEndian.PutUint32(p[off+4:], limit)
	binary.LittleEndian.PutUint64(p[off+8:], base)
}

// vmsaPage builds the initial VMSA page of a vCPU that starts at eip.
func vmsaPage(eip uint32, sevFeatures uint64, vcpuSig uint32, vmm VMM) []byte {
	csFlags, ssFlags, trFlags := uint16(0x9b), uint16(0x93), uint16(0x8b)
	gPAT := uint64(0x0007040600070406) // PAT MSR power-on value
	rdx := uint64(vcpuSig)
	mxcsr, fcw := uint32(0x1f80), uint16(0x37f)
	switch vmm {
	case VMMEC2:
		if eip == bspEIP {
			csFlags = 0x9a
		}
		ssFlags, trFlags = 0x92, 0x83
		rdx, mxcsr, fcw = 0x600, 0, 0
	case VMMGCE:
		gPAT = 0x00070106
		rdx, mxcsr, fcw = 0x600, 0, 0
	}
	p := make([]byte, pageSize)
	putSeg(p, offES, 0, 0x93, 0xffff, 0)
	putSeg(p, offCS, 0xf000, csFlags, 0xffff, uint64(eip&0xffff0000))
	putSeg(p, offSS, 0, ssFlags, 0xffff, 0)
	putSeg(p, offDS, 0, 0x93, 0xffff, 0)
	putSeg(p, offFS, 0, 0x93, 0xffff, 0)
	putSeg(p, offGS, 0, 0x93, 0xffff, 0)
	putSeg(p, offGDTR, 0, 0, 0xffff, 0)
	putSeg(p, offLDTR, 0, 0x82, 0xffff, 0)
	putSeg(p, offIDTR, 0, 0, 0xffff, 0)
	putSeg(p, offTR, 0, trFlags, 0xffff, 0)
	le := binary.LittleEndian
	le.PutUint64(p[offEFER:], 0x1000) // EFER.SVME, set by KVM
	le.PutUint64(p[offCR4:], 0x40)    // CR4.MCE, set by KVM
	le.PutUint64(p[offCR0:], 0x10)
	le.PutUint64(p[offDR7:], 0x400)
	le.PutUint64(p[offDR6:], 0xffff0ff0)
	le.PutUint64(p[offRFLAGS:], 0x2)
	le.PutUint64(p[offRIP:], uint64(eip&0xffff))
	le.PutUint64(p[offGPAT:], gPAT)
	le.PutUint64(p[offRDX:], rdx)
	le.PutUint64(p[offSEVFeatures:], sevFeatures)
	le.PutUint64(p[offXCR0:], 0x1)
	le.PutUint32(p[offMXCSR:], mxcsr)
	le.PutUint16(p[offX87FCW:], fcw)
	return p
}
