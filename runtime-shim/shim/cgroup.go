package shim

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/errdefs"
)

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// cgroup2Magic is CGROUP2_SUPER_MAGIC (statfs f_type of a cgroup v2 mount).
const cgroup2Magic = 0x63677270

// cgroupV1Controllers are the v1 hierarchies QEMU joins: those the kubelet's accounting and
// limits read (cpuset is left alone: a new v1 cpuset cgroup would need cpus and mems copied).
var cgroupV1Controllers = []string{"memory", "cpu", "cpuacct", "pids", "blkio"}

// cgroupRel turns the sandbox's linux.cgroupsPath into a path below the cgroup root, in either
// form containerd's CRI plugin writes: cgroupfs ("/kubepods/burstable/pod<uid>/<id>") or
// systemd ("kubepods-burstable-pod<uid>.slice:cri-containerd:<id>", the unit
// cri-containerd-<id>.scope under the slice, whose dashes nest it).
func cgroupRel(p string) (string, error) {
	bad := func(why string) error {
		return fmt.Errorf("sandbox linux.cgroupsPath %.200q: %s: %w", p, why, errdefs.ErrInvalidArgument)
	}
	if p == "" {
		return "", bad("empty: QEMU must run in the pod's cgroup (set the pod's cgroup parent; containerd's disable_cgroup is not supported)")
	}
	if strings.ContainsAny(p, "\x00\n") || len(p) > 4096 {
		return "", bad("not a cgroup path")
	}
	if strings.HasPrefix(p, "/") {
		if path.Clean(p) != p || p == "/" {
			return "", bad("not a clean absolute path below the root")
		}
		return p, nil
	}
	f := strings.Split(p, ":")
	if len(f) != 3 {
		return "", bad("want /cgroupfs/path or slice:prefix:name")
	}
	slice, prefix, name := f[0], f[1], f[2]
	validUnit := func(s string) bool {
		return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\\")
	}
	if !strings.HasSuffix(slice, ".slice") || !validUnit(slice) || !validUnit(prefix) || !validUnit(name) {
		return "", bad("systemd form needs <name>.slice:<prefix>:<name>")
	}
	dir := "/"
	if slice != "-.slice" {
		parts := strings.Split(strings.TrimSuffix(slice, ".slice"), "-")
		for i := range parts {
			if parts[i] == "" {
				return "", bad("empty component in the slice name")
			}
			dir = path.Join(dir, strings.Join(parts[:i+1], "-")+".slice")
		}
	}
	return path.Join(dir, prefix+"-"+name+".scope"), nil
}

// podCgroup is the cgroup QEMU runs in: the sandbox's cgroupsPath, in the unified hierarchy
// (v2) or in each v1 controller of cgroupV1Controllers.
type podCgroup struct {
	rel     string
	v2      *os.File // open cgroup v2 directory (clone3 CLONE_INTO_CGROUP)
	created []string // directories the shim created (removed after QEMU)
	v1      []string // v1 directories QEMU joins
}

func isCgroup2(dir string) bool {
	var st syscall.Statfs_t
	return syscall.Statfs(dir, &st) == nil && st.Type == cgroup2Magic
}

// openPodCgroup creates (if needed) the cgroup of cgroupsPath under root.
func openPodCgroup(root, cgroupsPath string) (*podCgroup, error) {
	rel, err := cgroupRel(cgroupsPath)
	if err != nil {
		return nil, err
	}
	cg := &podCgroup{rel: rel}
	mk := func(dir string) error {
		if _, err := os.Stat(dir); err == nil {
			return nil
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("pod cgroup %s: %w", dir, err)
		}
		cg.created = append(cg.created, dir)
		return nil
	}
	if isCgroup2(root) {
		dir := filepath.Join(root, rel)
		if err := mk(dir); err != nil {
			return nil, err
		}
		if cg.v2, err = os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY, 0); err != nil {
			cg.remove()
			return nil, fmt.Errorf("pod cgroup %s: %w", dir, err)
		}
		return cg, nil
	}
	for _, c := range cgroupV1Controllers {
		hier := filepath.Join(root, c)
		if _, err := os.Stat(filepath.Join(hier, "tasks")); err != nil {
			continue // controller not mounted on its own
		}
		dir := filepath.Join(hier, rel)
		if err := mk(dir); err != nil {
			cg.remove()
			return nil, err
		}
		cg.v1 = append(cg.v1, dir)
	}
	if len(cg.v1) == 0 {
		return nil, fmt.Errorf("pod cgroup %s: no cgroup v2 at %s and no v1 memory/cpu hierarchy under it: %w", rel, root, errdefs.ErrFailedPrecondition)
	}
	return cg, nil
}

// joinThread moves thread tid into the v1 cgroups (QEMU, forked by it, inherits them).
func (cg *podCgroup) joinThread(tid int) error {
	for _, d := range cg.v1 {
		if err := os.WriteFile(filepath.Join(d, "tasks"), []byte(strconv.Itoa(tid)), 0); err != nil {
			return fmt.Errorf("pod cgroup %s: %w", d, err)
		}
	}
	return nil
}

// remove removes the cgroups the shim created, deepest first, once they are empty (the
// thread that forked QEMU may take a moment to end). Safe to call more than once.
func (cg *podCgroup) remove() {
	if cg == nil {
		return
	}
	if cg.v2 != nil {
		cg.v2.Close()
		cg.v2 = nil
	}
	created := cg.created
	cg.created = nil
	for i := len(created) - 1; i >= 0; i-- {
		for try := 0; try < 100; try++ {
			err := syscall.Rmdir(created[i])
			if !errors.Is(err, syscall.EBUSY) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
