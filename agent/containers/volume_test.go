package containers

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	devices "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/agent/containers/image"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/internal/testdeps"
)

// encryptedSpec has a Filesystem volume "data" (read-only claim "ro" too) and a Block
// volume "raw".
func encryptedSpec() *spec.Spec {
	claim := func(mode string, ro bool) *spec.Claim {
		return &spec.Claim{Namespace: "db", ClaimName: "c", Mode: mode, SizeBytes: spec.MinVolumeBytes, ReadOnly: ro}
	}
	return &spec.Spec{Volumes: []spec.Volume{
		{Name: "data", Kind: spec.VolumeEncrypted, Claim: claim(spec.VolumeModeFilesystem, false)},
		{Name: "ro", Kind: spec.VolumeEncrypted, Claim: claim(spec.VolumeModeFilesystem, true)},
		{Name: "raw", Kind: spec.VolumeEncrypted, Claim: claim(spec.VolumeModeBlock, false)},
		{Name: "cache", Kind: spec.VolumeTmpfs},
	}}
}

// volumePod is a pod of encryptedSpec whose volumes are not attached, for buildConfig.
func volumePod(t *testing.T) *pod {
	t.Helper()
	self, err := os.FindProcess(os.Getpid()) // namespace paths only; nothing starts
	if err != nil {
		t.Fatal(err)
	}
	p := &pod{spec: encryptedSpec(), etc: t.TempDir(), hostname: "web", volumes: map[string]podVolume{}, pause: &exec.Cmd{Process: self}}
	for _, v := range p.spec.Volumes {
		p.volumes[v.Name] = newPodVolume(v, "")
	}
	return p
}

// blockNode makes a block device node (the loop device 7:5) in a test directory.
func blockNode(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testdeps.Missing(t, "needs root (mknod of a block device node)")
	}
	n := filepath.Join(t.TempDir(), "dm-5")
	if err := unix.Mknod(n, unix.S_IFBLK|0o600, int(unix.Mkdev(7, 5))); err != nil {
		t.Fatalf("mknod: %v", err)
	}
	return n
}

// testRootfs is a container root path for buildConfig whose directory (where subPaths are
// staged) is unmounted and removed when the test ends.
func testRootfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() {
		if err := unmountUnder(dir); err != nil {
			t.Error(err)
		}
	})
	return filepath.Join(dir, "rootfs")
}

// sameFile reports whether paths a and b name the same file.
func sameFile(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

func TestAttachVolume(t *testing.T) {
	node := blockNode(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name, vol string
		v         AttachedVolume
		wantErr   string
	}{
		{name: "filesystem", vol: "data", v: AttachedVolume{Mode: spec.VolumeModeFilesystem, Path: dir}},
		{name: "block", vol: "raw", v: AttachedVolume{Mode: spec.VolumeModeBlock, Path: node}},
		{name: "unknown volume", vol: "nope", v: AttachedVolume{Mode: spec.VolumeModeFilesystem, Path: dir}, wantErr: "not an encrypted volume"},
		{name: "not encrypted", vol: "cache", v: AttachedVolume{Mode: spec.VolumeModeFilesystem, Path: dir}, wantErr: "not an encrypted volume"},
		{name: "mode differs from the sealed claim", vol: "raw", v: AttachedVolume{Mode: spec.VolumeModeFilesystem, Path: dir}, wantErr: "mode"},
		{name: "block path not a block device", vol: "raw", v: AttachedVolume{Mode: spec.VolumeModeBlock, Path: dir}, wantErr: "not a block device"},
		{name: "filesystem path not a directory", vol: "data", v: AttachedVolume{Mode: spec.VolumeModeFilesystem, Path: node}, wantErr: "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &Manager{pod: volumePod(t)}
			err := m.AttachVolume(tc.vol, tc.v)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("AttachVolume: %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := m.AttachVolume(tc.vol, tc.v); err == nil || !strings.Contains(err.Error(), "already attached") {
				t.Fatalf("second AttachVolume: %v, want already attached", err)
			}
		})
	}
	if err := (&Manager{}).AttachVolume("data", AttachedVolume{Mode: spec.VolumeModeFilesystem, Path: dir}); !errors.Is(err, ErrNoPod) {
		t.Fatalf("AttachVolume without a pod: %v, want ErrNoPod", err)
	}
}

// Encrypted volumes in the runtime config: bind mounts from the attached mount point
// (subPath inside the volume, read-only as sealed or claimed), the Block device at the sealed
// path with a device-cgroup rule for exactly it, and a clear refusal for a volume that is not
// attached.
func TestEncryptedVolumeConfig(t *testing.T) {
	node := blockNode(t)
	img := &image.Image{Config: &v1.ConfigFile{Config: v1.Config{Entrypoint: []string{"/bin/app"}}}}
	attach := func(t *testing.T, p *pod) (data, ro string) {
		data, ro = t.TempDir(), t.TempDir()
		m := &Manager{pod: p}
		for _, a := range []struct {
			name string
			v    AttachedVolume
		}{
			{"data", AttachedVolume{Mode: spec.VolumeModeFilesystem, Path: data}},
			{"ro", AttachedVolume{Mode: spec.VolumeModeFilesystem, Path: ro, ReadOnly: true}},
			{"raw", AttachedVolume{Mode: spec.VolumeModeBlock, Path: node}},
		} {
			if err := m.AttachVolume(a.name, a.v); err != nil {
				t.Fatal(err)
			}
		}
		// A symlink a container left in the volume, pointing out of it; inside the volume
		// it names the volume's own etc.
		if err := os.Symlink("/etc", filepath.Join(data, "escape")); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(data, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		return data, ro
	}
	mountOf := func(cfg *configs.Config, dst string) *configs.Mount {
		for _, m := range cfg.Mounts {
			if m.Destination == dst {
				return m
			}
		}
		return nil
	}
	tests := []struct {
		name    string
		attach  bool
		sc      spec.Container
		wantErr string
		check   func(t *testing.T, cfg *configs.Config, data, ro string)
	}{
		{name: "mount before attach", sc: spec.Container{Name: "c", Mounts: []spec.Mount{{Volume: "data", Path: "/data"}}}, wantErr: `encrypted volume not attached: volume "data"`},
		{name: "device before attach", sc: spec.Container{Name: "c", Devices: []spec.Device{{Volume: "raw", Path: "/dev/xvda"}}}, wantErr: `encrypted volume not attached: volume "raw"`},
		{name: "filesystem mounts", attach: true, sc: spec.Container{Name: "c", Mounts: []spec.Mount{
			{Volume: "data", Path: "/data"}, {Volume: "data", Path: "/logs", SubPath: "a/logs", ReadOnly: true}, {Volume: "ro", Path: "/ro"}}},
			check: func(t *testing.T, cfg *configs.Config, data, ro string) {
				for _, w := range []struct {
					dst, src string
					ro       bool
				}{{"/data", data, false}, {"/logs", filepath.Join(data, "a/logs"), true}, {"/ro", ro, true}} {
					m := mountOf(cfg, w.dst)
					if m == nil || !sameFile(m.Source, w.src) || m.Device != "bind" {
						t.Errorf("mount at %s: %+v, want a bind of %s", w.dst, m, w.src)
						continue
					}
					if gotRO := m.Flags&unix.MS_RDONLY != 0; gotRO != w.ro {
						t.Errorf("mount at %s: read-only %v, want %v", w.dst, gotRO, w.ro)
					}
					if m.Flags&(unix.MS_NOSUID|unix.MS_NODEV) != unix.MS_NOSUID|unix.MS_NODEV {
						t.Errorf("mount at %s: flags %#x, want nosuid,nodev", w.dst, m.Flags)
					}
				}
				if fi, err := os.Stat(filepath.Join(data, "a/logs")); err != nil || !fi.IsDir() {
					t.Errorf("subPath a/logs not created in the volume: %v", err)
				}
			}},
		{name: "subPath symlink stays inside the volume", attach: true, sc: spec.Container{Name: "c", Mounts: []spec.Mount{{Volume: "data", Path: "/x", SubPath: "escape"}}},
			check: func(t *testing.T, cfg *configs.Config, data, _ string) {
				m := mountOf(cfg, "/x")
				if m == nil || !sameFile(m.Source, filepath.Join(data, "etc")) {
					t.Fatalf("mount at /x: %+v: the subPath symlink led out of the volume %s", m, data)
				}
			}},
		{name: "subPath with ..", attach: true, sc: spec.Container{Name: "c", Mounts: []spec.Mount{{Volume: "data", Path: "/x", SubPath: "../x"}}}, wantErr: "subPath"},
		{name: "block device", attach: true, sc: spec.Container{Name: "c", Devices: []spec.Device{{Volume: "raw", Path: "/dev/xvda"}}},
			check: func(t *testing.T, cfg *configs.Config, _, _ string) {
				i := slices.IndexFunc(cfg.Devices, func(d *devices.Device) bool { return d.Path == "/dev/xvda" })
				if i < 0 {
					t.Fatalf("no device at /dev/xvda in %+v", cfg.Devices)
				}
				if d := cfg.Devices[i]; d.Type != devices.BlockDevice || d.Major != 7 || d.Minor != 5 {
					t.Errorf("device %+v, want block 7:5", d)
				}
				allowed := slices.ContainsFunc(cfg.Cgroups.Resources.Devices, func(r *devices.Rule) bool {
					return r.Allow && r.Type == devices.BlockDevice && r.Major == 7 && r.Minor == 5 && strings.Contains(string(r.Permissions), "rw")
				})
				if !allowed {
					t.Errorf("device cgroup does not allow 7:5 rw: %+v", cfg.Cgroups.Resources.Devices)
				}
			}},
		{name: "device path not clean", attach: true, sc: spec.Container{Name: "c", Devices: []spec.Device{{Volume: "raw", Path: "/dev/../xvda"}}}, wantErr: "path"},
		{name: "filesystem volume as a device", attach: true, sc: spec.Container{Name: "c", Devices: []spec.Device{{Volume: "data", Path: "/dev/xvda"}}}, wantErr: "not a Block"},
		{name: "block volume as a mount", attach: true, sc: spec.Container{Name: "c", Mounts: []spec.Mount{{Volume: "raw", Path: "/raw"}}}, wantErr: "Block"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := volumePod(t)
			var data, ro string
			if tc.attach {
				data, ro = attach(t, p)
			}
			sc := tc.sc // seccomp is not under test here (and needs the seccomp build tag)
			sc.SecurityContext = &spec.SecurityContext{SeccompProfile: &spec.SeccompProfile{Type: spec.SeccompUnconfined}}
			cfg, _, err := (&Manager{}).buildConfig(p, &sc, img, testRootfs(t), nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("buildConfig: %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, cfg, data, ro)
		})
	}
}

// TestEncryptedVolumesInContainer runs a container over attached encrypted volumes (plain
// directories and a device node standing in for what agent/volume opens): it writes through
// the mount and a created subPath, cannot write a read-only claim, and sees the Block
// volume's device at the sealed path with its number.
func TestEncryptedVolumesInContainer(t *testing.T) {
	reg := newTestRegistry(t)
	node := blockNode(t)
	script := strings.Join([]string{
		`echo fs-data > /data/f && cat /data/f`,
		`echo sub-data > /sub/g && cat /sub/g`,
		`touch /ro/x 2>/dev/null || echo ro-read-only`,
		`cat /ro/seed`,
		`test -b /dev/xvda && echo block`,
		`stat -c %t:%T /dev/xvda`,
	}, "; ")
	sp := encryptedSpec()
	sp.Containers = []spec.Container{{Name: "vols", Image: reg.ref, Command: []string{"sh", "-c", script},
		Mounts:  []spec.Mount{{Volume: "data", Path: "/data"}, {Volume: "data", Path: "/sub", SubPath: "logs/app"}, {Volume: "ro", Path: "/ro"}},
		Devices: []spec.Device{{Volume: "raw", Path: "/dev/xvda"}}}}
	f := startSpec(t, sp, nil, Options{InsecureRegistries: []string{reg.Host}})
	data, ro := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(ro, "seed"), []byte("ro-data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct {
		name string
		v    AttachedVolume
	}{
		{"data", AttachedVolume{Mode: spec.VolumeModeFilesystem, Path: data}},
		{"ro", AttachedVolume{Mode: spec.VolumeModeFilesystem, Path: ro}},
		{"raw", AttachedVolume{Mode: spec.VolumeModeBlock, Path: node}},
	} {
		if err := f.m.AttachVolume(a.name, a.v); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, code := f.run(t, "vols")
	if want := "fs-data\nsub-data\nro-read-only\nro-data\nblock\n7:5\n"; code != 0 || out != want {
		t.Fatalf("exit %d, stdout %q, stderr %q; want stdout %q", code, out, errOut, want)
	}
	for p, want := range map[string]string{"f": "fs-data\n", "logs/app/g": "sub-data\n"} {
		if b, err := os.ReadFile(filepath.Join(data, p)); err != nil || string(b) != want {
			t.Errorf("volume file %s: %q, %v; want %q", p, b, err, want)
		}
	}
}

// A container may swap a directory of its volume for a symlink between the agent's check of
// a subPath and the bind mount (CVE-2017-1002101, CVE-2021-25741 in the kubelet): the mount
// source is what the check opened, held at an agent-private path, so the swap gains nothing.
func TestSubPathSwapAfterCheck(t *testing.T) {
	if os.Geteuid() != 0 {
		testdeps.Missing(t, "needs root (bind mounts)")
	}
	img := &image.Image{Config: &v1.ConfigFile{Config: v1.Config{Entrypoint: []string{"/bin/app"}}}}
	for _, vol := range []string{"data", "cache"} { // encrypted and emptyDir: both container-writable
		t.Run(vol, func(t *testing.T) {
			p := volumePod(t)
			root, outside := t.TempDir(), t.TempDir()
			if vol == "data" {
				if err := (&Manager{pod: p}).AttachVolume("data", AttachedVolume{Mode: spec.VolumeModeFilesystem, Path: root}); err != nil {
					t.Fatal(err)
				}
			} else {
				p.volumes["cache"] = podVolume{kind: spec.VolumeTmpfs, path: root}
			}
			if err := os.MkdirAll(filepath.Join(root, "logs"), 0o755); err != nil {
				t.Fatal(err)
			}
			rootfs := testRootfs(t)
			sc := &spec.Container{Name: "c", Mounts: []spec.Mount{{Volume: vol, Path: "/logs", SubPath: "logs"}},
				SecurityContext: &spec.SecurityContext{SeccompProfile: &spec.SeccompProfile{Type: spec.SeccompUnconfined}}}
			cfg, _, err := (&Manager{}).buildConfig(p, sc, img, rootfs, nil)
			if err != nil {
				t.Fatal(err)
			}
			var src string
			for _, m := range cfg.Mounts {
				if m.Destination == "/logs" {
					src = m.Source
				}
			}
			// The swap, after the check.
			if err := os.Rename(filepath.Join(root, "logs"), filepath.Join(root, "moved")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(root, "logs")); err != nil {
				t.Fatal(err)
			}
			got, err := os.Stat(src)
			if err != nil {
				t.Fatalf("mount source %q: %v", src, err)
			}
			if want, _ := os.Stat(filepath.Join(root, "moved")); !os.SameFile(got, want) {
				t.Fatalf("mount source %q now names %v, not the directory the check opened: the swap redirects the mount", src, got.Name())
			}
		})
	}
}
