package containers

import (
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"github.com/moby/sys/capability"
	"github.com/moby/sys/user"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sealpod/sealpod/agent/containers/image"
	"github.com/sealpod/sealpod/agent/hostvalue"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// defaultCaps is containerd's default capability set.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// buildConfig turns the sealed container and its image config into a libcontainer config and
// the main process.
func (m *Manager) buildConfig(p *pod, sc *spec.Container, img *image.Image, rootfs string, hostEnv map[string]string) (*configs.Config, *libcontainer.Process, error) {
	ic := img.Config.Config

	// Environment: image, then PATH/HOSTNAME defaults, then the sealed env in order (envFrom
	// sources, then env: later wins); $(VAR) is expanded in manifest values, not Literal ones.
	env := newEnv()
	for _, kv := range ic.Env {
		k, v, _ := strings.Cut(kv, "=")
		env.set(k, v)
	}
	if _, ok := env.get("PATH"); !ok {
		k, v, _ := strings.Cut(defaultPath, "=")
		env.set(k, v)
	}
	env.set("HOSTNAME", p.hostname)
	for _, kv := range serviceEnv(hostEnv, !p.spec.NoServiceLinks) {
		env.set(kv[0], kv[1])
	}
	envFrom := 0 // host-provided envFrom sources so far
	for _, e := range sc.Env {
		if hostObjectEnv(e) {
			vars, err := hostObjectValues(e, hostEnv, &envFrom)
			if err != nil {
				return nil, nil, err
			}
			for _, kv := range vars {
				env.set(kv[0], kv[1])
				env.opaque[kv[0]] = e.FromHost
			}
			continue
		}
		if e.Name == "" || strings.ContainsAny(e.Name, "=\x00") {
			return nil, nil, fmt.Errorf("%w: env name %q", ErrInvalid, e.Name)
		}
		v, opaque, err := envValue(p, sc, e, env)
		if err != nil {
			return nil, nil, err
		}
		if strings.IndexByte(v, 0) >= 0 {
			return nil, nil, fmt.Errorf("%w: env %s: NUL in value", ErrInvalid, e.Name)
		}
		env.set(e.Name, v)
		env.opaque[e.Name] = opaque
	}

	// Argv, Kubernetes rules: command replaces the entrypoint, args the cmd; $(VAR) is
	// expanded in the sealed command and args only.
	command, args := ic.Entrypoint, ic.Cmd
	if len(sc.Command) > 0 || len(sc.Args) > 0 {
		command, args = nil, nil
		if len(sc.Command) == 0 {
			command = ic.Entrypoint
		}
		for _, f := range []struct {
			name string
			in   []string
			out  *[]string
		}{{"command", sc.Command, &command}, {"args", sc.Args, &args}} {
			for i, a := range f.in {
				x, err := env.expandArg(a)
				if err != nil {
					return nil, nil, fmt.Errorf("%w: %s[%d]: %w", ErrInvalid, f.name, i, err)
				}
				*f.out = append(*f.out, x)
			}
		}
	}
	argv := append(slices.Clone(command), args...)
	if len(argv) == 0 {
		return nil, nil, fmt.Errorf("%w: no command (sealed command/args empty and image has no entrypoint/cmd)", ErrInvalid)
	}

	cwd := sc.WorkingDir
	if cwd == "" {
		cwd = ic.WorkingDir
	}
	if cwd == "" {
		cwd = "/"
	}
	if !path.IsAbs(cwd) {
		return nil, nil, fmt.Errorf("%w: workingDir %q is not absolute", ErrInvalid, cwd)
	}

	// User.
	sctx := sc.SecurityContext
	if sctx == nil {
		sctx = &spec.SecurityContext{}
	}
	uid, gid, groups, err := resolveUser(rootfs, ic.User, sctx)
	if err != nil {
		return nil, nil, err
	}
	if sctx.RunAsNonRoot != nil && *sctx.RunAsNonRoot && uid == 0 {
		return nil, nil, fmt.Errorf("%w: runAsNonRoot but the container would run as uid 0", ErrInvalid)
	}

	// Capabilities.
	caps := slices.Clone(defaultCaps)
	if sctx.Privileged {
		caps = nil
		for _, c := range capability.ListKnown() {
			caps = append(caps, "CAP_"+strings.ToUpper(c.String()))
		}
	}
	// As containerd's CRI plugin: add ALL, then drop ALL, then the single adds, then the
	// single drops, so drop [ALL] add [NET_BIND_SERVICE] keeps NET_BIND_SERVICE.
	isAll := func(c string) bool { return capName(c) == "CAP_ALL" }
	if slices.ContainsFunc(sctx.CapAdd, isAll) {
		caps = nil
		for _, k := range capability.ListKnown() {
			caps = append(caps, "CAP_"+strings.ToUpper(k.String()))
		}
	}
	if slices.ContainsFunc(sctx.CapDrop, isAll) {
		caps = nil
	}
	for _, c := range sctx.CapAdd {
		if n := capName(c); !isAll(c) && !slices.Contains(caps, n) {
			caps = append(caps, n)
		}
	}
	for _, c := range sctx.CapDrop {
		n := capName(c)
		caps = slices.DeleteFunc(caps, func(x string) bool { return x == n })
	}
	noNewPrivs := sctx.AllowPrivilegeEscalate != nil && !*sctx.AllowPrivilegeEscalate
	filter, err := seccompFilter(sctx, caps)
	if err != nil {
		return nil, nil, err
	}

	// Mounts.
	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/etc/hosts", Type: "bind", Source: filepath.Join(p.etc, "hosts"), Options: []string{"rbind", "rprivate", "ro"}},
		{Destination: "/etc/hostname", Type: "bind", Source: filepath.Join(p.etc, "hostname"), Options: []string{"rbind", "rprivate", "ro"}},
		{Destination: "/etc/resolv.conf", Type: "bind", Source: filepath.Join(p.etc, "resolv.conf"), Options: []string{"rbind", "rprivate", "ro"}},
	}
	if p.tlsSource != "" {
		dst := p.spec.Identity.TLSDir
		if dst == "" {
			dst = spec.DefaultTLSDir
		}
		if !path.IsAbs(dst) || path.Clean(dst) != dst || dst == "/" {
			return nil, nil, fmt.Errorf("%w: identity.tlsDir %q", ErrInvalid, dst)
		}
		mounts = append(mounts, specs.Mount{Destination: dst, Type: "bind", Source: p.tlsSource, Options: []string{"rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"}})
	}
	for _, mt := range sc.Mounts {
		if !path.IsAbs(mt.Path) || path.Clean(mt.Path) != mt.Path || mt.Path == "/" {
			return nil, nil, fmt.Errorf("%w: mount of volume %s: path %q", ErrInvalid, mt.Volume, mt.Path)
		}
		v, ok := p.volume(mt.Volume)
		if !ok {
			return nil, nil, fmt.Errorf("%w: mount at %s: unknown volume %q", ErrInvalid, mt.Path, mt.Volume)
		}
		if v.kind == spec.VolumeHost {
			return nil, nil, fmt.Errorf("%w: mount at %s: host volume %q is not available inside the guest", ErrInvalid, mt.Path, mt.Volume)
		}
		if v.kind == spec.VolumeEncrypted {
			if err := encryptedSource(mt.Volume, v); err != nil {
				return nil, nil, fmt.Errorf("mount at %s: %w", mt.Path, err)
			}
		}
		src := v.path
		if mt.SubPath != "" {
			rel, err := cleanRelative(mt.SubPath)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: mount at %s: subPath %q", ErrInvalid, mt.Path, mt.SubPath)
			}
			// As the kubelet: a missing subPath directory is created (resolved inside the
			// volume: a symlink in it cannot lead out).
			if v.kind == spec.VolumeEncrypted && !v.readOnly {
				if err := pathrs.MkdirAll(v.path, rel, 0o755); err != nil {
					return nil, nil, fmt.Errorf("mount at %s: subPath %q: %w", mt.Path, mt.SubPath, err)
				}
			}
			if v.kind == spec.VolumeTmpfs {
				if err := pathrs.MkdirAll(v.path, rel, 0o777); err != nil {
					return nil, nil, fmt.Errorf("mount at %s: subPath %q: %w", mt.Path, mt.SubPath, err)
				}
			}
			if v.kind == spec.VolumeSealed || v.kind == spec.VolumeHostObject {
				// Read-only for containers: nothing can swap a component after the check.
				src, err = securejoin.SecureJoin(v.path, rel)
				if err == nil {
					_, err = os.Lstat(src)
				}
			} else {
				src, err = stageSubPath(filepath.Join(filepath.Dir(rootfs), "subpaths"), len(mounts), v.path, rel)
			}
			if err != nil {
				return nil, nil, fmt.Errorf("mount at %s: subPath %q: %w", mt.Path, mt.SubPath, err)
			}
		}
		opts := []string{"rbind", "rprivate", "nosuid", "nodev"}
		if mt.ReadOnly || v.kind == spec.VolumeSealed || v.kind == spec.VolumeHostObject || v.readOnly {
			opts = append(opts, "ro")
		}
		mounts = append(mounts, specs.Mount{Destination: mt.Path, Type: "bind", Source: src, Options: opts})
	}

	devices, deviceRules, err := blockDevices(p, sc)
	if err != nil {
		return nil, nil, err
	}

	rs := &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: rootfs, Readonly: sctx.ReadOnlyRootFilesystem},
		Process: &specs.Process{
			Terminal: sc.TTY,
			User:     specs.User{UID: uint32(uid), GID: uint32(gid)},
			Args:     argv,
			Env:      env.list(),
			Cwd:      cwd,
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			NoNewPrivileges: noNewPrivs,
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1048576, Soft: 1048576}},
		},
		Mounts: mounts,
		Linux: &specs.Linux{
			CgroupsPath: path.Join(m.opts.CgroupParent, sc.Name),
			Resources: &specs.LinuxResources{
				Devices: append([]specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}, deviceRules...),
			},
			Devices: devices,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.MountNamespace},
				{Type: specs.PIDNamespace, Path: p.nsPath("pid")},
				{Type: specs.IPCNamespace, Path: p.nsPath("ipc")},
				{Type: specs.UTSNamespace, Path: p.nsPath("uts")},
				// Network: none listed = the guest's network namespace (the VM is the pod).
			},
		},
	}
	rs.Linux.Seccomp = filter
	if !sctx.Privileged {
		rs.Linux.MaskedPaths = []string{
			"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
			"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
			"/proc/scsi", "/sys/devices/virtual/powercap",
		}
		rs.Linux.ReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
	}
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName:       sc.Name,
		UseSystemdCgroup: false,
		NoPivotRoot:      p.noPivot,
		Spec:             rs,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("runtime config: %w", err)
	}
	proc := &libcontainer.Process{
		Args:             argv,
		Env:              rs.Process.Env,
		UID:              uid,
		GID:              gid,
		AdditionalGroups: groups,
		Cwd:              cwd,
	}
	if noNewPrivs {
		t := true
		proc.NoNewPrivileges = &t
	}
	return cfg, proc, nil
}

func capName(c string) string {
	c = strings.ToUpper(c)
	if !strings.HasPrefix(c, "CAP_") {
		c = "CAP_" + c
	}
	return c
}

// resolveUser applies runAsUser/runAsGroup over the image's USER, reading /etc/passwd and
// /etc/group inside the root filesystem (resolved within it) for names and groups.
func resolveUser(rootfs, imageUser string, sctx *spec.SecurityContext) (int, int, []int, error) {
	userSpec := imageUser
	if sctx.RunAsUser != nil {
		if *sctx.RunAsUser < 0 || *sctx.RunAsUser > 1<<31-2 {
			return 0, 0, nil, fmt.Errorf("%w: runAsUser %d", ErrInvalid, *sctx.RunAsUser)
		}
		u := strconv.FormatInt(*sctx.RunAsUser, 10)
		if _, g, ok := strings.Cut(imageUser, ":"); ok && sctx.RunAsGroup == nil {
			u += ":" + g
		}
		userSpec = u
	}
	if sctx.RunAsGroup != nil {
		if *sctx.RunAsGroup < 0 || *sctx.RunAsGroup > 1<<31-2 {
			return 0, 0, nil, fmt.Errorf("%w: runAsGroup %d", ErrInvalid, *sctx.RunAsGroup)
		}
		u, _, _ := strings.Cut(userSpec, ":")
		if u == "" {
			u = "0"
		}
		userSpec = u + ":" + strconv.FormatInt(*sctx.RunAsGroup, 10)
	}
	var additional []string
	for _, g := range sctx.SupplementalGroups {
		if g < 0 || g > 1<<31-2 {
			return 0, 0, nil, fmt.Errorf("%w: supplementalGroups %d", ErrInvalid, g)
		}
		additional = append(additional, strconv.FormatInt(g, 10))
	}
	passwd := openInRootOrEmpty(rootfs, "/etc/passwd")
	group := openInRootOrEmpty(rootfs, "/etc/group")
	defer passwd.Close()
	defer group.Close()
	eu, err := user.GetExecUser(userSpec, &user.ExecUser{Home: "/"}, passwd, group)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("%w: user %q: %v", ErrInvalid, userSpec, err)
	}
	groups := eu.Sgids
	if len(additional) > 0 {
		passwd2 := openInRootOrEmpty(rootfs, "/etc/group")
		defer passwd2.Close()
		extra, err := user.GetAdditionalGroups(additional, passwd2)
		if err != nil {
			return 0, 0, nil, fmt.Errorf("%w: supplementalGroups: %v", ErrInvalid, err)
		}
		groups = append(groups, extra...)
	}
	return eu.Uid, eu.Gid, groups, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

func openInRootOrEmpty(rootfs, p string) io.ReadCloser {
	f, err := pathrs.OpenInRoot(rootfs, p)
	if err != nil {
		return readCloser{strings.NewReader(""), func() error { return nil }}
	}
	rf, err := pathrs.Reopen(f, os.O_RDONLY)
	f.Close()
	if err != nil {
		return readCloser{strings.NewReader(""), func() error { return nil }}
	}
	if fi, err := rf.Stat(); err != nil || !fi.Mode().IsRegular() {
		rf.Close()
		return readCloser{strings.NewReader(""), func() error { return nil }}
	}
	return readCloser{io.LimitReader(rf, 16<<20), rf.Close}
}

// env is an ordered environment.
type envList struct {
	keys []string
	vals map[string]string
	// opaque maps a variable to the host field (an annotation) its value comes from,
	// directly or through $(VAR): such a value has no syntax and never reaches argv.
	opaque map[string]string
}

func newEnv() *envList { return &envList{vals: map[string]string{}, opaque: map[string]string{}} }

func (e *envList) set(k, v string) {
	if _, ok := e.vals[k]; !ok {
		e.keys = append(e.keys, k)
	}
	e.vals[k] = v
}

func (e *envList) get(k string) (string, bool) { v, ok := e.vals[k]; return v, ok }

// expandOpaque expands s and returns the first variable it substituted whose value is
// opaque, with that value's source field ("" if none).
func (e *envList) expandOpaque(s string) (out, name, field string) {
	out = expand(s, func(k string) (string, bool) {
		v, ok := e.get(k)
		if ok && name == "" && e.opaque[k] != "" {
			name, field = k, e.opaque[k]
		}
		return v, ok
	})
	return out, name, field
}

// expandArg expands one sealed command/args element and refuses an opaque variable.
func (e *envList) expandArg(s string) (string, error) {
	out, name, field := e.expandOpaque(s)
	if name != "" {
		return "", fmt.Errorf("$(%s) comes from %s: annotation values have no syntax and are never substituted into command or args (read the variable from the environment instead)", name, field)
	}
	return out, nil
}

// envValue is the value of one sealed env var and the opaque host field it carries ("" if
// none). A host value is checked by its field's syntax (agent/hostvalue) before use and
// never expanded; a Literal value (from a Secret or ConfigMap) is used as is, as in
// Kubernetes; any other sealed value is expanded with the variables defined so far.
func envValue(p *pod, sc *spec.Container, e spec.EnvVar, env *envList) (string, string, error) {
	if e.FromHost == "" && e.Literal {
		return e.Value, "", nil
	}
	if e.FromHost == "" {
		v, _, field := env.expandOpaque(e.Value)
		return v, field, nil
	}
	key := hostvalue.Key(sc.Name, e)
	hv, ok := p.hostValues[key]
	if !ok {
		return "", "", fmt.Errorf("%w: env %s: host value %q not supplied", ErrInvalid, e.Name, key)
	}
	v, err := hostvalue.Resolve(key, e, hv)
	if err != nil {
		return "", "", fmt.Errorf("%w: env %s: %w", ErrInvalid, e.Name, err)
	}
	if hostvalue.Opaque(e.FromHost) {
		return v, strings.TrimPrefix(e.FromHost, hostvalue.FieldRef), nil
	}
	return v, "", nil
}

func (e *envList) list() []string {
	out := make([]string, 0, len(e.keys))
	for _, k := range e.keys {
		out = append(out, k+"="+e.vals[k])
	}
	return out
}

// expand implements Kubernetes' $(VAR) expansion: $(VAR) is replaced when VAR is defined,
// $$ is an escaped $, anything else is left as written.
func expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteByte(s[i])
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok && name != "" {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}
