package qemu

import (
	"strconv"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
)

// The pseries (IBM Power, ppc64le) VM: the machine of the pef TEE on Power9/Power10 hosts
// with the ultravisor (KVM, pef-guest object), and of ppc64le guests under software emulation
// (TCG) — the emulated TEEs' pseries machine, on which the guest test suite boots the ppc64le
// guest to agent ready (docs/pef.md). Everything else of the command line is the same as on
// q35: the agent channel is a virtio-serial port, the console the first serial device, which
// on pseries QEMU turns into the hypervisor virtual console spapr-vty (the guest's hvc0).

// pseriesTCGMachine is the pseries machine under emulation. TCG implements none of the
// speculative-execution mitigations pseries-7.2 asks for by default (cap-cfpc, cap-sbbc,
// cap-ibs: "workaround"; cap-ccf-assist: on) and warns about each at every start; stating
// what emulation provides ("broken", off) keeps the console free of those warnings. The
// guest sees the same capabilities as it would from the defaults under TCG.
const pseriesTCGMachine = "pseries,cap-cfpc=broken,cap-sbbc=broken,cap-ibs=broken,cap-ccf-assist=off"

// PseriesTCGCPU is the vCPU model of an emulated pseries guest: POWER9, the first processor
// with PEF (QEMU's ppc64 has no "max" model).
const PseriesTCGCPU = "power9"

// isPseries reports whether c boots a pseries VM: the pef TEE, or a ppc64le guest.
func (c *Config) isPseries() bool {
	return c.TEE == TEEPEF || c.Guest.Arch == bundle.ArchPPC64LE
}

// pseriesMachine returns the machine (and accelerator) arguments of a pseries VM.
func pseriesMachine(t TEE, accel Accel, tbSize int) ([]string, error) {
	switch {
	case t == TEEPEF:
		return []string{"-machine", "pseries,accel=kvm,confidential-guest-support=pef0", "-object", "pef-guest,id=pef0"}, nil
	case t != TEESim && t != TEESimPEF:
		return nil, invalid("Guest.Arch", "a ppc64le guest runs under pef (on Power) or emulated, not under %s", t)
	case accel == AccelTCG:
		return []string{"-machine", pseriesTCGMachine, "-accel", "tcg,tb-size=" + strconv.Itoa(tbSize)}, nil
	default:
		return []string{"-machine", "pseries,accel=" + string(accel)}, nil
	}
}
