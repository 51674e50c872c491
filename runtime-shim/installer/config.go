// Package installer puts Sealpod on a Kubernetes node: it adds the `sealpod` runtime handler to
// containerd's config (without disturbing the rest of the file), copies the shim binary onto the
// host, restarts containerd, labels the node with its TEE, and undoes all of it on uninstall.
//
// The containerd config is edited as text, not re-encoded: AddRuntime parses the file with a
// TOML parser to learn its version and what it already defines, then appends one managed block,
// delimited by BeginMarker and EndMarker lines, at the end of the file. Everything outside the
// block (comments, ordering, formatting) stays byte-identical, the result is parsed again and
// checked, and RemoveRuntime deletes exactly that block. Install keeps a copy of the original
// file so that Uninstall restores it byte for byte.
package installer

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

const (
	// HandlerName is the CRI runtime handler every Sealpod RuntimeClass names.
	HandlerName = "sealpod"
	// RuntimeType is the containerd runtime type; containerd runs `containerd-shim-sealpod-v2`.
	RuntimeType = "io.containerd.sealpod.v2"
	// ShimBinaryName is the shim binary containerd looks for on its PATH.
	ShimBinaryName = "containerd-shim-sealpod-v2"
	// AnnotationPrefix is passed through to the sandbox OCI spec (pod_annotations).
	AnnotationPrefix = "sealpod.io/*"

	// BeginMarker and EndMarker delimit the block the installer owns in containerd's config.
	BeginMarker = "# BEGIN sealpod-node-installer (managed block: edits inside are overwritten)"
	EndMarker   = "# END sealpod-node-installer"

	runcRuntimeType = "io.containerd.runc.v2"
)

// CRI plugin ids holding `containerd.runtimes` for each config version.
const (
	criPluginV2 = "io.containerd.grpc.v1.cri"    // containerd 1.5–1.7, config version 2
	criPluginV3 = "io.containerd.cri.v1.runtime" // containerd 2.x, config version 3
)

// Errors callers branch on.
var (
	// ErrInvalidConfig: the containerd config is not valid TOML or has the wrong shape.
	ErrInvalidConfig = errors.New("invalid containerd config")
	// ErrUnsupportedVersion: config version 1 (or unknown); migrate with `containerd config migrate`.
	ErrUnsupportedVersion = errors.New("unsupported containerd config version")
	// ErrUnmanagedRuntime: the handler is already defined outside the installer's block.
	ErrUnmanagedRuntime = errors.New("runtime handler already defined outside the managed block")
	// ErrUnsupportedLayout: appending the block would not give the intended config (e.g. the
	// runtimes are written as an inline table, which TOML forbids extending).
	ErrUnsupportedLayout = errors.New("containerd config layout cannot be extended")
	// ErrMalformedBlock: BeginMarker without EndMarker (or twice).
	ErrMalformedBlock = errors.New("malformed sealpod managed block")
)

// RuntimeOptions says what AddRuntime writes. The zero value gives the production defaults.
type RuntimeOptions struct {
	// Handler is the runtime handler name (RuntimeClass .handler); default HandlerName.
	Handler string
	// RuntimeType is the containerd runtime_type; default RuntimeType.
	RuntimeType string
	// PodAnnotations are annotation patterns passed to the sandbox; default [AnnotationPrefix].
	PodAnnotations []string
	// RuntimePath, when set, is written as runtime_path (absolute shim path). containerd 1.7+
	// honours it; containerd 1.6 ignores it for shim v2 and finds the shim on its PATH.
	RuntimePath string
	// ShimConfigPath, when set, is written as options.ConfigPath: containerd hands it to the
	// shim in the task options (the Kata convention). Empty: the shim uses its default path.
	ShimConfigPath string
	// ConfigVersion is used only when the config is empty (no file yet): 2 (containerd 1.x,
	// the default) or 3 (containerd 2.x). A non-empty config keeps its own version.
	ConfigVersion int
}

var (
	handlerRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	// Strings we put in the TOML: printable ASCII without quote or backslash, so that a TOML
	// basic string needs no escaping.
	plainStringRE = regexp.MustCompile(`^[\x20-\x7e]*$`)
)

func (o RuntimeOptions) withDefaults() (RuntimeOptions, error) {
	if o.Handler == "" {
		o.Handler = HandlerName
	}
	if o.RuntimeType == "" {
		o.RuntimeType = RuntimeType
	}
	if o.PodAnnotations == nil {
		o.PodAnnotations = []string{AnnotationPrefix}
	}
	if len(o.Handler) > 63 || !handlerRE.MatchString(o.Handler) {
		return o, fmt.Errorf("runtime options: handler %q is not a DNS label", o.Handler)
	}
	check := func(field, v string) error {
		if !plainStringRE.MatchString(v) || strings.ContainsAny(v, `"\`) {
			return fmt.Errorf("runtime options: %s %q must be printable ASCII without quotes or backslashes", field, v)
		}
		return nil
	}
	if err := check("runtime type", o.RuntimeType); err != nil {
		return o, err
	}
	for _, a := range o.PodAnnotations {
		if err := check("pod annotation", a); err != nil {
			return o, err
		}
	}
	if err := check("runtime path", o.RuntimePath); err != nil {
		return o, err
	}
	if err := check("shim config path", o.ShimConfigPath); err != nil {
		return o, err
	}
	switch o.ConfigVersion {
	case 0:
		o.ConfigVersion = 2
	case 2, 3:
	default:
		return o, fmt.Errorf("runtime options: config version %d: %w (want 2 or 3)", o.ConfigVersion, ErrUnsupportedVersion)
	}
	return o, nil
}

// ConfigInfo is what the installer learns from a containerd config.
type ConfigInfo struct {
	// Version is the config version (2 or 3); 0 for an empty config.
	Version int
	// Runtimes lists the runtime handlers the file defines (outside the managed block too).
	Runtimes []string
	// DefaultRuntime is containerd.default_runtime_name ("runc" when unset).
	DefaultRuntime string
	// Managed reports whether the file holds the installer's block.
	Managed bool
}

// Inspect parses a containerd config and reports its version and runtimes.
func Inspect(cfg []byte) (ConfigInfo, error) {
	_, _, found, err := findBlock(cfg)
	if err != nil {
		return ConfigInfo{}, err
	}
	p, err := parseConfig(cfg)
	if err != nil {
		return ConfigInfo{}, err
	}
	info := ConfigInfo{Version: p.version, DefaultRuntime: p.defaultRuntime, Managed: found}
	for name := range p.runtimes {
		info.Runtimes = append(info.Runtimes, name)
	}
	slices.Sort(info.Runtimes)
	return info, nil
}

// AddRuntime returns cfg with the Sealpod runtime handler added in a managed block at the end.
// It is idempotent: AddRuntime(AddRuntime(c)) == AddRuntime(c). An existing managed block is
// replaced (so new options take effect); a handler of the same name defined by hand outside the
// block is an ErrUnmanagedRuntime. When the file defines no table for the default runtime
// (`runc` unless default_runtime_name says otherwise), the block spells it out too, because
// containerd's CRI plugin does not load once any runtimes table is given without it.
// An empty cfg (no file yet) yields a fresh config of opts.ConfigVersion.
func AddRuntime(cfg []byte, opts RuntimeOptions) ([]byte, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	base, err := RemoveRuntime(cfg)
	if err != nil {
		return nil, err
	}
	p, err := parseConfig(base)
	if err != nil {
		return nil, err
	}
	if _, ok := p.runtimes[o.Handler]; ok {
		return nil, fmt.Errorf("containerd config: runtimes.%s: %w; remove it and run the installer again", o.Handler, ErrUnmanagedRuntime)
	}
	version := p.version
	writeVersion := false
	if version == 0 {
		version = o.ConfigVersion
		writeVersion = true
	}
	var addDefault string
	if _, ok := p.runtimes[p.defaultRuntime]; !ok {
		if p.defaultRuntime != "runc" {
			return nil, fmt.Errorf("containerd config: default_runtime_name %q has no runtimes table: %w", p.defaultRuntime, ErrInvalidConfig)
		}
		addDefault = "runc"
	}
	block := renderBlock(version, writeVersion, addDefault, o)

	var out bytes.Buffer
	out.Grow(len(base) + len(block) + 2)
	out.Write(base)
	if len(base) > 0 {
		if base[len(base)-1] != '\n' {
			out.WriteByte('\n')
		}
		out.WriteByte('\n')
	}
	out.WriteString(block)
	res := out.Bytes()

	// The appended tables must mean what we intend: parse the result and check.
	q, err := parseConfig(res)
	if err != nil {
		return nil, fmt.Errorf("containerd config after adding runtime %s: %v: %w", o.Handler, err, ErrUnsupportedLayout)
	}
	if q.version != version {
		return nil, fmt.Errorf("containerd config after adding runtime %s: version %d, want %d: %w", o.Handler, q.version, version, ErrUnsupportedLayout)
	}
	got, ok := q.runtimes[o.Handler]
	if !ok || got["runtime_type"] != o.RuntimeType {
		return nil, fmt.Errorf("containerd config after adding runtime %s: runtime_type not set: %w", o.Handler, ErrUnsupportedLayout)
	}
	if _, ok := q.runtimes[q.defaultRuntime]; !ok {
		return nil, fmt.Errorf("containerd config after adding runtime %s: default runtime %s missing: %w", o.Handler, q.defaultRuntime, ErrUnsupportedLayout)
	}
	return res, nil
}

// RemoveRuntime returns cfg without the installer's managed block (and the blank line put
// before it). A config without the block is returned unchanged.
func RemoveRuntime(cfg []byte) ([]byte, error) {
	start, end, found, err := findBlock(cfg)
	if err != nil {
		return nil, err
	}
	if !found {
		return cfg, nil
	}
	head := cfg[:start]
	// AddRuntime wrote "\n" (blank line) before the block when the file was non-empty.
	if bytes.HasSuffix(head, []byte("\n\n")) {
		head = head[:len(head)-1]
	}
	out := make([]byte, 0, len(head)+len(cfg)-end)
	out = append(out, head...)
	out = append(out, cfg[end:]...)
	return out, nil
}

// findBlock locates the managed block: start is the offset of the BeginMarker line, end the
// offset just after the EndMarker line (including its newline).
func findBlock(cfg []byte) (start, end int, found bool, err error) {
	start, end = -1, -1
	off := 0
	for off < len(cfg) {
		nl := bytes.IndexByte(cfg[off:], '\n')
		lineEnd := len(cfg)
		next := len(cfg)
		if nl >= 0 {
			lineEnd = off + nl
			next = lineEnd + 1
		}
		line := strings.TrimRight(string(cfg[off:lineEnd]), "\r")
		switch line {
		case BeginMarker:
			if start >= 0 {
				return 0, 0, false, fmt.Errorf("containerd config: second %q: %w", BeginMarker, ErrMalformedBlock)
			}
			start = off
		case EndMarker:
			if start < 0 || end >= 0 {
				return 0, 0, false, fmt.Errorf("containerd config: %q without a begin marker: %w", EndMarker, ErrMalformedBlock)
			}
			end = next
		}
		off = next
	}
	if start >= 0 && end < 0 {
		return 0, 0, false, fmt.Errorf("containerd config: %q without %q: %w", BeginMarker, EndMarker, ErrMalformedBlock)
	}
	return start, end, start >= 0, nil
}

func renderBlock(version int, writeVersion bool, addDefault string, o RuntimeOptions) string {
	prefix := `plugins."` + criPluginV2 + `".containerd.runtimes.`
	if version == 3 {
		prefix = `plugins.'` + criPluginV3 + `'.containerd.runtimes.`
	}
	var b strings.Builder
	b.WriteString(BeginMarker + "\n")
	if writeVersion {
		fmt.Fprintf(&b, "version = %d\n\n", version)
	}
	if addDefault != "" {
		b.WriteString("# containerd's CRI plugin needs the default runtime spelled out once another runtime is added.\n")
		fmt.Fprintf(&b, "[%s%s]\n  runtime_type = %q\n\n", prefix, addDefault, runcRuntimeType)
	}
	fmt.Fprintf(&b, "[%s%s]\n", prefix, o.Handler)
	fmt.Fprintf(&b, "  runtime_type = %q\n", o.RuntimeType)
	if o.RuntimePath != "" {
		fmt.Fprintf(&b, "  runtime_path = %q\n", o.RuntimePath)
	}
	b.WriteString("  pod_annotations = [")
	for i, a := range o.PodAnnotations {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", a)
	}
	b.WriteString("]\n")
	if o.ShimConfigPath != "" {
		fmt.Fprintf(&b, "  [%s%s.options]\n    ConfigPath = %q\n", prefix, o.Handler, o.ShimConfigPath)
	}
	b.WriteString(EndMarker + "\n")
	return b.String()
}

type parsedConfig struct {
	version        int
	defaultRuntime string
	runtimes       map[string]map[string]any
}

// parseConfig decodes the parts of a containerd config the installer cares about.
func parseConfig(cfg []byte) (parsedConfig, error) {
	p := parsedConfig{defaultRuntime: "runc", runtimes: map[string]map[string]any{}}
	var root map[string]any
	if err := toml.Unmarshal(cfg, &root); err != nil {
		return p, fmt.Errorf("containerd config: %v: %w", err, ErrInvalidConfig)
	}
	if len(root) == 0 {
		return p, nil // empty or comments only
	}
	v, ok := root["version"]
	if !ok {
		return p, fmt.Errorf("containerd config: no version key (version 1): %w; run `containerd config migrate`", ErrUnsupportedVersion)
	}
	n, ok := v.(int64)
	if !ok || (n != 2 && n != 3) {
		return p, fmt.Errorf("containerd config: version %v: %w (want 2 or 3)", v, ErrUnsupportedVersion)
	}
	p.version = int(n)
	plugin := criPluginV2
	if n == 3 {
		plugin = criPluginV3
	}
	ctrd, err := tableAt(root, "plugins", plugin, "containerd")
	if err != nil || ctrd == nil {
		return p, err
	}
	if d, ok := ctrd["default_runtime_name"]; ok {
		s, ok := d.(string)
		if !ok || s == "" {
			return p, fmt.Errorf("containerd config: plugins.%q.containerd.default_runtime_name: not a non-empty string: %w", plugin, ErrInvalidConfig)
		}
		p.defaultRuntime = s
	}
	rts, err := tableAt(ctrd, "runtimes")
	if err != nil {
		return p, err
	}
	for name, r := range rts {
		t, ok := r.(map[string]any)
		if !ok {
			return p, fmt.Errorf("containerd config: plugins.%q.containerd.runtimes.%s: not a table: %w", plugin, name, ErrInvalidConfig)
		}
		p.runtimes[name] = t
	}
	return p, nil
}

// tableAt walks nested tables; a missing table gives (nil, nil), a non-table value an error.
func tableAt(t map[string]any, path ...string) (map[string]any, error) {
	cur := t
	for i, k := range path {
		v, ok := cur[k]
		if !ok {
			return nil, nil
		}
		next, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("containerd config: %s: not a table: %w", strings.Join(path[:i+1], "."), ErrInvalidConfig)
		}
		cur = next
	}
	return cur, nil
}
