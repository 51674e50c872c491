package manifests

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
)

// podLimits computes a pod's effective CPU and memory limits the way the kubelet computes the
// sandbox's (k8s.io/component-helpers/resource.PodLimits, which the shim sees as the
// io.kubernetes.cri.sandbox-* annotations): the app containers' and sidecars' (init
// containers with restartPolicy Always) limits summed, at least the largest one-shot init
// container plus the sidecars started before it; a container without a limit adds nothing;
// pod-level spec.resources.limits, where set, replace the containers'. The RuntimeClass
// overhead is not included. 0 means no limit.
func podLimits(ps *corev1.PodSpec) bundle.Limits {
	get := func(rl corev1.ResourceList, name corev1.ResourceName) int64 {
		q, ok := rl[name]
		if !ok {
			return 0
		}
		if name == corev1.ResourceCPU {
			return q.MilliValue()
		}
		return q.Value()
	}
	one := func(name corev1.ResourceName) int64 {
		if ps.Resources != nil {
			if v := get(ps.Resources.Limits, name); v > 0 {
				return v
			}
		}
		var sum, sidecars, initMax int64
		for _, c := range ps.Containers {
			sum += get(c.Resources.Limits, name)
		}
		for _, c := range ps.InitContainers {
			v := get(c.Resources.Limits, name)
			if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
				sum += v
				sidecars += v
				initMax = max(initMax, sidecars)
			} else {
				initMax = max(initMax, v+sidecars)
			}
		}
		return max(sum, initMax)
	}
	return bundle.Limits{MemoryBytes: one(corev1.ResourceMemory), MilliCPU: one(corev1.ResourceCPU)}
}
