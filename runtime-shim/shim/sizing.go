package shim

import (
	"fmt"
	"strconv"

	"github.com/containerd/containerd/errdefs"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/runtime-shim/config"
)

// Pod sizing annotations containerd's CRI plugin (1.6.x as packaged by Debian, 1.7) puts on
// the sandbox's OCI spec when the kubelet sends PodSandboxConfig.linux.resources: the sums
// of the containers' CPU and memory limits, without the RuntimeClass overhead.
const (
	AnnotationSandboxCPUPeriod = "io.kubernetes.cri.sandbox-cpu-period"
	AnnotationSandboxCPUQuota  = "io.kubernetes.cri.sandbox-cpu-quota"
	AnnotationSandboxCPUShares = "io.kubernetes.cri.sandbox-cpu-shares"
	AnnotationSandboxMemory    = "io.kubernetes.cri.sandbox-memory"
)

// sizingAnnotations are the sandbox annotations the shim keeps for sizing the VM.
var sizingAnnotations = []string{AnnotationSandboxCPUPeriod, AnnotationSandboxCPUQuota, AnnotationSandboxCPUShares, AnnotationSandboxMemory}

// podLimits are the pod's CPU and memory limits (0 = none).
type podLimits struct {
	MemoryBytes         int64
	CPUQuota, CPUPeriod int64
}

// podLimitsFrom parses the sizing annotations (absent or "0": no limit; the kubelet sends 0
// when a container has none).
func podLimitsFrom(ann map[string]string) (podLimits, error) {
	var l podLimits
	for _, f := range []struct {
		key string
		dst *int64
	}{{AnnotationSandboxMemory, &l.MemoryBytes}, {AnnotationSandboxCPUQuota, &l.CPUQuota}, {AnnotationSandboxCPUPeriod, &l.CPUPeriod}} {
		v, ok := ann[f.key]
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < -1 {
			return l, fmt.Errorf("sandbox annotation %s %.40q: not a number: %w", f.key, v, errdefs.ErrInvalidArgument)
		}
		*f.dst = max(n, 0) // -1 is CFS's "no quota"
	}
	return l, nil
}

// checkGuestFits refuses a guest.json larger than the pod may use: its memory over what
// the pod's memory limit plus bundle.MaxOverheadMiB for the guest kernel and agent
// (bundle.MaxMemoryMiBFor, at least what sealctl gives such a pod), its vCPUs over
// the CPU limit rounded up; without a limit, over the node's maxGuestMemoryMiB /
// maxGuestVCPUs (which also cap pods with limits). The guest keeps the size its guest.json
// measured: it is refused, never shrunk. QEMU's own memory and the guest's overhead are
// covered by the RuntimeClass overhead, so nothing is subtracted from the limit.
func checkGuestFits(g bundle.Config, ann map[string]string, cfg *config.Config) error {
	l, err := podLimitsFrom(ann)
	if err != nil {
		return err
	}
	refuse := func(format string, a ...any) error {
		return fmt.Errorf("secure image guest.json: %s: %w", fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
	}
	if maxMiB := bundle.MaxMemoryMiBFor(l.MemoryBytes); l.MemoryBytes > 0 && int64(g.MemoryMiB) > maxMiB {
		return refuse("memoryMiB %d is more than the %d MiB a guest may have for the pod's memory limit of %d MiB (sum of the containers' limits, %s, + %d MiB guest overhead, rounded up to %d MiB): raise the limits or seal again",
			g.MemoryMiB, maxMiB, l.MemoryBytes>>20, AnnotationSandboxMemory, bundle.MaxOverheadMiB, bundle.MemoryStepMiB)
	}
	if g.MemoryMiB > cfg.MaxGuestMemoryMiB {
		return refuse("memoryMiB %d is more than this node's maxGuestMemoryMiB %d", g.MemoryMiB, cfg.MaxGuestMemoryMiB)
	}
	if l.CPUQuota > 0 && l.CPUPeriod > 0 {
		maxV := (l.CPUQuota + l.CPUPeriod - 1) / l.CPUPeriod
		if int64(g.VCPUs) > maxV {
			return refuse("vcpus %d is more than the pod's CPU limit of %s CPUs (%s/%s) rounded up", g.VCPUs,
				strconv.FormatFloat(float64(l.CPUQuota)/float64(l.CPUPeriod), 'f', -1, 64), AnnotationSandboxCPUQuota, AnnotationSandboxCPUPeriod)
		}
	}
	if g.VCPUs > cfg.MaxGuestVCPUs {
		return refuse("vcpus %d is more than this node's maxGuestVCPUs %d", g.VCPUs, cfg.MaxGuestVCPUs)
	}
	return nil
}
