package shim

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/agent/api"
)

// Host-provided volumes (docs/runtime.md, "Host-provided volumes"): the placeholder keeps the
// secret, configMap and projected volumes of objects that were not in the sealing input (and
// the service-account token volume), so the kubelet writes their files on the node into the
// placeholder container's mount sources. The shim reads them — regular files only, bounded,
// through the kubelet's ..data symlink and never following another — and sends each volume
// whole to the agent (UpdateHostFiles) before the first container that mounts it is created,
// then again whenever the content changes (polled: the kubelet rotates service-account tokens
// and updates Secrets in place). The files are host data: the node sees and chooses them.

// hostFilesInterval is how often the shim re-reads host-provided volumes.
const hostFilesInterval = 10 * time.Second

// hostVolumePlugins are the kubelet volume plugin directories whose content is a host-provided
// volume of the sealed spec.
var hostVolumePlugins = []string{"kubernetes.io~secret", "kubernetes.io~configmap", "kubernetes.io~projected"}

// hostFileMounts returns the host-provided volumes a placeholder container mounts: volume name
// → the kubelet's directory of it (…/pods/<uid>/volumes/<plugin>/<name>). A subPath mount
// (…/pods/<uid>/volume-subpaths/<name>/<container>/<index>) names its volume's directory; the
// agent applies the subPath inside the guest.
func hostFileMounts(sp *specs.Spec) map[string]string {
	out := map[string]string{}
	for _, m := range sp.Mounts {
		src := filepath.Clean(m.Source)
		name, plugin := filepath.Base(src), filepath.Base(filepath.Dir(src))
		if filepath.Base(filepath.Dir(filepath.Dir(src))) == "volumes" && isHostVolumePlugin(plugin) {
			out[name] = src
			continue
		}
		// …/pods/<uid>/volume-subpaths/<name>/<container>/<index>
		parts := strings.Split(src, string(filepath.Separator))
		for i := len(parts) - 4; i >= 1; i-- {
			if parts[i] != "volume-subpaths" {
				continue
			}
			podDir := strings.Join(parts[:i], string(filepath.Separator))
			for _, p := range hostVolumePlugins {
				dir := filepath.Join(podDir, "volumes", p, parts[i+1])
				if fi, err := os.Lstat(dir); err == nil && fi.IsDir() {
					out[parts[i+1]] = dir
				}
			}
			break
		}
	}
	return out
}

func isHostVolumePlugin(p string) bool {
	for _, q := range hostVolumePlugins {
		if p == q {
			return true
		}
	}
	return false
}

// errHostFiles marks a host-provided volume the shim refuses to forward (over the limits).
var errHostFiles = errors.New("host-provided volume")

// readHostFiles reads a kubelet volume directory: through dir/..data when it is a symlink to a
// sibling "..<timestamp>" directory (the kubelet's atomic writer), else dir itself minus its
// ".."-prefixed entries. Only regular files are read; symlinks inside are not followed and
// other file types are skipped; at most api.MaxHostFiles files and api.MaxHostFilesBytes
// bytes, or an error. Paths are slash-separated, relative, sorted.
func readHostFiles(dir string) ([]*api.HostFile, error) {
	root := dir
	if t, err := os.Readlink(filepath.Join(dir, "..data")); err == nil {
		if !strings.HasPrefix(t, "..") || strings.ContainsRune(t, '/') || t == ".." {
			return nil, fmt.Errorf("%w %s: ..data points at %.64q, not a sibling ..<timestamp> directory", errHostFiles, dir, t)
		}
		root = filepath.Join(dir, t)
	}
	r, err := os.OpenRoot(root) // no path, symlink or ".." leads out of root
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", errHostFiles, dir, err)
	}
	defer r.Close()
	var out []*api.HostFile
	total := 0
	err = fs.WalkDir(r.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		if strings.HasPrefix(d.Name(), "..") { // the layout's own names (and what the agent refuses)
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil // directories are walked; symlinks, devices, FIFOs and sockets are not read
		}
		if len(out) == api.MaxHostFiles {
			return fmt.Errorf("more than %d files", api.MaxHostFiles)
		}
		data, mode, err := readRegular(r, p, api.MaxHostFilesBytes-total)
		if err != nil {
			return err
		}
		total += len(data)
		out = append(out, &api.HostFile{Path: p, Mode: mode, Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", errHostFiles, dir, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// readRegular reads the regular file p of r, at most max bytes (O_NONBLOCK: a FIFO swapped in
// after the walk does not block; it is refused by its type).
func readRegular(r *os.Root, p string, max int) ([]byte, uint32, error) {
	f, err := r.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%s: not a regular file", p)
	}
	data, err := io.ReadAll(io.LimitReader(f, int64(max)+1))
	if err != nil {
		return nil, 0, err
	}
	if len(data) > max {
		return nil, 0, fmt.Errorf("more than %d bytes", api.MaxHostFilesBytes)
	}
	return data, uint32(fi.Mode().Perm()), nil
}

// sumHostFiles identifies a volume's content (paths, modes, data).
func sumHostFiles(files []*api.HostFile) [32]byte {
	h := sha256.New()
	var n [8]byte
	for _, f := range files {
		for _, b := range [][]byte{[]byte(f.Path), f.Data} {
			binary.BigEndian.PutUint64(n[:], uint64(len(b)))
			h.Write(n[:])
			h.Write(b)
		}
		binary.BigEndian.PutUint32(n[:4], f.Mode)
		h.Write(n[:4])
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// hostFileSync keeps the guest's copies of the pod's host-provided volumes current.
type hostFileSync struct {
	agent    api.AgentService
	log      *slog.Logger
	interval time.Duration

	mu      sync.Mutex
	vols    map[string]*hostVolume // by volume name
	polling bool
}

type hostVolume struct {
	dir     string
	sum     [32]byte
	ignored bool // the guest has no host-provided volume of that name
}

func newHostFileSync(agent api.AgentService, log *slog.Logger, interval time.Duration) *hostFileSync {
	return &hostFileSync{agent: agent, log: log, interval: interval, vols: map[string]*hostVolume{}}
}

// add sends the host-provided volumes sp mounts that the guest does not have yet, and starts
// polling (until ctx ends) on first use. A volume the guest says is not one of its
// host-provided volumes is logged and left alone (the guest decides what it mounts); a volume
// the shim cannot read within the limits fails the container's creation, naming it.
func (h *hostFileSync) add(ctx, pollCtx context.Context, sp *specs.Spec) error {
	mounts := hostFileMounts(sp)
	if h == nil || len(mounts) == 0 {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	names := make([]string, 0, len(mounts))
	for n := range mounts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		if h.vols[name] != nil {
			continue
		}
		v := &hostVolume{dir: mounts[name]}
		if err := h.send(ctx, name, v); err != nil {
			return err
		}
		h.vols[name] = v
	}
	if !h.polling {
		h.polling = true
		go h.poll(pollCtx)
	}
	return nil
}

// send reads v and, if its content changed, sends it (caller holds h.mu). The kubelet may
// swap ..data while the shim reads: a failed read is retried twice.
func (h *hostFileSync) send(ctx context.Context, name string, v *hostVolume) error {
	var files []*api.HostFile
	var err error
	for range 3 {
		if files, err = readHostFiles(v.dir); err == nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("volume %s: %w", name, err)
	}
	sum := sumHostFiles(files)
	if sum == v.sum {
		return nil
	}
	_, err = h.agent.UpdateHostFiles(ctx, &api.UpdateHostFilesRequest{Volume: name, Files: files})
	if st, ok := status.FromError(err); ok && err != nil && st.Code() == codes.InvalidArgument && strings.Contains(st.Message(), api.NotHostVolume) {
		h.log.Warn("host-provided volume not wanted by the guest: not forwarded", "volume", name)
		v.ignored = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("volume %s: the guest refused its host-provided files: %w", name, err)
	}
	v.sum = sum
	h.log.Info("host-provided volume sent to the guest", "volume", name, "files", len(files))
	return nil
}

// poll re-sends changed volumes every interval until ctx ends.
func (h *hostFileSync) poll(ctx context.Context) {
	tick := time.NewTicker(h.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		h.mu.Lock()
		for name, v := range h.vols {
			if v.ignored {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := h.send(sctx, name, v)
			cancel()
			if err != nil && ctx.Err() == nil {
				h.log.Warn("host-provided volume not updated (retried at the next poll)", "volume", name, "err", err)
			}
		}
		h.mu.Unlock()
	}
}

// hostEnv is the placeholder container's environment as the kubelet resolved it, for the
// agent to read host-provided Secret/ConfigMap keys from (CreateContainerRequest.host_env).
// Beyond the agent's limits it is not sent (a container that needs a value then fails to be
// created, naming the variable).
func hostEnv(sp *specs.Spec, log *slog.Logger) []string {
	if sp.Process == nil {
		return nil
	}
	total := 0
	for _, e := range sp.Process.Env {
		total += len(e)
	}
	if len(sp.Process.Env) > api.MaxHostEnv || total > api.MaxHostEnvBytes {
		log.Warn("placeholder environment over the agent's limits: not forwarded", "entries", len(sp.Process.Env), "bytes", total)
		return nil
	}
	return sp.Process.Env
}
