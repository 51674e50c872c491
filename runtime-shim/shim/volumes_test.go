package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/runtime-shim/config"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
	"github.com/sealpod/sealpod/runtime-shim/qemu/qmptest"
)

const (
	testVolumes = `{"data": {"mode": "Filesystem", "sizeBytes": 67108864}, "raw": {"mode": "Block", "sizeBytes": 134217728}}`
	mib64       = 64 << 20
)

func TestParsePodVolumes(t *testing.T) {
	tests := []struct {
		ann       map[string]string
		wantNames []string
		wantErr   string
	}{
		{map[string]string{}, nil, ""},
		{map[string]string{spec.AnnotationVolumes: `{}`}, nil, ""},
		{map[string]string{spec.AnnotationVolumes: testVolumes}, []string{"data", "raw"}, ""},
		{map[string]string{spec.AnnotationVolumes: `{"b": {"mode": "Block", "sizeBytes": 67108864}, "a": {"mode": "Block", "sizeBytes": 67108864}}`}, []string{"a", "b"}, ""},
		{map[string]string{spec.AnnotationVolumes: `{"data": {"mode": "Filesystem", "sizeBytes": 1}}`}, nil, "sizeBytes 1 out of range"},
		{map[string]string{spec.AnnotationVolumes: `{"Data": {"mode": "Filesystem", "sizeBytes": 67108864}}`}, nil, "not a DNS-1123 label"},
		{map[string]string{spec.AnnotationVolumes: `{"data": {"mode": "Filesystem", "sizeBytes": 67108864, "path": "/etc"}}`}, nil, "unknown field"},
		{map[string]string{spec.AnnotationVolumes: `not json`}, nil, spec.AnnotationVolumes},
	}
	for _, tc := range tests {
		v, err := parsePodVolumes(tc.ann)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), spec.AnnotationVolumes) || !errdefs.IsInvalidArgument(err) {
				t.Errorf("%v: %v, want an InvalidArgument naming %s and containing %q", tc.ann, err, spec.AnnotationVolumes, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.ann, err)
			continue
		}
		if v.count() != len(tc.wantNames) {
			t.Errorf("%v: %d volumes, want %v", tc.ann, v.count(), tc.wantNames)
		}
		for i, n := range tc.wantNames {
			if v.slot(n) != i {
				t.Errorf("%v: volume %s in slot %d, want %d", tc.ann, n, v.slot(n), i)
			}
		}
		if v.slot("other") != -1 {
			t.Errorf("a volume not in the annotation has slot %d", v.slot("other"))
		}
	}
}

// TestSandboxRefusesBadVolumesAnnotation: a malformed sealpod.io/volumes fails the sandbox's
// creation (RunPodSandbox), naming the annotation, and records nothing.
func TestSandboxRefusesBadVolumesAnnotation(t *testing.T) {
	s, _, _ := newTestService(t)
	sb := writeBundle(t, map[string]string{AnnotationContainerType: containerTypeSandbox, AnnotationSandboxID: "sb1",
		annotationWorkload: "default.pod.web", spec.AnnotationVolumes: `{"data": {"mode": "Tape", "sizeBytes": 67108864}}`})
	_, err := s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "sb1", Bundle: sb})
	if err == nil || !errdefs.IsInvalidArgument(errdefs.FromGRPC(err)) || !strings.Contains(err.Error(), `mode "Tape"`) || !strings.Contains(err.Error(), spec.AnnotationVolumes) {
		t.Fatalf("sandbox with a bad %s: %v, want InvalidArgument naming it", spec.AnnotationVolumes, err)
	}
	if s.sandboxID != "" || len(s.tasks) != 0 {
		t.Fatalf("refused sandbox recorded: %q %v", s.sandboxID, s.tasks)
	}
}

func testPodVolumes(t *testing.T) *podVolumes {
	t.Helper()
	v, err := parsePodVolumes(map[string]string{spec.AnnotationVolumes: testVolumes})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// volumeSpec is a placeholder container's OCI spec with the CRI plumbing around volumes.
func volumeSpec(mounts []specs.Mount, devices []specs.LinuxDevice) *specs.Spec {
	return &specs.Spec{
		Mounts: append([]specs.Mount{{Destination: "/etc/hosts", Source: "/var/lib/containerd/hosts", Type: "bind"},
			{Destination: "/sealpod/volumesx", Source: "/var/x", Type: "bind"}}, mounts...),
		Linux: &specs.Linux{Devices: devices},
	}
}

func TestContainerVolumes(t *testing.T) {
	vols := testPodVolumes(t)
	fs := specs.Mount{Destination: "/sealpod/volumes/data", Source: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~local-volume/pv1", Type: "bind"}
	blk := specs.LinuxDevice{Path: "/sealpod/volumes/raw", Type: "b", Major: 7, Minor: 3}
	tests := []struct {
		name    string
		sp      *specs.Spec
		vols    *podVolumes
		want    []volumeUse
		wantErr string
	}{
		{"none", volumeSpec(nil, nil), vols, nil, ""},
		{"filesystem and block", volumeSpec([]specs.Mount{fs}, []specs.LinuxDevice{blk}), vols,
			[]volumeUse{{name: "data", mode: "Filesystem", source: fs.Source}, {name: "raw", mode: "Block", major: 7, minor: 3}}, ""},
		{"trailing slash", volumeSpec([]specs.Mount{{Destination: "/sealpod/volumes/data/", Source: "/pv"}}, nil), vols,
			[]volumeUse{{name: "data", mode: "Filesystem", source: "/pv"}}, ""},
		{"not in the annotation", volumeSpec([]specs.Mount{{Destination: "/sealpod/volumes/other", Source: "/pv"}}, nil), vols, nil, "volume other is not in the pod's annotation"},
		{"pod without volumes", volumeSpec([]specs.Mount{fs}, nil), nil, nil, "volume data is not in the pod's annotation"},
		{"below a volume", volumeSpec([]specs.Mount{{Destination: "/sealpod/volumes/data/sub", Source: "/pv"}}, nil), vols, nil, `"data/sub" is not a volume name`},
		{"dot-dot", volumeSpec([]specs.Mount{{Destination: "/sealpod/volumes/../volumes/data", Source: "/pv"}}, nil), vols,
			[]volumeUse{{name: "data", mode: "Filesystem", source: "/pv"}}, ""},
		{"block as mount", volumeSpec([]specs.Mount{{Destination: "/sealpod/volumes/raw", Source: "/pv"}}, nil), vols, nil, "volume raw is a Block volume"},
		{"filesystem as device", volumeSpec(nil, []specs.LinuxDevice{{Path: "/sealpod/volumes/data", Type: "b"}}), vols, nil, "volume data is a Filesystem volume"},
		{"char device", volumeSpec(nil, []specs.LinuxDevice{{Path: "/sealpod/volumes/raw", Type: "c", Major: 1, Minor: 3}}), vols, nil, `type "c"`},
		{"relative source", volumeSpec([]specs.Mount{{Destination: "/sealpod/volumes/data", Source: "pv"}}, nil), vols, nil, "not an absolute host path"},
		{"twice", volumeSpec([]specs.Mount{fs, {Destination: "/sealpod/volumes/data", Source: "/pv2"}}, nil), vols, nil, "attached twice"},
	}
	for _, tc := range tests {
		got, err := containerVolumes(tc.sp, tc.vols, "app")
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "container app") || !errdefs.IsInvalidArgument(err) {
				t.Errorf("%s: %v, want an InvalidArgument naming the container and containing %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("%s: %+v %v, want %+v", tc.name, got, err, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: %+v, want %+v", tc.name, got[i], tc.want[i])
			}
		}
	}
}

// leftovers lists what is in dir besides the image.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.Name() != VolumeImageFile {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestOpenVolumeImage: the image is created sparse with the claim's size on first use, opened
// as it is afterwards (never truncated or replaced), refused at another size or when it is
// not a regular file, and concurrent first uses create it once.
func TestOpenVolumeImage(t *testing.T) {
	t.Run("create then reuse", func(t *testing.T) {
		dir := t.TempDir()
		f, created, err := openVolumeImage(dir, mib64)
		if err != nil || !created {
			t.Fatalf("first use: created %v, %v", created, err)
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != mib64 || st.Blocks*512 > 1<<20 || st.Mode&0o777 != 0o600 {
			t.Errorf("new image: size %d, %d bytes allocated, mode %o; want %d, sparse, 0600", st.Size, st.Blocks*512, st.Mode&0o777, mib64)
		}
		if _, err := f.WriteAt([]byte("ciphertext"), 4096); err != nil {
			t.Fatal(err)
		}
		f.Close()
		f, created, err = openVolumeImage(dir, mib64)
		if err != nil || created {
			t.Fatalf("second use: created %v, %v", created, err)
		}
		got := make([]byte, 10)
		if _, err := f.ReadAt(got, 4096); err != nil || string(got) != "ciphertext" {
			t.Errorf("second use reads %q (%v): the image was replaced", got, err)
		}
		f.Close()
		if l := leftovers(t, dir); len(l) != 0 {
			t.Errorf("left in the volume: %v", l)
		}
	})
	t.Run("other size refused, not truncated", func(t *testing.T) {
		dir := t.TempDir()
		img := filepath.Join(dir, VolumeImageFile)
		if err := os.WriteFile(img, bytes.Repeat([]byte{1}, 8192), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := openVolumeImage(dir, mib64)
		if err == nil || !strings.Contains(err.Error(), img) || !strings.Contains(err.Error(), "8192 bytes") || !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("image of another size: %v, want FailedPrecondition naming %s and its size", err, img)
		}
		if st, err := os.Stat(img); err != nil || st.Size() != 8192 {
			t.Fatalf("the refused image changed: %v %v", st.Size(), err)
		}
	})
	for name, mk := range map[string]func(img string) error{
		"symlink":   func(img string) error { return os.Symlink("/etc/passwd", img) },
		"directory": func(img string) error { return os.Mkdir(img, 0o700) },
		"fifo":      func(img string) error { return syscall.Mkfifo(img, 0o600) },
	} {
		t.Run(name+" refused", func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, VolumeImageFile)
			if err := mk(img); err != nil {
				t.Fatal(err)
			}
			if f, _, err := openVolumeImage(dir, mib64); err == nil || !strings.Contains(err.Error(), img) {
				if f != nil {
					f.Close()
				}
				t.Fatalf("%s at the image's name: %v, want an error naming it", name, err)
			}
		})
	}
	t.Run("missing directory", func(t *testing.T) {
		if _, _, err := openVolumeImage(filepath.Join(t.TempDir(), "gone"), mib64); err == nil || !strings.Contains(err.Error(), "gone") {
			t.Fatalf("missing volume directory: %v", err)
		}
	})
	t.Run("concurrent first use", func(t *testing.T) {
		dir := t.TempDir()
		const n = 8
		var wg sync.WaitGroup
		created := make(chan bool, n)
		inodes := make(chan uint64, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f, c, err := openVolumeImage(dir, mib64)
				if err != nil {
					t.Error(err)
					return
				}
				defer f.Close()
				var st syscall.Stat_t
				_ = syscall.Fstat(int(f.Fd()), &st)
				if st.Size != mib64 {
					t.Errorf("opened an image of %d bytes", st.Size)
				}
				created <- c
				inodes <- st.Ino
			}()
		}
		wg.Wait()
		close(created)
		close(inodes)
		nc, ino := 0, map[uint64]bool{}
		for c := range created {
			if c {
				nc++
			}
		}
		for i := range inodes {
			ino[i] = true
		}
		if nc != 1 || len(ino) != 1 {
			t.Fatalf("%d creators, %d distinct images; want 1 and 1", nc, len(ino))
		}
		if l := leftovers(t, dir); len(l) != 0 {
			t.Errorf("left in the volume: %v", l)
		}
	})
}

func TestImageSize(t *testing.T) {
	for in, want := range map[int64]int64{mib64: mib64, 100_000_000: 100_003_840, 4097: 8192} {
		if got := imageSize(in); got != want {
			t.Errorf("imageSize(%d) = %d, want %d", in, got, want)
		}
	}
}

// fakeSysfs writes sys/dev/block/<num>/uevent with DEVNAME=name.
func fakeSysfs(t *testing.T, sys, num, name string) {
	t.Helper()
	d := filepath.Join(sys, "dev", "block", num)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "uevent"), []byte("MAJOR=7\nMINOR=3\nDEVNAME="+name+"\nDEVTYPE=disk\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBlockDeviceLookup: a Block claim's host device is found by number through sysfs, and
// only a block device node of that number is accepted.
func TestBlockDeviceLookup(t *testing.T) {
	requireRoot(t) // mknod
	root := t.TempDir()
	b := blockDevices{sys: filepath.Join(root, "sys"), dev: filepath.Join(root, "dev")}
	if err := os.MkdirAll(filepath.Join(b.dev, "mapper"), 0o755); err != nil {
		t.Fatal(err)
	}
	mknod := func(name string, mode uint32, major, minor uint32) {
		if err := unix.Mknod(filepath.Join(b.dev, name), mode|0o600, int(unix.Mkdev(major, minor))); err != nil {
			t.Fatal(err)
		}
	}
	mknod("loop3", unix.S_IFBLK, 7, 3)
	mknod("mapper/vg-pv", unix.S_IFBLK, 253, 1)
	mknod("char", unix.S_IFCHR, 7, 5)
	mknod("other", unix.S_IFBLK, 7, 9)
	if err := os.Symlink("loop3", filepath.Join(b.dev, "link")); err != nil {
		t.Fatal(err)
	}
	fakeSysfs(t, b.sys, "7:3", "loop3")
	fakeSysfs(t, b.sys, "253:1", "mapper/vg-pv")
	fakeSysfs(t, b.sys, "7:4", "../../etc/passwd")
	fakeSysfs(t, b.sys, "7:5", "char")
	fakeSysfs(t, b.sys, "7:6", "link")
	fakeSysfs(t, b.sys, "7:7", "other")
	fakeSysfs(t, b.sys, "7:8", "")
	tests := []struct {
		major, minor int64
		want, err    string
	}{
		{7, 3, "loop3", ""},
		{253, 1, "mapper/vg-pv", ""},
		{7, 4, "", "is not a name under"},
		{7, 5, "", "is not a block device"},
		{7, 6, "", "is not a block device"},
		{7, 7, "", "is device 7:9"},
		{7, 8, "", "DEVNAME"},
		{8, 0, "", "no such file"},
		{-1, 0, "", "out of range"},
		{7, 1 << 21, "", "out of range"},
	}
	for _, tc := range tests {
		p, err := b.path(tc.major, tc.minor)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%d:%d: %q %v, want an error containing %q", tc.major, tc.minor, p, err, tc.err)
			}
			continue
		}
		if err != nil || p != filepath.Join(b.dev, tc.want) {
			t.Errorf("%d:%d: %q %v, want %s", tc.major, tc.minor, p, err, tc.want)
		}
	}
}

// fakeAgent records AttachVolume calls; the first failAttach calls fail.
type fakeAgent struct {
	api.AgentService
	mu         sync.Mutex
	attached   []string
	failAttach int
}

func (a *fakeAgent) AttachVolume(ctx context.Context, r *api.AttachVolumeRequest) (*api.AttachVolumeResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.attached = append(a.attached, r.Name+"="+r.Serial)
	if a.failAttach > 0 {
		a.failAttach--
		return nil, errors.New("guest: volume busy")
	}
	return &api.AttachVolumeResponse{OpenUs: 1500}, nil
}

// loopDevice returns the number of an existing loop device node (opening an unbound loop
// device works), for the Block volume of the attach test.
func loopDevice(t *testing.T) (major, minor int64, ok bool) {
	t.Helper()
	var st unix.Stat_t
	if os.Geteuid() != 0 || unix.Stat("/dev/loop0", &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, 0, false
	}
	return int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev)), true
}

// TestAttachVolumes: a placeholder container's volumes are hot-plugged over QMP (golden
// testdata/attach-*.qmp.json) and attached in the guest (serial of their slot) once per pod;
// a failed guest attach is retried without plugging again; a refused hot-plug leaves nothing
// plugged and is tried anew.
func TestAttachVolumes(t *testing.T) {
	ctx := context.Background()
	pv := t.TempDir()
	fs := specs.Mount{Destination: "/sealpod/volumes/data", Source: pv, Type: "bind"}
	var devices []specs.LinuxDevice
	sys := t.TempDir()
	if major, minor, ok := loopDevice(t); ok {
		devices = []specs.LinuxDevice{{Path: "/sealpod/volumes/raw", Type: "b", Major: major, Minor: minor}}
		fakeSysfs(t, sys, strconv.FormatInt(major, 10)+":"+strconv.FormatInt(minor, 10), "loop0")
	} else {
		t.Log("no /dev/loop0 or not root: the Filesystem volume only")
	}
	newAttacher := func(fail string, agent *fakeAgent, confidential bool) (*volumeAttacher, *qmptest.Server) {
		srv := qmptest.Start(t, qmptest.Hotplug(fail))
		a := newVolumeAttacher(testPodVolumes(t), srv.Path, confidential, agent, slog.New(slog.NewTextHandler(io.Discard, nil)))
		a.devices = blockDevices{sys: sys, dev: "/dev"}
		a.direct = func(*os.File) bool { return true } // as on a host disk, whatever TempDir is
		return a, srv
	}

	agent := &fakeAgent{failAttach: 1}
	a, srv := newAttacher("", agent, false)
	app := volumeSpec([]specs.Mount{fs}, devices)
	if err := a.attach(ctx, app, "app"); err == nil || !strings.Contains(err.Error(), "attach volume data in the guest: guest: volume busy") {
		t.Fatalf("first attach (the guest fails): %v", err)
	}
	if err := a.attach(ctx, app, "app"); err != nil {
		t.Fatal(err)
	}
	sidecar := volumeSpec([]specs.Mount{fs}, nil)
	if err := a.attach(ctx, sidecar, "sidecar"); err != nil {
		t.Fatal(err)
	}
	wantAgent := []string{"data=sealpod-0", "data=sealpod-0"}
	if devices != nil {
		wantAgent = append(wantAgent, "raw=sealpod-1")
	}
	if strings.Join(agent.attached, " ") != strings.Join(wantAgent, " ") {
		t.Errorf("agent AttachVolume calls %v, want %v", agent.attached, wantAgent)
	}
	if devices != nil {
		srv.CheckGolden(t, filepath.Join("testdata", "attach-filesystem-block.qmp.json"), *updateGolden)
	} else {
		// The golden file's Filesystem part: up to its first device_add.
		var all []qmptest.Command
		b, err := os.ReadFile(filepath.Join("testdata", "attach-filesystem-block.qmp.json"))
		if err != nil || json.Unmarshal(b, &all) != nil {
			t.Fatalf("golden file: %v", err)
		}
		for i, c := range all {
			if c.Execute == "device_add" {
				all = all[:i+1]
				break
			}
		}
		want, _ := json.MarshalIndent(all, "", "  ")
		if got := srv.JSON(); string(got) != string(want)+"\n" {
			t.Errorf("QMP commands:\n%s\nwant:\n%s", got, want)
		}
	}
	if st, err := os.Stat(filepath.Join(pv, VolumeImageFile)); err != nil || st.Size() != mib64 {
		t.Errorf("image in the PV: %v %v", st, err)
	}

	// A refused hot-plug: nothing plugged, the next Create tries again.
	agent = &fakeAgent{}
	a, srv = newAttacher("device_add", agent, true)
	for i := 0; i < 2; i++ {
		if err := a.attach(ctx, volumeSpec([]specs.Mount{fs}, nil), "app"); err == nil || !strings.Contains(err.Error(), "volume data") || !strings.Contains(err.Error(), "device_add refused") {
			t.Fatalf("attach with device_add refused: %v", err)
		}
	}
	if len(agent.attached) != 0 {
		t.Errorf("the guest was asked to attach an unplugged volume: %v", agent.attached)
	}
	adds := 0
	for _, c := range srv.Commands() {
		if c.Execute == "device_add" {
			adds++
			if c.Arguments["iommu_platform"] != true {
				t.Errorf("confidential guest: device_add %v without iommu_platform", c.Arguments)
			}
		}
	}
	if adds != 2 {
		t.Errorf("%d device_add, want 2 (one per try)", adds)
	}

	// A pod without volumes: a container without volume mounts needs no attacher; one with a
	// mount under /sealpod/volumes/ is refused.
	var none *volumeAttacher
	if err := none.attach(ctx, volumeSpec(nil, nil), "app"); err != nil {
		t.Errorf("no volumes: %v", err)
	}
	if err := none.attach(ctx, volumeSpec([]specs.Mount{fs}, nil), "app"); err == nil {
		t.Error("a volume mount in a pod without sealpod.io/volumes was accepted")
	}
}

var updateGolden = flag.Bool("update", false, "rewrite testdata golden files")

// TestVolumeHostValues: the pod's name and namespace are offered at Unseal, and a pod with
// volumes and without them is refused before Unseal, naming what is missing.
func TestVolumeHostValues(t *testing.T) {
	s := &podBoot{cfg: &config.Config{Network: config.NetworkUser}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		annotations: map[string]string{AnnotationSandboxName: "db-0", AnnotationSandboxNS: "shop", AnnotationSandboxUID: "u-1"}}
	hv := s.hostValues(nil)
	if hv[hostValuePodName] != "db-0" || hv[hostValuePodNamespace] != "shop" {
		t.Fatalf("host values %v lack the pod's name and namespace", hv)
	}
	if err := checkVolumeHostValues("sb1", hv); err != nil {
		t.Fatal(err)
	}
	s.annotations = map[string]string{AnnotationSandboxName: "Not_A_Name", AnnotationSandboxNS: "shop"}
	err := checkVolumeHostValues("sb1", s.hostValues(nil))
	if err == nil || !strings.Contains(err.Error(), hostValuePodName) || !strings.Contains(err.Error(), spec.AnnotationVolumes) || !errdefs.IsInvalidArgument(err) {
		t.Fatalf("volumes without a valid pod name: %v", err)
	}
}

// TestVMArgsVolumes: a pod with volumes gets a QMP socket in its state directory and one root
// port per volume; one without gets neither (startQEMU passes the socket as a descriptor:
// TestHardwareNodeLaunch's *-node-volumes).
func TestVMArgsVolumes(t *testing.T) {
	for _, vols := range []*podVolumes{nil, testPodVolumes(t)} {
		v := &vmSpec{QEMU: "qemu-system-x86_64", Accel: "tcg", TEE: tee.Sim, Name: "sealpod-sb1", Dir: "/run/sealpod/sb1",
			Guest: testGuest("/g", false), Network: config.NetworkUser, Volumes: vols}
		cfg, err := v.qemuConfig()
		if err != nil {
			t.Fatal(err)
		}
		line := strings.Join(qemuArgv(t, v).Args, " ")
		ports := strings.Count(line, "pcie-root-port,")
		if ports != vols.count() || (cfg.QMPSocket != "") != (vols != nil) {
			t.Errorf("%d volumes: %d root ports, QMP socket %q:\n%s", vols.count(), ports, cfg.QMPSocket, line)
		}
		if vols != nil && (cfg.QMPSocket != "/run/sealpod/sb1/qmp.sock" || !strings.Contains(line, qemu.RootPortID(1))) {
			t.Errorf("QMP socket %q, args:\n%s", cfg.QMPSocket, line)
		}
	}
}

// FuzzContainerVolumes: whatever mounts and devices the OCI spec carries, an accepted volume
// is one of the annotation's, of its mode, named once.
func FuzzContainerVolumes(f *testing.F) {
	f.Add("/sealpod/volumes/data", "/pv", "/sealpod/volumes/raw", "b")
	f.Add("/sealpod/volumes/../volumes/data/", "pv", "/sealpod/volumes//raw", "c")
	f.Add("/sealpod/volumes/raw", "/pv", "/sealpod/volumes/data", "b")
	f.Fuzz(func(t *testing.T, dest, src, dev, typ string) {
		vols, err := parsePodVolumes(map[string]string{spec.AnnotationVolumes: testVolumes})
		if err != nil {
			t.Fatal(err)
		}
		sp := volumeSpec([]specs.Mount{{Destination: dest, Source: src}}, []specs.LinuxDevice{{Path: dev, Type: typ, Major: 7}})
		uses, err := containerVolumes(sp, vols, "app")
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, u := range uses {
			if vols.slot(u.name) < 0 || vols.vols[u.name].Mode != u.mode || seen[u.name] {
				t.Fatalf("accepted %+v", u)
			}
			if u.mode == spec.VolumeModeFilesystem && !filepath.IsAbs(u.source) {
				t.Fatalf("relative source accepted: %+v", u)
			}
			seen[u.name] = true
		}
	})
}
