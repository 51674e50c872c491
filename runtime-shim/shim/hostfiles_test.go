package shim

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/agent/api"
)

// kubeletVolume writes files as the kubelet's atomic writer does: dir/..<ts>/<files>,
// dir/..data -> ..<ts>, dir/<top> -> ..data/<top>; a second call rotates to a new
// timestamped directory and removes the old one.
func kubeletVolume(t *testing.T, dir, ts string, files map[string]string) {
	t.Helper()
	gen := filepath.Join(dir, ".."+ts)
	for p, v := range files {
		fp := filepath.Join(gen, p)
		if err := os.MkdirAll(filepath.Dir(fp), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(fp, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(".."+ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for p := range files {
		top, _, _ := strings.Cut(p, "/")
		_ = os.Symlink(filepath.Join("..data", top), filepath.Join(dir, top))
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

func fileMap(files []*api.HostFile) map[string]string {
	m := map[string]string{}
	for _, f := range files {
		m[f.Path] = fmt.Sprintf("%s %o", f.Data, f.Mode)
	}
	return m
}

// The shim reads what the kubelet wrote, through ..data only: nested files with their modes,
// nothing a symlink inside points at (in or out of the volume), no FIFO or other special
// file, nothing of the layout's own names; a ..data that leaves the directory, too many files
// or bytes are errors naming the directory.
func TestReadHostFiles(t *testing.T) {
	dir := t.TempDir()
	kubeletVolume(t, dir, "2026_12_06_07_00_00.1", map[string]string{"token": "jwt-1", "ca.crt": "CA", "nested/a/b": "deep"})
	gen := filepath.Join(dir, "..2026_12_06_07_00_00.1")
	if err := os.Chmod(filepath.Join(gen, "token"), 0o600); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "host-secret")
	if err := os.WriteFile(outside, []byte("HOST"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"abs-link": outside, "up-link": "../../../../" + outside, "in-link": "token", "passwd": "/etc/passwd"} {
		if err := os.Symlink(target, filepath.Join(gen, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mkfifo(filepath.Join(gen, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gen, "..hidden"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := readHostFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"token": "jwt-1 600", "ca.crt": "CA 644", "nested/a/b": "deep 644"}
	if got := fileMap(files); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	if files[0].Path != "ca.crt" || files[2].Path != "token" {
		t.Errorf("not sorted: %v", fileMap(files))
	}

	plain := t.TempDir() // no ..data: the directory itself (e.g. an older layout)
	if err := os.WriteFile(filepath.Join(plain, "k"), []byte("v"), 0o640); err != nil {
		t.Fatal(err)
	}
	if got, err := readHostFiles(plain); err != nil || fmt.Sprint(fileMap(got)) != "map[k:v 640]" {
		t.Errorf("plain dir: %v %v", fileMap(got), err)
	}

	for name, setup := range map[string]func(d string){
		"..data absolute": func(d string) { _ = os.Symlink("/etc", filepath.Join(d, "..data")) },
		"..data upward":   func(d string) { _ = os.Symlink("../..x", filepath.Join(d, "..data")) },
		"..data is ..":    func(d string) { _ = os.Symlink("..", filepath.Join(d, "..data")) },
		"too many files": func(d string) {
			for i := range api.MaxHostFiles + 1 {
				_ = os.WriteFile(filepath.Join(d, fmt.Sprint(i)), nil, 0o644)
			}
		},
		"too many bytes": func(d string) {
			_ = os.WriteFile(filepath.Join(d, "a"), make([]byte, api.MaxHostFilesBytes/2+1), 0o644)
			_ = os.WriteFile(filepath.Join(d, "b"), make([]byte, api.MaxHostFilesBytes/2+1), 0o644)
		},
	} {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			setup(d)
			if _, err := readHostFiles(d); err == nil || !strings.Contains(err.Error(), d) {
				t.Fatalf("readHostFiles: %v, want an error naming %s", err, d)
			}
		})
	}
}

func TestHostFileMounts(t *testing.T) {
	pod := filepath.Join(t.TempDir(), "pods", "uid-1")
	subVol := filepath.Join(pod, "volumes", "kubernetes.io~secret", "sub")
	if err := os.MkdirAll(subVol, 0o755); err != nil {
		t.Fatal(err)
	}
	sp := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/creds", Source: pod + "/volumes/kubernetes.io~secret/creds"},
		{Destination: "/cfg", Source: pod + "/volumes/kubernetes.io~configmap/cfg/"},
		{Destination: "/var/run/secrets/kubernetes.io/serviceaccount", Source: pod + "/volumes/kubernetes.io~projected/kube-api-access-x7k2p"},
		{Destination: "/one", Source: pod + "/volume-subpaths/sub/app/0"},
		{Destination: "/data", Source: pod + "/volumes/kubernetes.io~csi/pvc-1/mount"},
		{Destination: "/host", Source: pod + "/volumes/kubernetes.io~host-path/h"},
		{Destination: "/etc/hosts", Source: pod + "/etc-hosts"},
		{Destination: "/proc", Source: "proc"},
	}}
	got := hostFileMounts(sp)
	want := map[string]string{
		"creds": pod + "/volumes/kubernetes.io~secret/creds", "cfg": pod + "/volumes/kubernetes.io~configmap/cfg",
		"kube-api-access-x7k2p": pod + "/volumes/kubernetes.io~projected/kube-api-access-x7k2p", "sub": subVol,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("hostFileMounts:\n got %v\nwant %v", got, want)
	}
}

// FuzzHostFileMounts: a mount source names a host-provided volume only as the last element
// under volumes/<secret|configmap|projected>/.
func FuzzHostFileMounts(f *testing.F) {
	f.Add("/var/lib/kubelet/pods/u/volumes/kubernetes.io~secret/s")
	f.Add("/var/lib/kubelet/pods/u/volume-subpaths/s/c/0")
	f.Add("volumes/kubernetes.io~projected/..")
	f.Fuzz(func(t *testing.T, src string) {
		for name, dir := range hostFileMounts(&specs.Spec{Mounts: []specs.Mount{{Source: src}}}) {
			if filepath.Base(dir) != name || !isHostVolumePlugin(filepath.Base(filepath.Dir(dir))) || filepath.Base(filepath.Dir(filepath.Dir(dir))) != "volumes" {
				t.Fatalf("%q: volume %q at %q", src, name, dir)
			}
		}
	})
}

// hostFilesAgent records UpdateHostFiles; volumes in refuse get the agent's NotHostVolume.
type hostFilesAgent struct {
	api.AgentService
	mu      sync.Mutex
	updates []string // "volume: path=data,..."
	refuse  map[string]bool
}

func (a *hostFilesAgent) UpdateHostFiles(_ context.Context, r *api.UpdateHostFilesRequest) (*api.Empty, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.refuse[r.Volume] {
		return nil, status.Errorf(codes.InvalidArgument, "update host files %s: %s (details withheld)", r.Volume, api.NotHostVolume)
	}
	var parts []string
	for _, f := range r.Files {
		parts = append(parts, f.Path+"="+string(f.Data))
	}
	a.updates = append(a.updates, r.Volume+": "+strings.Join(parts, ","))
	return &api.Empty{}, nil
}

func (a *hostFilesAgent) seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.updates...)
}

// A host-provided volume is sent once before the first container that mounts it, again only
// when the kubelet changes it (a rotated token arrives at the next poll), never for a volume
// the guest refuses; a volume over the limits fails the container's creation.
func TestHostFileSyncRotation(t *testing.T) {
	pod := filepath.Join(t.TempDir(), "pods", "u")
	tok := filepath.Join(pod, "volumes", "kubernetes.io~projected", "kube-api-access-abcde")
	other := filepath.Join(pod, "volumes", "kubernetes.io~secret", "unwanted")
	for _, d := range []string{tok, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	kubeletVolume(t, tok, "1", map[string]string{"token": "jwt-1", "namespace": "prod"})
	kubeletVolume(t, other, "1", map[string]string{"k": "v"})
	sp := &specs.Spec{Mounts: []specs.Mount{{Source: tok}, {Source: other}}}
	a := &hostFilesAgent{refuse: map[string]bool{"unwanted": true}}
	h := newHostFileSync(a, slog.New(slog.NewTextHandler(io.Discard, nil)), 20*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := h.add(ctx, ctx, sp); err != nil {
		t.Fatal(err)
	}
	if err := h.add(ctx, ctx, sp); err != nil { // a second container mounting the same volumes
		t.Fatal(err)
	}
	first := "kube-api-access-abcde: namespace=prod,token=jwt-1"
	if got := a.seen(); len(got) != 1 || got[0] != first {
		t.Fatalf("updates %q, want [%q]", got, first)
	}
	time.Sleep(100 * time.Millisecond) // polls without changes send nothing
	if got := a.seen(); len(got) != 1 {
		t.Fatalf("unchanged volume re-sent: %q", got)
	}
	kubeletVolume(t, tok, "2", map[string]string{"token": "jwt-2", "namespace": "prod"})
	deadline := time.Now().Add(5 * time.Second)
	for len(a.seen()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := a.seen(); len(got) != 2 || got[1] != "kube-api-access-abcde: namespace=prod,token=jwt-2" {
		t.Fatalf("after rotation: %q", got)
	}

	big := filepath.Join(pod, "volumes", "kubernetes.io~secret", "big")
	if err := os.MkdirAll(big, 0o755); err != nil {
		t.Fatal(err)
	}
	kubeletVolume(t, big, "1", map[string]string{"blob": strings.Repeat("x", api.MaxHostFilesBytes+1)})
	if err := h.add(ctx, ctx, &specs.Spec{Mounts: []specs.Mount{{Source: big}}}); err == nil || !strings.Contains(err.Error(), "volume big") {
		t.Fatalf("oversized volume: %v, want an error naming it", err)
	}
}

func TestHostEnv(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	env := []string{"PATH=/bin", "TOKEN=s3cr=t"}
	if got := hostEnv(&specs.Spec{Process: &specs.Process{Env: env}}, quiet); fmt.Sprint(got) != fmt.Sprint(env) {
		t.Errorf("hostEnv %q", got)
	}
	if got := hostEnv(&specs.Spec{Process: &specs.Process{Env: []string{"A=" + strings.Repeat("x", api.MaxHostEnvBytes)}}}, quiet); got != nil {
		t.Errorf("oversized env forwarded")
	}
	if got := hostEnv(&specs.Spec{}, quiet); got != nil {
		t.Errorf("no process: %q", got)
	}
}
