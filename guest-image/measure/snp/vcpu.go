package snp

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// CPUSignature computes the CPUID Fn0000_0001_EAX signature from family, model and stepping
// (AMD CPUID specification #25481).
func CPUSignature(family, model, stepping int) uint32 {
	famLow, famHigh := family, 0
	if family > 0xf {
		famLow, famHigh = 0xf, (family-0xf)&0xff
	}
	return uint32(famHigh<<20 | ((model>>4)&0xf)<<16 | famLow<<8 | (model&0xf)<<4 | stepping&0xf)
}

// vcpuTypes maps QEMU's built-in AMD EPYC CPU model names to their signatures.
var vcpuTypes = map[string]uint32{
	"EPYC":          CPUSignature(23, 1, 2),
	"EPYC-v1":       CPUSignature(23, 1, 2),
	"EPYC-v2":       CPUSignature(23, 1, 2),
	"EPYC-IBPB":     CPUSignature(23, 1, 2),
	"EPYC-v3":       CPUSignature(23, 1, 2),
	"EPYC-v4":       CPUSignature(23, 1, 2),
	"EPYC-Rome":     CPUSignature(23, 49, 0),
	"EPYC-Rome-v1":  CPUSignature(23, 49, 0),
	"EPYC-Rome-v2":  CPUSignature(23, 49, 0),
	"EPYC-Rome-v3":  CPUSignature(23, 49, 0),
	"EPYC-Milan":    CPUSignature(25, 1, 1),
	"EPYC-Milan-v1": CPUSignature(25, 1, 1),
	"EPYC-Milan-v2": CPUSignature(25, 1, 1),
	"EPYC-Genoa":    CPUSignature(25, 17, 0),
	"EPYC-Genoa-v1": CPUSignature(25, 17, 0),
	"EPYC-Turin":    CPUSignature(26, 0, 0),
}

// VCPUTypes lists the known vCPU type names, sorted.
func VCPUTypes() []string {
	out := make([]string, 0, len(vcpuTypes))
	for k := range vcpuTypes {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ParseVCPUType returns the CPUID signature of a QEMU vCPU type name (case-insensitive) or of
// an explicit signature written as a number ("0x00800f12").
func ParseVCPUType(s string) (uint32, error) {
	for name, sig := range vcpuTypes {
		if strings.EqualFold(name, s) {
			return sig, nil
		}
	}
	if v, err := strconv.ParseUint(s, 0, 32); err == nil {
		return uint32(v), nil
	}
	return 0, fmt.Errorf("vcpu type %q: unknown (want a CPUID signature such as 0x00800f12 or one of %s)", s, strings.Join(VCPUTypes(), ", "))
}
