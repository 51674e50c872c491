package bundle

import (
	"errors"
	"fmt"
)

// Guest sizing (docs/formats.md#guest-size): `sealctl image create` sizes each workload's
// guest from its pod's limits and the shim holds a guest to the same rule, so both sides
// import it from here.
const (
	// OverheadMiB is the guest memory the guest kernel, the agent and the initramfs take on
	// top of the containers' limits: guest RAM less MemAvailable with the agent up and idle,
	// measured 91/96/104 MiB for 128/256/512 MiB guests of Debian's 6.1 kernel
	// (docs/formats.md#guest-size; a minimal kernel takes less).
	OverheadMiB = 96
	// MaxOverheadMiB is the overhead the shim allows above a pod's memory limit (it checks
	// with MaxMemoryMiBFor): above OverheadMiB, so that OverheadMiB may be tuned without
	// refusing guests sealed before.
	MaxOverheadMiB = 128
	// MemoryStepMiB: guest memory is rounded up to a multiple of it.
	MemoryStepMiB = 32
	// MinMemoryMiB is the smallest guest sealctl makes: a pod whose memory limit leaves the
	// guest less than this (limit < MinMemoryMiB - OverheadMiB) is refused, never enlarged.
	MinMemoryMiB = 128
	// DefaultMemoryMiB and DefaultVCPUs size the guest of a pod without limits (sealctl
	// image create --default-guest-memory overrides the memory).
	DefaultMemoryMiB = 256
	DefaultVCPUs     = 1
	// MaxVCPUs caps the vCPUs taken from a CPU limit (the shim's default maxGuestVCPUs).
	MaxVCPUs = 8
)

// ErrLimitTooSmall is returned by SizeFor when a pod's memory limit leaves the guest too
// little memory to boot.
var ErrLimitTooSmall = errors.New("memory limit too small for a sealed guest")

// Limits are a pod's effective limits as the kubelet computes them for the sandbox (sum of
// the containers' limits, at least the largest init container's); 0 means no limit.
type Limits struct {
	MemoryBytes int64
	MilliCPU    int64
}

// Size is a guest's vCPU count and memory (guest.json vcpus, memoryMiB).
type Size struct {
	VCPUs, MemoryMiB int
}

// MemoryMiBFor is the guest memory sealctl gives a pod memory limit of limitBytes (> 0):
// the limit in MiB rounded up, plus OverheadMiB, rounded up to a multiple of MemoryStepMiB.
func MemoryMiBFor(limitBytes int64) int64 { return memoryFor(limitBytes, OverheadMiB) }

// MaxMemoryMiBFor is the largest guest the shim boots for a pod memory limit of limitBytes
// (> 0): as MemoryMiBFor with MaxOverheadMiB.
func MaxMemoryMiBFor(limitBytes int64) int64 { return memoryFor(limitBytes, MaxOverheadMiB) }

func memoryFor(limitBytes, overheadMiB int64) int64 {
	limitMiB := limitBytes >> 20
	if limitBytes&(1<<20-1) != 0 {
		limitMiB++
	}
	return (limitMiB + overheadMiB + MemoryStepMiB - 1) / MemoryStepMiB * MemoryStepMiB
}

// VCPUsFor is the vCPU count for a CPU limit in millicores (> 0): rounded up to whole CPUs,
// at most MaxVCPUs.
func VCPUsFor(milliCPU int64) int {
	return int(min((milliCPU+999)/1000, MaxVCPUs))
}

// SizeFor sizes the guest of a pod with limits l; dflt is used for what l leaves unlimited
// (zero fields of dflt: DefaultMemoryMiB, DefaultVCPUs). A memory limit below
// MinMemoryMiB - OverheadMiB is refused with ErrLimitTooSmall.
func SizeFor(l Limits, dflt Size) (Size, error) {
	s := dflt
	if s.MemoryMiB == 0 {
		s.MemoryMiB = DefaultMemoryMiB
	}
	if s.VCPUs == 0 {
		s.VCPUs = DefaultVCPUs
	}
	if l.MemoryBytes < 0 || l.MilliCPU < 0 {
		return s, fmt.Errorf("negative limit (memory %d bytes, cpu %dm)", l.MemoryBytes, l.MilliCPU)
	}
	if l.MemoryBytes > 0 {
		const minLimit = MinMemoryMiB - OverheadMiB
		if l.MemoryBytes < minLimit<<20 {
			return s, fmt.Errorf("%w: %.1f MiB, a sealed pod needs at least %d MiB (its guest takes the limit + %d MiB for the kernel and agent, at least %d MiB)",
				ErrLimitTooSmall, float64(l.MemoryBytes)/(1<<20), minLimit, OverheadMiB, MinMemoryMiB)
		}
		m := MemoryMiBFor(l.MemoryBytes)
		if m > 1<<20 {
			return s, fmt.Errorf("memory limit %d bytes: more than the largest guest (1 TiB)", l.MemoryBytes)
		}
		s.MemoryMiB = int(m)
	}
	if l.MilliCPU > 0 {
		s.VCPUs = VCPUsFor(l.MilliCPU)
	}
	return s, nil
}
