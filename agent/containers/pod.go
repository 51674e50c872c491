package containers

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sealpod/sealpod/internal/atomicfile"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/internal/lazyregexp"
)

type podVolume struct {
	kind spec.VolumeKind
	// path is the guest path of the volume's root ("" for host volumes: unsupported here;
	// "" for an encrypted volume until AttachVolume), or for an attached Block volume its
	// decrypted device node.
	path string
	// Encrypted volumes: the sealed claim's mode and read-only flag; dev is the Block
	// device's number once attached.
	mode     string
	readOnly bool
	dev      uint64
}

func newPodVolume(v spec.Volume, path string) podVolume {
	pv := podVolume{kind: v.Kind, path: path}
	if v.Claim != nil {
		pv.mode, pv.readOnly = v.Claim.Mode, v.Claim.ReadOnly
	}
	return pv
}

type pod struct {
	spec       *spec.Spec
	dir        string
	volumes    map[string]podVolume
	etc        string // dir with hosts, hostname, resolv.conf
	tlsSource  string
	hostValues map[string]string
	hostname   string
	noPivot    bool
	log        *slog.Logger

	pause     *exec.Cmd
	pauseDone chan struct{}

	// volMu guards the encrypted entries of volumes, which AttachVolume fills while
	// containers are created.
	volMu sync.Mutex
	// hostMu serializes updates of host-provided volumes; hostGen numbers them (hostfiles.go).
	hostMu  sync.Mutex
	hostGen uint64
}

// volume returns the pod volume name.
func (p *pod) volume(name string) (podVolume, bool) {
	p.volMu.Lock()
	defer p.volMu.Unlock()
	v, ok := p.volumes[name]
	return v, ok
}

// volumeNameRe is a volume name's syntax, at most 253 bytes (checked apart: the expression
// compiles on first use and stays small without a counted repetition).
var volumeNameRe = lazyregexp.New(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)

func startPod(opts Options, log *slog.Logger, s *spec.Spec, po PodOptions) (p *pod, retErr error) {
	dir := filepath.Join(opts.StateDir, "pod")
	if err := removeTree(dir); err != nil {
		return nil, err
	}
	p = &pod{
		spec:       s,
		dir:        dir,
		volumes:    map[string]podVolume{},
		etc:        filepath.Join(dir, "etc"),
		tlsSource:  po.TLSSource,
		hostValues: po.HostValues,
		log:        log,
	}
	defer func() {
		if retErr != nil {
			_ = p.close()
		}
	}()
	if err := os.MkdirAll(p.etc, 0o755); err != nil {
		return nil, fmt.Errorf("pod dir %s: %w", p.etc, err)
	}
	var err error
	if p.noPivot, err = noPivotRoot(opts.NoPivotRoot); err != nil {
		return nil, err
	}
	if p.noPivot {
		log.Warn("agent root is the initial ramfs: containers use MS_MOVE+chroot instead of pivot_root (weaker isolation of the guest root)")
	}
	if po.TLSSource != "" {
		if fi, err := os.Stat(po.TLSSource); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("tlsSource %s: not a directory (%v)", po.TLSSource, err)
		}
	}

	// Hostname.
	p.hostname = po.Hostname
	if p.hostname == "" {
		p.hostname = s.Pod
		if i := strings.LastIndexByte(p.hostname, '/'); i >= 0 {
			p.hostname = p.hostname[i+1:]
		}
	}
	p.hostname = strings.ToLower(p.hostname)
	if !spec.ValidDNSLabel(p.hostname) {
		log.Warn("pod name is not a valid hostname, using \"sealpod\"")
		p.hostname = "sealpod"
	}

	// Volumes.
	vdir := filepath.Join(dir, "volumes")
	for _, v := range s.Volumes {
		if len(v.Name) > 253 || !volumeNameRe.MatchString(v.Name) {
			return nil, fmt.Errorf("volume %q: %w: name", v.Name, ErrInvalid)
		}
		if _, dup := p.volumes[v.Name]; dup {
			return nil, fmt.Errorf("volume %q: %w: duplicate", v.Name, ErrInvalid)
		}
		vp := filepath.Join(vdir, v.Name)
		switch v.Kind {
		case spec.VolumeTmpfs:
			if err := mountTmpfs(vp, 0o777, v.SizeLimit); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
		case spec.VolumeSealed:
			if err := mountTmpfs(vp, 0o755, 0); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
		case spec.VolumeHostObject:
			// Empty until the host sends its files (UpdateHostFiles, hostfiles.go).
			if err := mountTmpfs(vp, 0o755, hostVolumeSize); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
		case spec.VolumeHost:
			// Host volumes need a host→guest file share, which this guest does not have.
			p.volumes[v.Name] = podVolume{kind: v.Kind}
			continue
		case spec.VolumeEncrypted:
			// Opened by the agent at AttachVolume (agent/server), then Manager.AttachVolume.
			if v.Claim == nil {
				return nil, fmt.Errorf("volume %s: %w: encrypted volume without claim", v.Name, ErrInvalid)
			}
			p.volumes[v.Name] = newPodVolume(v, "")
			continue
		default:
			return nil, fmt.Errorf("volume %s: %w: kind %q", v.Name, ErrInvalid, v.Kind)
		}
		p.volumes[v.Name] = podVolume{kind: v.Kind, path: vp}
	}
	for _, f := range s.Files {
		v, ok := p.volumes[f.Volume]
		if !ok || v.kind != spec.VolumeSealed {
			return nil, fmt.Errorf("sealed file %q: %w: volume %q is not a sealed volume", f.Path, ErrInvalid, f.Volume)
		}
		if err := writeSealedFile(v.path, f); err != nil {
			return nil, fmt.Errorf("sealed file %q in volume %s: %w", f.Path, f.Volume, err)
		}
	}
	for name, v := range p.volumes {
		if v.kind == spec.VolumeSealed {
			if err := unix.Mount("", v.path, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
				return nil, fmt.Errorf("volume %s: remount read-only: %w", name, err)
			}
		}
	}

	// /etc files.
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t%s\n", p.hostname)
	if err := atomicfile.Write(filepath.Join(p.etc, "hosts"), []byte(hosts), 0o644); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(p.etc, "hostname"), []byte(p.hostname+"\n"), 0o644); err != nil {
		return nil, err
	}
	resolv, err := os.ReadFile(opts.ResolvConf)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", opts.ResolvConf, err)
	}
	if err := atomicfile.Write(filepath.Join(p.etc, "resolv.conf"), resolv, 0o644); err != nil {
		return nil, err
	}

	// Pause: PID 1 of the pod's PID namespace; holds the IPC and UTS namespaces. It writes
	// one line on stdout once the hostname is set.
	pauseRoot := filepath.Join(dir, "pause-root")
	if err := os.Mkdir(pauseRoot, 0o555); err != nil {
		return nil, fmt.Errorf("pause root %s: %w", pauseRoot, err)
	}
	ready, readyW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("pause pipe: %w", err)
	}
	defer ready.Close()
	cmd := exec.Command("/proc/self/exe", pauseArg)
	cmd.Stdout = readyW
	cmd.Args[0] = "sealpod-pause"
	cmd.Env = []string{pauseEnv + "=1", pauseHostnameEnv + "=" + p.hostname, pauseRootEnv + "=" + pauseRoot}
	cmd.Dir = "/"
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return nil, fmt.Errorf("start pause process: %w", err)
	}
	p.pause = cmd
	p.pauseDone = make(chan struct{})
	go func() {
		err := cmd.Wait()
		log.Info("pause process exited", "err", err)
		close(p.pauseDone)
	}()
	// The pause sets the hostname before anything joins its UTS namespace.
	_ = ready.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(ready).ReadString('\n')
	if err != nil || line != "ready\n" {
		return nil, fmt.Errorf("pause process not ready: %q %v", line, err)
	}
	return p, nil
}

// nsPath is the path of one of the pod's namespaces ("pid", "ipc", "uts").
func (p *pod) nsPath(kind string) string {
	return fmt.Sprintf("/proc/%d/ns/%s", p.pause.Process.Pid, kind)
}

// alive reports whether the pause process (and so the pod's namespaces) is still there.
func (p *pod) alive() bool {
	select {
	case <-p.pauseDone:
		return false
	default:
		return true
	}
}

func (p *pod) close() error {
	var errs []error
	if p.pause != nil && p.pause.Process != nil {
		select {
		case <-p.pauseDone:
		default:
			_ = p.pause.Process.Kill()
			select {
			case <-p.pauseDone:
			case <-time.After(10 * time.Second):
				errs = append(errs, errors.New("pause process did not exit after SIGKILL"))
			}
		}
	}
	if err := removeTree(p.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func mountTmpfs(dir string, mode os.FileMode, size int64) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("mkdir %s: %w", dir, err)
	}
	data := "mode=" + strconv.FormatUint(uint64(mode.Perm()), 8)
	if size > 0 {
		data += ",size=" + strconv.FormatInt(size, 10)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		return fmt.Errorf("mount tmpfs at %s: %w", dir, err)
	}
	return nil
}

// writeSealedFile writes one sealed file inside a volume root, resolving every path component
// inside that root.
func writeSealedFile(root string, f spec.File) error {
	rel, err := cleanRelative(f.Path)
	if err != nil || rel == "" {
		return fmt.Errorf("%w: path %q", ErrInvalid, f.Path)
	}
	if err := pathrs.MkdirAll(root, path.Dir("/"+rel), 0o755); err != nil {
		return fmt.Errorf("parent directory: %w", err)
	}
	parent, err := pathrs.OpenInRoot(root, path.Dir("/"+rel))
	if err != nil {
		return fmt.Errorf("parent directory: %w", err)
	}
	defer parent.Close()
	mode := f.Mode & 0o7777
	if mode == 0 {
		mode = 0o644
	}
	base := path.Base(rel)
	tmp := ".sealpod-tmp-" + base
	fd, err := unix.Openat(int(parent.Fd()), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	file := os.NewFile(uintptr(fd), tmp)
	_, werr := file.Write(f.Data)
	if werr == nil {
		werr = file.Chmod(os.FileMode(mode&0o777) | modeBits(mode))
	}
	if werr == nil {
		werr = file.Sync()
	}
	if cerr := file.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = unix.Unlinkat(int(parent.Fd()), tmp, 0)
		return fmt.Errorf("write: %w", werr)
	}
	if err := unix.Renameat(int(parent.Fd()), tmp, int(parent.Fd()), base); err != nil {
		_ = unix.Unlinkat(int(parent.Fd()), tmp, 0)
		return fmt.Errorf("rename: %w", err)
	}
	return nil
}

func modeBits(m uint32) os.FileMode {
	var fm os.FileMode
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

// cleanRelative validates a relative path without ".." and returns it cleaned.
func cleanRelative(p string) (string, error) {
	if strings.HasPrefix(p, "/") || strings.IndexByte(p, 0) >= 0 || len(p) > 4096 {
		return "", ErrInvalid
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return "", ErrInvalid
		}
	}
	c := path.Clean("/" + p)
	return strings.TrimPrefix(c, "/"), nil
}

// noPivotRoot decides whether pivot_root must be avoided: when "/" is the initial ramfs.
func noPivotRoot(setting string) (bool, error) {
	switch setting {
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "", "auto":
	default:
		return false, fmt.Errorf("containers options: noPivotRoot %q: want auto, true or false", setting)
	}
	runtime.LockOSThread() // see unmountUnder
	defer runtime.UnlockOSThread()
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	root := ""
	for sc.Scan() {
		// id parent major:minor root mountpoint opts ... - fstype source superopts
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) < 5 || fields[4] != "/" {
			continue
		}
		if i := strings.Index(line, " - "); i >= 0 {
			rest := strings.Fields(line[i+3:])
			if len(rest) > 0 {
				root = rest[0] // the last mount on "/" wins
				// Only rootfs itself (its own parent) refuses pivot_root; a mount of the
				// same type with a parent would not.
				if fields[0] != fields[1] {
					root = "bind of " + root
				}
			}
		}
	}
	if root == "rootfs" {
		// Never a silent fallback to MS_MOVE+chroot: a root process with CAP_SYS_CHROOT
		// leaves such a chroot. The agent moves "/" to a tmpfs at boot (boot.LeaveInitramfs).
		return false, errors.New(`containers: the agent's root is the initial ramfs, where pivot_root is impossible and a chroot can be escaped; refused (NoPivotRoot "true" forces that weaker mode)`)
	}
	return false, nil
}
