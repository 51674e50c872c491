package manifests

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
)

// TestPodLimits: the pod's effective limits as the kubelet computes the sandbox's
// (component-helpers PodLimits): containers summed, at least the largest init container plus
// the sidecars before it, containers without a limit add nothing, pod-level limits win.
func TestPodLimits(t *testing.T) {
	lim := func(mem, cpu string) corev1.ResourceRequirements {
		r := corev1.ResourceRequirements{Limits: corev1.ResourceList{}}
		if mem != "" {
			r.Limits[corev1.ResourceMemory] = resource.MustParse(mem)
		}
		if cpu != "" {
			r.Limits[corev1.ResourceCPU] = resource.MustParse(cpu)
		}
		return r
	}
	always := corev1.ContainerRestartPolicyAlways
	c := func(r corev1.ResourceRequirements) corev1.Container { return corev1.Container{Resources: r} }
	side := func(r corev1.ResourceRequirements) corev1.Container {
		return corev1.Container{Resources: r, RestartPolicy: &always}
	}
	const mi = 1 << 20
	cases := []struct {
		name string
		ps   corev1.PodSpec
		want bundle.Limits
	}{
		{"none", corev1.PodSpec{Containers: []corev1.Container{{}}}, bundle.Limits{}},
		{"sum", corev1.PodSpec{Containers: []corev1.Container{c(lim("100Mi", "500m")), c(lim("28Mi", "1"))}}, bundle.Limits{MemoryBytes: 128 * mi, MilliCPU: 1500}},
		{"one without a limit", corev1.PodSpec{Containers: []corev1.Container{c(lim("100Mi", "")), {}}}, bundle.Limits{MemoryBytes: 100 * mi}},
		{"init larger", corev1.PodSpec{InitContainers: []corev1.Container{c(lim("1Gi", "2"))}, Containers: []corev1.Container{c(lim("100Mi", "1"))}},
			bundle.Limits{MemoryBytes: 1024 * mi, MilliCPU: 2000}},
		{"sidecar before init", corev1.PodSpec{InitContainers: []corev1.Container{side(lim("50Mi", "")), c(lim("200Mi", ""))}, Containers: []corev1.Container{c(lim("100Mi", ""))}},
			bundle.Limits{MemoryBytes: 250 * mi}},
		{"sidecar adds", corev1.PodSpec{InitContainers: []corev1.Container{side(lim("50Mi", "250m"))}, Containers: []corev1.Container{c(lim("100Mi", "1"))}},
			bundle.Limits{MemoryBytes: 150 * mi, MilliCPU: 1250}},
		{"pod-level", corev1.PodSpec{Resources: &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("300Mi")}},
			Containers: []corev1.Container{c(lim("100Mi", "1"))}}, bundle.Limits{MemoryBytes: 300 * mi, MilliCPU: 1000}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := podLimits(&tc.ps); got != tc.want {
				t.Fatalf("%+v, want %+v", got, tc.want)
			}
		})
	}
}
