package manifests

import (
	corev1 "k8s.io/api/core/v1"
)

// The placeholder keeps the pod's and containers' securityContext so that Pod Security
// admission judges the sealed pod as it would judge the original (a manifest admitted at
// `restricted` is still admitted), and the kubelet's checks (runAsNonRoot against the secure
// image's numeric USER, sysctls, fsGroup on the volumes it mounts) behave as for the original.
// None of it is secret. It is not what the containers run with: the agent enforces the
// sealed copy inside the guest and never reads the placeholder. Two parts are replaced:
//
//   - a Localhost seccomp profile becomes RuntimeDefault: the kubelet would read the named
//     file from the node's disk, while the guest applies the profile sealed from the owner's
//     file; both types are allowed at every Pod Security level;
//   - Windows options keep only hostProcess (what Pod Security checks); the credential spec
//     and user name are a Windows node's business, not a sealed Linux pod's.

// placeholderPodSecurity returns the host-visible copy of a pod securityContext.
func placeholderPodSecurity(in *corev1.PodSecurityContext) *corev1.PodSecurityContext {
	if in == nil {
		return nil
	}
	out := in.DeepCopy()
	out.SeccompProfile = placeholderSeccomp(out.SeccompProfile)
	out.WindowsOptions = placeholderWindows(out.WindowsOptions)
	return out
}

// placeholderContainerSecurity returns the host-visible copy of a container securityContext.
func placeholderContainerSecurity(in *corev1.SecurityContext) *corev1.SecurityContext {
	if in == nil {
		return nil
	}
	out := in.DeepCopy()
	out.SeccompProfile = placeholderSeccomp(out.SeccompProfile)
	out.WindowsOptions = placeholderWindows(out.WindowsOptions)
	return out
}

func placeholderSeccomp(sp *corev1.SeccompProfile) *corev1.SeccompProfile {
	if sp == nil || sp.Type != corev1.SeccompProfileTypeLocalhost {
		return sp
	}
	return &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
}

func placeholderWindows(w *corev1.WindowsSecurityContextOptions) *corev1.WindowsSecurityContextOptions {
	if w == nil || w.HostProcess == nil {
		return nil
	}
	return &corev1.WindowsSecurityContextOptions{HostProcess: w.HostProcess}
}
