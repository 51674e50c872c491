package containers

import (
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/errkind"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/internal/lazyregexp"
)

// Host-provided volumes (spec.VolumeHostObject): the files of runtime-created Secrets and
// ConfigMaps, or the projected service-account token, as the kubelet wrote them on the host.
// The shim reads them and sends the whole volume (UpdateHostFiles); the agent checks their
// syntax and writes them into a tmpfs of that volume alone, laid out as the kubelet's atomic
// writer does (..data -> ..<gen>, and a symlink per top-level name to ..data/<name>), so a
// reader sees either the old or the new set, never a mix. Containers mount it read-only.

// Failure kinds of UpdateHostFiles (their texts reach the host).
var (
	ErrHostFiles     error = errkind.New("invalid host-provided files")
	ErrNotHostVolume error = errkind.New(api.NotHostVolume)
)

// HostFile is one file of a host-provided volume: untrusted, not confidential.
type HostFile struct {
	Path string
	Mode uint32
	Data []byte
}

// hostVolumeSize bounds the tmpfs of one host-provided volume: two generations of
// api.MaxHostFilesBytes and their inodes' pages.
const hostVolumeSize = 16 << 20

// ServiceAccountVolumeRe matches the name the ServiceAccount admission plugin gives the
// projected token volume it adds to a pod ("kube-api-access-" and 5 random characters).
var ServiceAccountVolumeRe = lazyregexp.New(`^kube-api-access-[a-z0-9]{5}$`)

// CheckHostFiles validates a whole volume's files by syntax: at most api.MaxHostFiles files
// and api.MaxHostFilesBytes of data; each path relative, clean, at most
// api.MaxHostFilePath bytes, no component "." or ".." or starting with ".." (the layout's
// reserved names), no NUL; permission bits only; no duplicate and no file that is also
// another's directory.
func CheckHostFiles(files []HostFile) error {
	if len(files) > api.MaxHostFiles {
		return fmt.Errorf("%w: %d files (max %d)", ErrHostFiles, len(files), api.MaxHostFiles)
	}
	total := 0
	isFile := map[string]bool{}
	isDir := map[string]bool{}
	for _, f := range files {
		if err := checkHostFilePath(f.Path); err != nil {
			return err
		}
		if f.Mode&^0o777 != 0 {
			return fmt.Errorf("%w: %.128q: mode %#o (only permission bits)", ErrHostFiles, f.Path, f.Mode)
		}
		total += len(f.Data)
		if total > api.MaxHostFilesBytes {
			return fmt.Errorf("%w: more than %d bytes", ErrHostFiles, api.MaxHostFilesBytes)
		}
		if isFile[f.Path] || isDir[f.Path] {
			return fmt.Errorf("%w: %.128q: given twice or also a directory", ErrHostFiles, f.Path)
		}
		isFile[f.Path] = true
		for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
			if isFile[d] {
				return fmt.Errorf("%w: %.128q: parent is a file", ErrHostFiles, f.Path)
			}
			isDir[d] = true
		}
	}
	return nil
}

func checkHostFilePath(p string) error {
	bad := func(why string) error { return fmt.Errorf("%w: path %.128q: %s", ErrHostFiles, p, why) }
	switch {
	case p == "" || len(p) > api.MaxHostFilePath:
		return bad("empty or too long")
	case strings.IndexByte(p, 0) >= 0:
		return bad("NUL")
	case path.IsAbs(p) || path.Clean(p) != p:
		return bad("not relative and clean")
	}
	for c := range strings.SplitSeq(p, "/") {
		if c == "." || strings.HasPrefix(c, "..") || len(c) > 255 {
			return bad("component . or .., or starting with .., or longer than 255 bytes")
		}
	}
	return nil
}

// hostVolume resolves the volume name the host uses to the sealed host-provided volume: the
// same name, or the service-account token volume under the name admission gave it.
func (p *pod) hostVolume(name string) (string, podVolume, error) {
	if v, ok := p.volume(name); ok {
		if v.kind != spec.VolumeHostObject {
			return "", podVolume{}, fmt.Errorf("volume %.64q: %w", name, ErrNotHostVolume)
		}
		return name, v, nil
	}
	if ServiceAccountVolumeRe.MatchString(name) {
		for _, sv := range p.spec.Volumes {
			if sv.Kind == spec.VolumeHostObject && sv.Source == spec.HostServiceAccountSource {
				v, _ := p.volume(sv.Name)
				return sv.Name, v, nil
			}
		}
	}
	return "", podVolume{}, fmt.Errorf("volume %.64q: %w", name, ErrNotHostVolume)
}

// updateHostFiles replaces the content of the host-provided volume name with files.
func (p *pod) updateHostFiles(name string, files []HostFile) error {
	if err := CheckHostFiles(files); err != nil {
		return fmt.Errorf("volume %.64q: %w", name, err)
	}
	sealedName, v, err := p.hostVolume(name)
	if err != nil {
		return err
	}
	p.hostMu.Lock()
	defer p.hostMu.Unlock()
	p.hostGen++
	if err := writeAtomic(v.path, p.hostGen, files); err != nil {
		return fmt.Errorf("volume %s: %w", sealedName, err)
	}
	return nil
}

// writeAtomic writes files into root/..<gen>, points root/..data at it, makes a symlink for
// every top-level name and removes what the previous generation left.
func writeAtomic(root string, gen uint64, files []HostFile) error {
	genDir := ".." + strconv.FormatUint(gen, 10)
	dir := filepath.Join(root, genDir)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	top := map[string]bool{}
	for _, f := range files { // paths are checked: clean, relative, no "..", in a tree of ours
		fp := filepath.Join(dir, f.Path)
		if err := os.MkdirAll(filepath.Dir(fp), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(fp, f.Data, 0o600); err != nil {
			return err
		}
		if err := os.Chmod(fp, os.FileMode(f.Mode&0o777)); err != nil {
			return err
		}
		first, _, _ := strings.Cut(f.Path, "/")
		top[first] = true
	}
	if err := replaceSymlink(root, "..data", genDir); err != nil {
		return err
	}
	for _, n := range slices.Sorted(maps.Keys(top)) {
		want := path.Join("..data", n)
		if got, err := os.Readlink(filepath.Join(root, n)); err == nil && got == want {
			continue
		}
		if err := replaceSymlink(root, n, want); err != nil {
			return err
		}
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, e := range ents {
		switch n := e.Name(); {
		case n == "..data" || n == genDir:
			continue
		case strings.HasPrefix(n, ".."): // older generations (or one a failed update left)
		case top[n]:
			continue
		}
		if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// replaceSymlink atomically makes root/name a symlink to target.
func replaceSymlink(root, name, target string) error {
	tmp := filepath.Join(root, "..tmp-link")
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(root, name))
}

// UpdateHostFiles replaces the content of the host-provided volume name (the host's name for
// it) with files, after checking them (CheckHostFiles).
func (m *Manager) UpdateHostFiles(name string, files []HostFile) error {
	m.mu.Lock()
	p := m.pod
	m.mu.Unlock()
	if p == nil {
		return fmt.Errorf("update host files %s: %w", name, ErrNoPod)
	}
	return p.updateHostFiles(name, files)
}
