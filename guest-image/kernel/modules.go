package kernel

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultModules are the modules the guest agent needs (docs/guest.md#the-initrd):
// the virtio PCI transport, the console/virtio-serial driver (agent channel), the network,
// the entropy source, vsock, overlayfs for container root filesystems, the SEV-SNP guest
// driver (attestation reports through /dev/sev-guest) and configfs (where newer kernels put
// the configfs-tsm report interface, /sys/kernel/config/tsm/report).
var DefaultModules = []string{
	"virtio_pci", "virtio_console", "virtio_net", "virtio_rng",
	"vsock", "vmw_vsock_virtio_transport", "overlay", "sev_guest", "configfs",
}

// DefaultOptionalModules are included when the kernel has them: tdx_guest (Linux ≥ 6.2 with
// CONFIG_INTEL_TDX_GUEST) and tsm (configfs-tsm reports, Linux ≥ 6.7). Debian's 6.1 has none.
var DefaultOptionalModules = []string{"tdx_guest", "tsm"}

// Errors callers may branch on.
var (
	ErrNoModule         = errors.New("module not found")
	ErrCompressedModule = errors.New("compressed module")
	ErrDependencyCycle  = errors.New("module dependency cycle")
)

// Module is one loadable kernel module.
type Module struct {
	// Name is the module name with underscores (virtio_rng for virtio-rng.ko).
	Name string
	// Path is relative to the modules directory (kernel/drivers/char/hw_random/virtio-rng.ko).
	Path string
	// Depends lists the modules it needs (its .modinfo "depends=").
	Depends []string
}

// NormalizeName maps a module or file name to the kernel's module name ("-" → "_").
func NormalizeName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// Index finds modules by name in a lib/modules/<release> directory.
type Index struct {
	dir        string
	release    string
	paths      map[string]string // name → relative path of <name>.ko
	compressed map[string]string // name → relative path of <name>.ko.{xz,zst,gz}
	builtin    map[string]bool
	cache      map[string]*Module
}

// NewIndex scans dir (lib/modules/<release>) for modules and reads modules.builtin.
func NewIndex(dir, release string) (*Index, error) {
	ix := &Index{
		dir: dir, release: release,
		paths: map[string]string{}, compressed: map[string]string{},
		builtin: map[string]bool{}, cache: map[string]*Module{},
	}
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		base := d.Name()
		switch {
		case strings.HasSuffix(base, ".ko"):
			ix.add(ix.paths, NormalizeName(strings.TrimSuffix(base, ".ko")), rel)
		case strings.HasSuffix(base, ".ko.xz"), strings.HasSuffix(base, ".ko.zst"), strings.HasSuffix(base, ".ko.gz"):
			ix.add(ix.compressed, NormalizeName(base[:strings.Index(base, ".ko.")]), rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("module index %s: %w", dir, err)
	}
	if raw, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(raw))
		for sc.Scan() {
			if b := path.Base(strings.TrimSpace(sc.Text())); strings.HasSuffix(b, ".ko") {
				ix.builtin[NormalizeName(strings.TrimSuffix(b, ".ko"))] = true
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("module index %s: %w", dir, err)
	}
	return ix, nil
}

// add keeps the bytewise-smallest path when two files claim a name, so the choice is stable.
func (ix *Index) add(m map[string]string, name, rel string) {
	if old, ok := m[name]; !ok || rel < old {
		m[name] = rel
	}
}

// Builtin reports whether the module is built into the kernel.
func (ix *Index) Builtin(name string) bool { return ix.builtin[NormalizeName(name)] }

// Module reads one module's .modinfo.
func (ix *Index) Module(name string) (*Module, error) {
	name = NormalizeName(name)
	if m, ok := ix.cache[name]; ok {
		return m, nil
	}
	rel, ok := ix.paths[name]
	if !ok {
		if c, ok := ix.compressed[name]; ok {
			return nil, fmt.Errorf("module %s: %s: %w (this kernel ships compressed modules; the initrd builder handles plain .ko only)", name, c, ErrCompressedModule)
		}
		return nil, fmt.Errorf("module %s: %w in %s", name, ErrNoModule, ix.dir)
	}
	info, err := readModinfo(filepath.Join(ix.dir, filepath.FromSlash(rel)))
	if err != nil {
		return nil, fmt.Errorf("module %s (%s): %w", name, rel, err)
	}
	if n := info.first("name"); n != "" && n != name {
		return nil, fmt.Errorf("module %s (%s): .modinfo name is %q", name, rel, n)
	}
	if vm := info.first("vermagic"); ix.release != "" && !strings.HasPrefix(vm, ix.release+" ") {
		return nil, fmt.Errorf("module %s (%s): vermagic %q does not match kernel release %s", name, rel, vm, ix.release)
	}
	m := &Module{Name: name, Path: rel}
	if deps := info.first("depends"); deps != "" {
		for _, d := range strings.Split(deps, ",") {
			if d = strings.TrimSpace(d); d != "" {
				m.Depends = append(m.Depends, NormalizeName(d))
			}
		}
	}
	ix.cache[name] = m
	return m, nil
}

// Resolution is the outcome of Resolve.
type Resolution struct {
	// Order lists the modules to load, every module after all of its dependencies.
	Order []*Module
	// Builtin lists requested modules that are built into the kernel (nothing to load).
	Builtin []string
	// Absent lists optional modules the kernel does not have.
	Absent []string
}

// Resolve computes the load order of the required and optional modules and everything they
// depend on. A required module that is neither a module nor built in is an error, as is a
// missing dependency. The order is deterministic: depth-first, dependencies in .modinfo order,
// roots in the order given.
func (ix *Index) Resolve(required, optional []string) (*Resolution, error) {
	r := &Resolution{}
	state := map[string]int{} // 0 unseen, 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module %s: %w: %s", name, ErrDependencyCycle, strings.Join(append(chain, name), " → "))
		case 2:
			return nil
		}
		if ix.Builtin(name) {
			state[name] = 2
			return nil
		}
		m, err := ix.Module(name)
		if err != nil {
			if len(chain) > 0 {
				return fmt.Errorf("dependency of %s: %w", strings.Join(chain, " → "), err)
			}
			return err
		}
		state[name] = 1
		for _, d := range m.Depends {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		r.Order = append(r.Order, m)
		return nil
	}
	seen := map[string]bool{}
	for i, list := range [][]string{required, optional} {
		for _, name := range list {
			name = NormalizeName(name)
			if seen[name] {
				continue
			}
			seen[name] = true
			if ix.Builtin(name) {
				r.Builtin = append(r.Builtin, name)
				continue
			}
			if i == 1 {
				if _, ok := ix.paths[name]; !ok {
					if _, ok := ix.compressed[name]; !ok {
						r.Absent = append(r.Absent, name)
						continue
					}
				}
			}
			if err := visit(name, nil); err != nil {
				return nil, err
			}
		}
	}
	sort.Strings(r.Builtin)
	return r, nil
}

// LoadOrder renders the load-order file the guest's agent/kmod reads: one module path
// (relative to lib/modules/<release>) per line, dependencies first.
func (r *Resolution) LoadOrder() []byte {
	var b bytes.Buffer
	for _, m := range r.Order {
		b.WriteString(m.Path)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// Modinfo is the parsed .modinfo section: key → values in order.
type Modinfo map[string][]string

func (m Modinfo) first(k string) string {
	if v := m[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func readModinfo(file string) (Modinfo, error) {
	f, err := elf.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, errors.New("no .modinfo section: not a kernel module")
	}
	data, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf(".modinfo: %w", err)
	}
	return ParseModinfo(data)
}

// ParseModinfo parses the contents of a module's .modinfo section: NUL-separated key=value
// strings (keys may repeat, e.g. alias). Padding NULs are skipped.
func ParseModinfo(data []byte) (Modinfo, error) {
	m := Modinfo{}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if len(kv) == 0 {
			continue
		}
		k, v, ok := bytes.Cut(kv, []byte("="))
		if !ok || len(k) == 0 {
			return nil, fmt.Errorf(".modinfo: entry %q is not key=value", kv)
		}
		m[string(k)] = append(m[string(k)], string(v))
	}
	return m, nil
}
