package containers

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sealpod/sealpod/agent/containers/image"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/internal/testdeps"
)

// The agent builds each container from the sealed securityContext (issue #16 item 5: the
// placeholder's copy only serves admission): user and groups, runAsNonRoot, capabilities,
// no_new_privs, read-only root and seccomp are in the runtime config it starts.
func TestSealedSecurityContextEnforced(t *testing.T) {
	if !seccompSupported {
		testdeps.Missing(t, "needs the seccomp build tag and libseccomp (go test -tags seccomp): every container without a sealed Unconfined profile gets a filter")
	}
	i64 := func(v int64) *int64 { return &v }
	yes, no := true, false
	rootfs := t.TempDir()
	if err := os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		imageUser string
		sc        *spec.SecurityContext
		wantErr   bool
		check     func(t *testing.T, uid, gid int, groups []int, caps []string, nnp, roRoot bool)
	}{
		{name: "runAsNonRoot refuses an image running as root", sc: &spec.SecurityContext{RunAsNonRoot: &yes}, wantErr: true},
		{name: "runAsNonRoot refuses runAsUser 0", imageUser: "app", sc: &spec.SecurityContext{RunAsNonRoot: &yes, RunAsUser: i64(0)}, wantErr: true},
		{name: "runAsNonRoot with a named non-root image user", imageUser: "app", sc: &spec.SecurityContext{RunAsNonRoot: &yes},
			check: func(t *testing.T, uid, gid int, _ []int, _ []string, _, _ bool) {
				if uid != 1000 || gid != 1000 {
					t.Errorf("uid:gid = %d:%d, want 1000:1000", uid, gid)
				}
			}},
		{name: "restricted: drop ALL add NET_BIND_SERVICE, no escalation, read-only root, groups",
			sc: &spec.SecurityContext{RunAsUser: i64(1001), RunAsGroup: i64(2001), SupplementalGroups: []int64{3000, 2000}, AllowPrivilegeEscalate: &no,
				ReadOnlyRootFilesystem: true, CapDrop: []string{"ALL"}, CapAdd: []string{"NET_BIND_SERVICE"}, SeccompProfile: &spec.SeccompProfile{Type: spec.SeccompRuntimeDefault}},
			check: func(t *testing.T, uid, gid int, groups []int, caps []string, nnp, roRoot bool) {
				if uid != 1001 || gid != 2001 || !slices.Contains(groups, 3000) || !slices.Contains(groups, 2000) {
					t.Errorf("uid:gid = %d:%d groups %v, want 1001:2001 with 3000 and 2000", uid, gid, groups)
				}
				if !slices.Equal(caps, []string{"CAP_NET_BIND_SERVICE"}) {
					t.Errorf("capabilities %v, want [CAP_NET_BIND_SERVICE]", caps)
				}
				if !nnp || !roRoot {
					t.Errorf("no_new_privs %v, read-only root %v: want both", nnp, roRoot)
				}
			}},
		{name: "add ALL drop CHOWN: every capability but CHOWN", sc: &spec.SecurityContext{CapAdd: []string{"ALL"}, CapDrop: []string{"chown"}},
			check: func(t *testing.T, _, _ int, _ []int, caps []string, _, _ bool) {
				if slices.Contains(caps, "CAP_CHOWN") || !slices.Contains(caps, "CAP_SYS_ADMIN") {
					t.Errorf("capabilities %v, want all but CAP_CHOWN", caps)
				}
			}},
		{name: "defaults: containerd's capabilities, escalation allowed, writable root", sc: nil,
			check: func(t *testing.T, uid, _ int, _ []int, caps []string, nnp, roRoot bool) {
				if uid != 0 || !slices.Equal(caps, defaultCaps) || nnp || roRoot {
					t.Errorf("uid %d caps %v no_new_privs %v read-only %v", uid, caps, nnp, roRoot)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			etc := t.TempDir()
			self, err := os.FindProcess(os.Getpid()) // namespace paths only; nothing starts
			if err != nil {
				t.Fatal(err)
			}
			p := &pod{spec: &spec.Spec{}, etc: etc, hostname: "web", volumes: map[string]podVolume{}, pause: &exec.Cmd{Process: self}}
			img := &image.Image{Config: &v1.ConfigFile{Config: v1.Config{User: tt.imageUser, Entrypoint: []string{"/bin/app"}}}}
			sc := &spec.Container{Name: "c", SecurityContext: tt.sc}
			cfg, proc, err := (&Manager{}).buildConfig(p, sc, img, rootfs, nil)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			caps := cfg.Capabilities.Bounding
			tt.check(t, proc.UID, proc.GID, proc.AdditionalGroups, caps, cfg.NoNewPrivileges, cfg.Readonlyfs)
		})
	}
}
