package shim

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/testdeps"
)

// TestCgroupRel: both forms containerd's CRI plugin writes for the sandbox (cgroupfs and
// systemd driver), and refusals of what would escape or is not a path.
func TestCgroupRel(t *testing.T) {
	cases := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "/kubepods/burstable/pod0c5a/abc123", want: "/kubepods/burstable/pod0c5a/abc123"},
		{in: "/kubepods/podx/sb", want: "/kubepods/podx/sb"},
		{in: "kubepods-burstable-pod0c5a.slice:cri-containerd:abc123",
			want: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0c5a.slice/cri-containerd-abc123.scope"},
		{in: "kubepods-pod1.slice:cri-containerd:x", want: "/kubepods.slice/kubepods-pod1.slice/cri-containerd-x.scope"},
		{in: "-.slice:p:n", want: "/p-n.scope"},
		{in: "", wantErr: true},
		{in: "/", wantErr: true},
		{in: "/kubepods/../etc", wantErr: true},
		{in: "/kubepods//x", wantErr: true},
		{in: "relative/path", wantErr: true},
		{in: "kubepods.slice:cri-containerd", wantErr: true},
		{in: "kubepods.slice:cri-containerd:../../x", wantErr: true},
		{in: "kubepods--x.slice:p:n", wantErr: true},
		{in: "notaslice:p:n", wantErr: true},
		{in: "/a\nb", wantErr: true},
	}
	for _, tc := range cases {
		got, err := cgroupRel(tc.in)
		if tc.wantErr {
			if err == nil || !strings.Contains(err.Error(), "cgroupsPath") {
				t.Errorf("cgroupRel(%q) = %q, %v; want an error naming cgroupsPath", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("cgroupRel(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// FuzzCgroupRel: whatever is accepted is a clean absolute path that stays below the root.
func FuzzCgroupRel(f *testing.F) {
	for _, s := range []string{"/kubepods/p/x", "kubepods-besteffort-pod1.slice:cri-containerd:id", "-.slice:a:b", "a:b:c", "/../x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := cgroupRel(in)
		if err != nil {
			return
		}
		if !filepath.IsAbs(got) || filepath.Clean(got) != got || got == "/" || strings.ContainsAny(got, "\x00\n") {
			t.Fatalf("cgroupRel(%q) = %q: not a clean absolute path below the root", in, got)
		}
		for _, e := range strings.Split(got, "/") {
			if e == ".." {
				t.Fatalf("cgroupRel(%q) = %q escapes the root", in, got)
			}
		}
	})
}

// TestPodCgroupV2 starts the stand-in QEMU in a cgroup v2 directory (clone3 into the cgroup):
// the unified hierarchy at /sys/fs/cgroup, or the hybrid one at /sys/fs/cgroup/unified.
func TestPodCgroupV2(t *testing.T) {
	requireRoot(t)
	root := ""
	for _, r := range []string{cgroupRoot, cgroupRoot + "/unified"} {
		if isCgroup2(r) {
			root = r
			break
		}
	}
	if root == "" {
		testdeps.Missing(t, "no cgroup v2 hierarchy")
	}
	bin, out := fakeQEMU(t)
	parent := fmt.Sprintf("/sealpod-test-v2-%d", os.Getpid())
	t.Cleanup(func() { os.Remove(filepath.Join(root, parent, "sb")); os.Remove(filepath.Join(root, parent)) })
	cg, err := openPodCgroup(root, parent+"/sb")
	if err != nil {
		t.Fatal(err)
	}
	if cg.v2 == nil {
		t.Fatalf("%s is cgroup v2 but no directory was opened", root)
	}
	g, err := bundle.Load(secureGuest(t))
	if err != nil {
		t.Fatal(err)
	}
	spec := testVMSpec(bin, shortStateDir(t), g)
	spec.Cgroup = cg
	vm, err := startQEMU(spec, s0(t))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var listing []byte
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(out, "status")); err == nil {
			listing, _ = os.ReadFile(filepath.Join(out, "cgroup"))
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := vm.Kill(); err != nil {
		t.Fatal(err)
	}
	cg.remove()
	if !strings.Contains(string(listing), "0::"+parent+"/sb\n") {
		t.Fatalf("stand-in QEMU not born in %s/sb:\n%s", parent, listing)
	}
	if _, err := os.Stat(filepath.Join(root, parent, "sb")); !os.IsNotExist(err) {
		t.Errorf("the pod cgroup was not removed after QEMU: %v", err)
	}
}
