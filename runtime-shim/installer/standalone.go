package installer

import (
	"fmt"
	"path/filepath"
	"strings"
)

// StandaloneOptions describe a containerd that runs beside any other on the machine: every
// directory and socket containerd's config can move lives under Dir. (Some paths stay global
// whatever the config — /run/containerd/{s,fifo,runc} for running shims and containers,
// /var/run/netns, /var/lib/cni — see docs/install.md.)
type StandaloneOptions struct {
	// Dir holds root/, state/, opt/ and containerd.sock. Required, absolute. Keep it short:
	// a unix socket path is limited to 107 bytes.
	Dir string
	// SandboxImage is the CRI sandbox (pause) image; empty: containerd's default.
	SandboxImage string
	// CNIBinDir and CNIConfDir; empty: containerd's defaults (/opt/cni/bin, /etc/cni/net.d).
	CNIBinDir, CNIConfDir string
	// RestrictOOMScoreAdj is needed where the host lacks CAP_SYS_RESOURCE (this CI).
	RestrictOOMScoreAdj bool
	// Version is the config version: 2 (containerd 1.x, default) or 3 (containerd 2.x).
	Version int
}

// StandaloneSocket is the gRPC socket of a containerd started with StandaloneConfig(o).
func StandaloneSocket(dir string) string { return filepath.Join(dir, "containerd.sock") }

// StandaloneConfig returns a containerd config (without the Sealpod runtime: pass it through
// AddRuntime) whose root, state, sockets and opt dir are under o.Dir, with the snapshotters
// that need kernel support here (aufs, btrfs, zfs, devmapper) disabled.
func StandaloneConfig(o StandaloneOptions) ([]byte, error) {
	if !filepath.IsAbs(o.Dir) {
		return nil, fmt.Errorf("standalone containerd config: dir %q is not absolute", o.Dir)
	}
	if l := len(StandaloneSocket(o.Dir)) + len(".ttrpc"); l > 107 {
		return nil, fmt.Errorf("standalone containerd config: socket path under %s is %d bytes, over the 107-byte unix socket limit", o.Dir, l)
	}
	for name, v := range map[string]string{"dir": o.Dir, "sandbox image": o.SandboxImage, "cni bin dir": o.CNIBinDir, "cni conf dir": o.CNIConfDir} {
		if !plainStringRE.MatchString(v) || strings.ContainsAny(v, `"\`) {
			return nil, fmt.Errorf("standalone containerd config: %s %q must be printable ASCII without quotes or backslashes", name, v)
		}
	}
	version := o.Version
	if version == 0 {
		version = 2
	}
	cri, optPlugin := `"`+criPluginV2+`"`, `"io.containerd.internal.v1.opt"`
	var images string
	switch version {
	case 2:
	case 3:
		cri, optPlugin = `'`+criPluginV3+`'`, `'io.containerd.internal.v1.opt'`
		images = `'io.containerd.cri.v1.images'`
	default:
		return nil, fmt.Errorf("standalone containerd config: version %d: %w", version, ErrUnsupportedVersion)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version = %d\n", version)
	fmt.Fprintf(&b, "root = %q\nstate = %q\n", filepath.Join(o.Dir, "root"), filepath.Join(o.Dir, "state"))
	b.WriteString(`disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]` + "\n\n")
	fmt.Fprintf(&b, "[grpc]\n  address = %q\n\n", StandaloneSocket(o.Dir))
	fmt.Fprintf(&b, "[ttrpc]\n  address = %q\n\n", StandaloneSocket(o.Dir)+".ttrpc")
	fmt.Fprintf(&b, "[plugins.%s]\n  path = %q\n\n", optPlugin, filepath.Join(o.Dir, "opt"))
	fmt.Fprintf(&b, "[plugins.%s]\n", cri)
	if o.RestrictOOMScoreAdj {
		b.WriteString("  restrict_oom_score_adj = true\n")
	}
	if o.SandboxImage != "" {
		if version == 2 {
			fmt.Fprintf(&b, "  sandbox_image = %q\n", o.SandboxImage)
		}
	}
	if o.CNIBinDir != "" || o.CNIConfDir != "" {
		fmt.Fprintf(&b, "  [plugins.%s.cni]\n", cri)
		if o.CNIBinDir != "" {
			fmt.Fprintf(&b, "    bin_dir = %q\n", o.CNIBinDir)
		}
		if o.CNIConfDir != "" {
			fmt.Fprintf(&b, "    conf_dir = %q\n", o.CNIConfDir)
		}
	}
	if version == 3 && o.SandboxImage != "" {
		fmt.Fprintf(&b, "\n[plugins.%s.pinned_images]\n  sandbox = %q\n", images, o.SandboxImage)
	}
	return []byte(b.String()), nil
}
