package shim

// Tests of issue 12 (tenant → node): the pod VM fits the pod, QEMU is confined and runs in the
// pod's cgroup, the console log is bounded, and the secure image cannot hand the shim special
// files or oversized files.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/internal/testdeps"
	"github.com/sealpod/sealpod/runtime-shim/config"
	"github.com/sealpod/sealpod/simtee/amdsp"
)

const testWorkload = "default.pod.web"

// sandboxBundle writes the sandbox's config.json with sizing annotations and a cgroups path.
func sandboxBundle(t *testing.T, id, cgroupsPath string, extra map[string]string) string {
	t.Helper()
	ann := map[string]string{AnnotationContainerType: containerTypeSandbox, AnnotationSandboxID: id,
		annotationWorkload: testWorkload, AnnotationSandboxName: "web"}
	for k, v := range extra {
		ann[k] = v
	}
	dir := t.TempDir()
	writeSpec(t, dir, specs.Spec{Version: "1.0.2", Hostname: "web-0", Annotations: ann, Linux: &specs.Linux{CgroupsPath: cgroupsPath}})
	return dir
}

// setGuestSize rewrites the vcpus and memoryMiB of the secure image's guest.json.
func setGuestSize(t *testing.T, bundleDir string, vcpus, memMiB int) {
	t.Helper()
	p := filepath.Join(bundleDir, "rootfs", "sealpod", "guest", bundle.ConfigFile)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	c, err := bundle.ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	c.VCPUs, c.MemoryMiB = vcpus, memMiB
	if b, err = c.Marshal(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// createPod creates the sandbox and the first placeholder container (which boots the VM).
func createPod(t *testing.T, s *Service, sandbox, secure string) error {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "sb1", Bundle: sandbox}); err != nil {
		t.Fatalf("create sandbox: %v", err)
	}
	writeSpec(t, secure, specs.Spec{Version: "1.0.2", Annotations: map[string]string{AnnotationContainerType: "container",
		AnnotationSandboxID: "sb1", AnnotationContainerName: "app"}})
	_, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: secure})
	return err
}

const (
	mib = 1 << 20
	gib = 1 << 30
)

// TestCreateRefusesGuestLargerThanPod: guest.json sizes the VM (it is measured), so a guest
// that asks for more than the pod's limits (or, without limits, the node's maximum) is refused
// before QEMU starts, with an error naming guest.json and the limit.
func TestCreateRefusesGuestLargerThanPod(t *testing.T) {
	cases := []struct {
		name         string
		vcpus, mem   int
		ann          map[string]string
		maxMem, maxV int // node config maxima (0 = default)
		want         []string
	}{
		{"memory over the pod limit", 1, 512, map[string]string{AnnotationSandboxMemory: strconv.Itoa(256 * mib)}, 0, 0,
			[]string{"guest.json", "memoryMiB 512", "256 MiB"}},
		{"vcpus over the cpu limit", 3, 512, map[string]string{AnnotationSandboxCPUQuota: "150000", AnnotationSandboxCPUPeriod: "100000",
			AnnotationSandboxMemory: strconv.Itoa(gib)}, 0, 0, []string{"guest.json", "vcpus 3", "1.5 CPUs"}},
		{"no limits: 1 TiB over the node maximum", 1, 1 << 20, nil, 0, 0, []string{"guest.json", "memoryMiB 1048576", "maxGuestMemoryMiB"}},
		{"no limits: 512 vCPUs over the node maximum", 512, 512, nil, 0, 0, []string{"guest.json", "vcpus 512", "maxGuestVCPUs"}},
		{"zero annotation means no limit: node maximum", 1, 4096, map[string]string{AnnotationSandboxMemory: "0"}, 2048, 0,
			[]string{"guest.json", "memoryMiB 4096", "maxGuestMemoryMiB 2048"}},
		{"garbage annotation", 1, 512, map[string]string{AnnotationSandboxMemory: "lots"}, 0, 0,
			[]string{AnnotationSandboxMemory, "lots"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _, _ := newTestService(t)
			s.cfg.Network = config.NetworkUser
			setNodeMaxima(s.cfg, tc.maxMem, tc.maxV)
			secure := secureRootfs(t, testWorkload, sealedEnvelope(t, "sim"))
			setGuestSize(t, secure, tc.vcpus, tc.mem)
			err := createPod(t, s, sandboxBundle(t, "sb1", "/kubepods/pod1/sb1", tc.ann), secure)
			if err == nil {
				t.Fatal("an oversized guest was accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if !errdefs.IsInvalidArgument(errdefs.FromGRPC(err)) {
				t.Errorf("error %v is not InvalidArgument", err)
			}
			if s.vm != nil {
				t.Error("a VM was started")
			}
		})
	}
}

// mkfifo creates a FIFO at p, replacing what is there, and opens it for writing once the test
// ends (so a reader blocked in open returns).
func mkfifo(t *testing.T, p string) {
	t.Helper()
	os.Remove(p)
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
}

// withTimeout runs f and fails the test if it does not return within d.
func withTimeout(t *testing.T, d time.Duration, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s blocked for %v", what, d)
		return nil
	}
}

// TestLoadSecureImageRefusesSpecialFiles: a FIFO (or device, or symlink) in the secure image
// must be refused at once, not block Create (and so the pod's boot).
func TestLoadSecureImageRefusesSpecialFiles(t *testing.T) {
	guest := func(name string) string { return filepath.Join("rootfs", "sealpod", "guest", name) }
	cases := []struct {
		name, path string
		make       func(t *testing.T, p string)
		want       string
	}{
		{"fifo kernel", guest(bundle.KernelFile), mkfifo, "not a regular file"},
		{"fifo guest.json", guest(bundle.ConfigFile), mkfifo, "not a regular file"},
		{"fifo firmware", guest(bundle.FirmwareFile), mkfifo, "not a regular file"},
		{"fifo envelope", filepath.Join("rootfs", "sealpod", "sealed", testWorkload+".json"), mkfifo, "not a regular file"},
		{"symlink inside the image", guest(bundle.InitrdFile), func(t *testing.T, p string) {
			os.Remove(p)
			if err := os.Symlink(bundle.KernelFile, p); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link"},
		{"device", guest(bundle.KernelFile), func(t *testing.T, p string) {
			os.Remove(p)
			if err := syscall.Mknod(p, syscall.S_IFCHR|0o644, int(1<<8|3)); err != nil { // /dev/null's 1:3
				t.Skipf("mknod: %v", err)
			}
		}, "not a regular file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := secureRootfs(t, testWorkload, sealedEnvelope(t, "sim"))
			tc.make(t, filepath.Join(b, tc.path))
			err := withTimeout(t, 5*time.Second, "loadSecureImage", func() error {
				_, err := loadSecureImage(&taskAPI.CreateTaskRequest{Bundle: b}, testWorkload, filepath.Join(t.TempDir(), "g"))
				return err
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), filepath.Base(tc.path)) {
				t.Fatalf("loadSecureImage: %v, want an error naming %s and %q", err, filepath.Base(tc.path), tc.want)
			}
		})
	}
}

// TestLoadSecureImageBoundsSizes: every file read from the image has its own limit (the
// shim copies it; it must not take up to 1 GiB of the node per file).
func TestLoadSecureImageBoundsSizes(t *testing.T) {
	cases := []struct {
		name string
		size int64
	}{
		{bundle.KernelFile, 129 * mib},
		{bundle.FirmwareFile, 33 * mib},
		{bundle.ConfigFile, 65 << 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := secureRootfs(t, testWorkload, sealedEnvelope(t, "sim"))
			p := filepath.Join(b, "rootfs", "sealpod", "guest", tc.name)
			if err := os.Truncate(p, tc.size); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			} else if os.IsNotExist(err) {
				if err := os.WriteFile(p, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(p, tc.size); err != nil {
					t.Fatal(err)
				}
			}
			_, err := loadSecureImage(&taskAPI.CreateTaskRequest{Bundle: b}, testWorkload, filepath.Join(t.TempDir(), "g"))
			if err == nil || !strings.Contains(err.Error(), tc.name) || !strings.Contains(err.Error(), "larger than") {
				t.Fatalf("a %d-byte %s: %v, want a size refusal naming it", tc.size, tc.name, err)
			}
		})
	}
}

// fakeQEMU writes a stand-in QEMU (a shell script, readable and executable by anyone) that
// records its credentials, cgroups, arguments and pid under $SEALPOD_TEST_QEMU_OUT, floods its
// stdout (the guest console) with $SEALPOD_TEST_QEMU_FLOOD bytes if set, then sleeps.
func fakeQEMU(t *testing.T) (binary, out string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sealpod-fakeqemu")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	out = filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, out} {
		if err := os.Chmod(p, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	binary = filepath.Join(dir, "qemu-system-x86_64")
	script := `#!/bin/sh
o="$SEALPOD_TEST_QEMU_OUT"
if [ -n "$o" ]; then
  grep -E '^(Uid|Gid|Groups):' /proc/self/status > "$o/status.tmp"
  cat /proc/self/cgroup > "$o/cgroup"
  printf '%s\n' "$@" > "$o/args"
  echo $$ > "$o/pid"
  mv "$o/status.tmp" "$o/status"
fi
if [ -n "$SEALPOD_TEST_QEMU_FLOOD" ]; then
  yes "guest console line of a tenant kernel that never stops writing" | head -c "$SEALPOD_TEST_QEMU_FLOOD"
  exit 0
fi
exec sleep 60
`
	if err := os.WriteFile(binary, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SEALPOD_TEST_QEMU_OUT", out)
	return binary, out
}

func simKey(t *testing.T) string {
	t.Helper()
	c, err := amdsp.NewChain(amdsp.Options{RSABits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "vcek.pem")
	if err := c.WriteFiles(filepath.Join(dir, "roots.pem"), key); err != nil {
		t.Fatal(err)
	}
	return key
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testdeps.Missing(t, "needs root (drops QEMU's privileges, creates cgroups)")
	}
}

// inCgroup reports whether a /proc/<pid>/cgroup listing puts the process in cgroup path (the
// unified hierarchy's line, or the memory controller's under cgroup v1).
func inCgroup(listing, path string) bool {
	for _, l := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) == 3 && f[2] == path && (f[1] == "memory" || (f[0] == "0" && f[1] == "" && cgroupV2())) {
			return true
		}
	}
	return false
}

func cgroupV2() bool {
	var st syscall.Statfs_t
	return syscall.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == 0x63677270
}

// TestBootConfinesQEMU starts the pod VM with a stand-in QEMU and checks how it runs: not as
// root, with no supplementary groups, with QEMU's seccomp sandbox, in the pod's cgroup.
func TestBootConfinesQEMU(t *testing.T) {
	requireRoot(t)
	bin, out := fakeQEMU(t)
	s, _, _ := newTestService(t)
	s.cfg.QEMU, s.cfg.Network, s.cfg.SimKey = bin, config.NetworkUser, simKey(t)
	s.cfg.BootTimeout = config.Duration(2 * time.Second)
	s.cfg.StateDir = shortStateDir(t)
	parent := fmt.Sprintf("/sealpod-test-%d", os.Getpid())
	cgPath := parent + "/sb1"
	t.Cleanup(func() { removeTestCgroup(parent) })
	secure := secureRootfs(t, testWorkload, sealedEnvelope(t, "sim"))
	err := createPod(t, s, sandboxBundle(t, "sb1", cgPath, map[string]string{AnnotationSandboxMemory: strconv.Itoa(gib)}), secure)
	if err == nil {
		t.Fatal("boot with a stand-in QEMU succeeded")
	}
	status, rerr := os.ReadFile(filepath.Join(out, "status"))
	if rerr != nil {
		t.Fatalf("the stand-in QEMU did not run (%v); Create: %v", rerr, err)
	}
	fields := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(status)), "\n") {
		k, v, _ := strings.Cut(l, ":")
		fields[k] = strings.Fields(v)
	}
	for _, k := range []string{"Uid", "Gid"} {
		for _, id := range fields[k] {
			if id == "0" {
				t.Errorf("QEMU runs with %s %v: root", k, fields[k])
			}
		}
	}
	if len(fields["Groups"]) != 0 {
		t.Errorf("QEMU keeps supplementary groups %v", fields["Groups"])
	}
	args, _ := os.ReadFile(filepath.Join(out, "args"))
	if !strings.Contains(string(args), "-sandbox\non,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny\n") {
		t.Errorf("QEMU runs without its seccomp sandbox:\n%s", args)
	}
	cg, _ := os.ReadFile(filepath.Join(out, "cgroup"))
	if !inCgroup(string(cg), cgPath) {
		t.Errorf("QEMU is not in the pod's cgroup %s:\n%s", cgPath, cg)
	}
}

// shortStateDir is a state directory short enough for unix socket paths.
func shortStateDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "spt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// removeTestCgroup removes a test's cgroup tree (deepest first) in every hierarchy.
func removeTestCgroup(rel string) {
	roots := []string{"/sys/fs/cgroup"}
	if ents, err := os.ReadDir("/sys/fs/cgroup"); err == nil && !cgroupV2() {
		roots = nil
		for _, e := range ents {
			roots = append(roots, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	for _, r := range roots {
		var dirs []string
		filepath.WalkDir(filepath.Join(r, rel), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			for try := 0; try < 50 && syscall.Rmdir(dirs[i]) == syscall.EBUSY; try++ {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
}

// TestConsoleLogBounded: a guest that writes to its console without end must not fill the
// node's /run: the shim keeps at most 1 MiB and counts the rest.
func TestConsoleLogBounded(t *testing.T) {
	requireRoot(t)
	bin, _ := fakeQEMU(t)
	t.Setenv("SEALPOD_TEST_QEMU_FLOOD", strconv.Itoa(8*mib))
	g, err := bundle.Load(secureGuest(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := shortStateDir(t)
	spec := testVMSpec(bin, dir, g)
	vm, err := startQEMU(spec, s0(t))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-vm.Exited():
	case <-time.After(60 * time.Second):
		t.Fatal("stand-in QEMU did not finish")
	}
	var total int64
	matches, _ := filepath.Glob(spec.consoleLog() + "*")
	for _, m := range matches {
		st, err := os.Stat(m)
		if err != nil {
			t.Fatal(err)
		}
		total += st.Size()
	}
	if total == 0 || total > mib+4096 {
		t.Fatalf("console logs %v hold %d bytes after an 8 MiB flood, want at most 1 MiB", matches, total)
	}
	b, _ := os.ReadFile(spec.consoleLog())
	if !strings.Contains(string(b), "dropped") {
		t.Errorf("console.log does not say that output was dropped:\n%.300s", b)
	}
}

// secureGuest is a stand-in guest bundle directory.
func secureGuest(t *testing.T) string {
	return filepath.Join(secureRootfs(t, testWorkload, sealedEnvelope(t, "sim")), "rootfs", "sealpod", "guest")
}

// setNodeMaxima sets the node config's guest caps (0 keeps the default).
func setNodeMaxima(c *config.Config, mem, vcpus int) {
	if mem != 0 {
		c.MaxGuestMemoryMiB = mem
	}
	if vcpus != 0 {
		c.MaxGuestVCPUs = vcpus
	}
}

// testVMSpec is a pod VM spec on the stand-in QEMU binary, as the default unprivileged user.
func testVMSpec(bin, dir string, g *bundle.Bundle) *vmSpec {
	return &vmSpec{QEMU: bin, Accel: "tcg", TEE: tee.Sim, Name: "sealpod-t", Dir: dir, Guest: g, Network: config.NetworkUser,
		UID: config.DefaultQEMUID, GID: config.DefaultQEMUID}
}

func s0(t *testing.T) *slog.Logger { return slog.New(slog.NewTextHandler(t.Output(), nil)) }

// FuzzCheckGuestFits: any annotation values and guest size: no panic; an accepted guest is
// within the node caps and, where the annotations set limits, within them.
func FuzzCheckGuestFits(f *testing.F) {
	f.Add("1073741824", "100000", "100000", 1, 512)
	f.Add("0", "-1", "100000", 8, 8192)
	f.Add("x", "", "0", 0, 0)
	f.Fuzz(func(t *testing.T, mem, quota, period string, vcpus, memMiB int) {
		cfg := &config.Config{TEE: "sim", SimKey: "/k"}
		cfg.Defaults()
		ann := map[string]string{AnnotationSandboxMemory: mem, AnnotationSandboxCPUQuota: quota, AnnotationSandboxCPUPeriod: period}
		g := bundle.Config{VCPUs: vcpus, MemoryMiB: memMiB}
		if err := checkGuestFits(g, ann, cfg); err != nil {
			return
		}
		if vcpus > cfg.MaxGuestVCPUs || memMiB > cfg.MaxGuestMemoryMiB {
			t.Fatalf("accepted %d vCPUs / %d MiB over the node caps", vcpus, memMiB)
		}
		if m, err := strconv.ParseInt(mem, 10, 64); err == nil && m > 0 && int64(memMiB) > bundle.MaxMemoryMiBFor(m) {
			t.Fatalf("accepted %d MiB over a %d-byte limit (+ guest overhead)", memMiB, m)
		}
	})
}
