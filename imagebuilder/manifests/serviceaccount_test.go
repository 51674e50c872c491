package manifests

import (
	"strings"
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// withoutServiceAccount returns a copy of s without the service-account volume and its mounts,
// for tests about other volumes.
func withoutServiceAccount(s *spec.Spec) *spec.Spec {
	c := *s
	c.Volumes = nil
	for _, v := range s.Volumes {
		if v.Name != serviceAccountVolume {
			c.Volumes = append(c.Volumes, v)
		}
	}
	strip := func(cs []spec.Container) []spec.Container {
		out := make([]spec.Container, len(cs))
		for i, ct := range cs {
			out[i] = ct
			out[i].Mounts = nil
			for _, m := range ct.Mounts {
				if m.Volume != serviceAccountVolume {
					out[i].Mounts = append(out[i].Mounts, m)
				}
			}
		}
		return out
	}
	c.InitContainers, c.Containers = strip(s.InitContainers), strip(s.Containers)
	return &c
}

// The service-account token (issue 16 item 2): automountServiceAccountToken stays as the input
// had it; unless false, the sealed spec gets a host-provided volume for admission's
// kube-api-access volume, mounted read-only where admission mounts it (not over a mount the
// container already has there); --strict keeps the token out unless the pod asks for it,
// and refuses an explicit true.
func TestServiceAccountToken(t *testing.T) {
	ctr := func(mounts string) string {
		return "      containers: [{name: c, image: " + pinned + mounts + "}]\n      initContainers: [{name: i, image: " + pinned + "}]\n"
	}
	// check: the sealed spec has the volume (mounted once at the path in every container) iff
	// wantVol, and the placeholder shows auto ("" = no automountServiceAccountToken line).
	check := func(wantVol bool, auto string) func(t *testing.T, res *Result, out string) {
		return func(t *testing.T, res *Result, out string) {
			s := res.Workloads[0].Spec
			var vol *spec.Volume
			for i := range s.Volumes {
				if s.Volumes[i].Source == spec.HostServiceAccountSource {
					vol = &s.Volumes[i]
				}
			}
			if (vol != nil) != wantVol {
				t.Fatalf("service-account volume %+v, want %v", vol, wantVol)
			}
			if wantVol {
				if vol.Kind != spec.VolumeHostObject || vol.Name != serviceAccountVolume {
					t.Errorf("volume %+v", vol)
				}
				for _, c := range append(append([]spec.Container(nil), s.InitContainers...), s.Containers...) {
					n := 0
					for _, m := range c.Mounts {
						if m.Path == serviceAccountMountPath {
							n++
							if m.Volume == serviceAccountVolume && !m.ReadOnly {
								t.Errorf("container %s: token mount not read-only", c.Name)
							}
						}
					}
					if n != 1 {
						t.Errorf("container %s: %d mounts at %s: %+v", c.Name, n, serviceAccountMountPath, c.Mounts)
					}
				}
				warned(t, res, "service-account tokens are host-provided")
			}
			if auto == "" {
				notIn(t, out, "automountServiceAccountToken")
			} else if !strings.Contains(out, auto) {
				t.Errorf("placeholder lacks %q:\n%s", auto, out)
			}
		}
	}
	runLeakCases(t, []leakCase{
		{name: "default", input: deployment(ctr("")), check: check(true, "")},
		{name: "true", input: deployment("      automountServiceAccountToken: true\n" + ctr("")), check: check(true, "automountServiceAccountToken: true")},
		{name: "false", input: deployment("      automountServiceAccountToken: false\n" + ctr("")), check: check(false, "automountServiceAccountToken: false")},
		{name: "own mount at the path", input: deployment(ctr(", volumeMounts: [{name: t, mountPath: "+serviceAccountMountPath+"}]") + "      volumes: [{name: t, emptyDir: {}}]\n"), check: check(true, "")},
		{name: "strict, default", input: deployment(ctr("")), opts: Options{Strict: true}, check: check(false, "automountServiceAccountToken: false")},
		{name: "strict, true", input: deployment("      automountServiceAccountToken: true\n" + ctr("")), opts: Options{Strict: true}, wantErr: []string{"automountServiceAccountToken", "--strict"}},
		{name: "reserved name", input: deployment(ctr("") + "      volumes: [{name: " + serviceAccountVolume + ", emptyDir: {}}]\n"), wantErr: []string{"reserved"}},
	})
}

// enableServiceLinks (the kubelet's service environment variables): kept on the placeholder,
// and false is sealed (spec.NoServiceLinks) so the agent gives the containers only the API
// server's variables.
func TestServiceLinks(t *testing.T) {
	ctr := "      containers: [{name: c, image: " + pinned + "}]\n"
	check := func(noLinks bool, placeholder string) func(t *testing.T, res *Result, out string) {
		return func(t *testing.T, res *Result, out string) {
			if got := res.Workloads[0].Spec.NoServiceLinks; got != noLinks {
				t.Errorf("NoServiceLinks = %v, want %v", got, noLinks)
			}
			if placeholder == "" {
				notIn(t, out, "enableServiceLinks")
			} else if !strings.Contains(out, placeholder) {
				t.Errorf("placeholder lacks %q:\n%s", placeholder, out)
			}
		}
	}
	runLeakCases(t, []leakCase{
		{name: "default", input: deployment(ctr), check: check(false, "")},
		{name: "true", input: deployment("      enableServiceLinks: true\n" + ctr), check: check(false, "enableServiceLinks: true")},
		{name: "false", input: deployment("      enableServiceLinks: false\n" + ctr), check: check(true, "enableServiceLinks: false")},
	})
}
