package containers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

func TestCheckHostFiles(t *testing.T) {
	ok := func(p string) HostFile { return HostFile{Path: p, Mode: 0o644, Data: []byte("x")} }
	many := make([]HostFile, api.MaxHostFiles+1)
	for i := range many {
		many[i] = ok(fmt.Sprintf("f%d", i))
	}
	for _, tc := range []struct {
		name  string
		files []HostFile
		want  string // "" = accepted
	}{
		{name: "token, CA and nested", files: []HostFile{ok("token"), ok("ca.crt"), ok("a/b/c"), ok("a/d")}},
		{name: "empty volume", files: nil},
		{name: "absolute", files: []HostFile{ok("/etc/passwd")}, want: "not relative"},
		{name: "dot-dot", files: []HostFile{ok("a/../../b")}, want: "not relative and clean"},
		{name: "bare dot-dot", files: []HostFile{ok("..")}, want: "component"},
		{name: "layout name ..data", files: []HostFile{ok("..data")}, want: "component"},
		{name: "component starting with ..", files: []HostFile{ok("a/..2024_01")}, want: "component"},
		{name: "not clean", files: []HostFile{ok("a//b")}, want: "not relative and clean"},
		{name: "trailing slash", files: []HostFile{ok("a/")}, want: "not relative and clean"},
		{name: "dot", files: []HostFile{ok(".")}, want: "component"},
		{name: "empty path", files: []HostFile{ok("")}, want: "empty"},
		{name: "NUL", files: []HostFile{ok("a\x00b")}, want: "NUL"},
		{name: "too long", files: []HostFile{ok(strings.Repeat("a/", api.MaxHostFilePath/2) + "b")}, want: "too long"},
		{name: "long component", files: []HostFile{ok(strings.Repeat("a", 256))}, want: "255"},
		{name: "setuid mode", files: []HostFile{{Path: "x", Mode: 0o4755}}, want: "mode"},
		{name: "duplicate", files: []HostFile{ok("x"), ok("x")}, want: "twice"},
		{name: "file then its child", files: []HostFile{ok("a"), ok("a/b")}, want: "parent is a file"},
		{name: "child then its parent as file", files: []HostFile{ok("a/b"), ok("a")}, want: "also a directory"},
		{name: "too many files", files: many, want: "files (max"},
		{name: "too many bytes", files: []HostFile{{Path: "big", Data: make([]byte, api.MaxHostFilesBytes+1)}}, want: "bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckHostFiles(tc.files)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrHostFiles) {
				t.Fatalf("CheckHostFiles: %v, want ErrHostFiles mentioning %q", err, tc.want)
			}
		})
	}
}

// hostFilesPod is a pod with a host-provided volume "creds", the service-account volume
// "sa-token" and a tmpfs "cache", each a plain directory (no mounts).
func hostFilesPod(t *testing.T) *pod {
	t.Helper()
	s := &spec.Spec{Volumes: []spec.Volume{
		{Name: "creds", Kind: spec.VolumeHostObject, Objects: []spec.ObjectRef{{Kind: "Secret", Name: "db"}}},
		{Name: "sa-token", Kind: spec.VolumeHostObject, Source: spec.HostServiceAccountSource},
		{Name: "cache", Kind: spec.VolumeTmpfs},
	}}
	p := &pod{spec: s, volumes: map[string]podVolume{}}
	for _, v := range s.Volumes {
		p.volumes[v.Name] = podVolume{kind: v.Kind, path: t.TempDir()}
	}
	return p
}

// readTree returns every regular file reachable from root through its top-level entries (as
// a container sees the volume), keyed by path.
func readTree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		top := filepath.Join(root, e.Name())
		err := filepath.WalkDir(top+"/", func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, filepath.Clean(p))
			out[rel] = string(b)
			return nil
		})
		if err != nil {
			// a top-level file: WalkDir of "name/" fails with ENOTDIR
			b, rerr := os.ReadFile(top)
			if rerr != nil {
				t.Fatal(rerr)
			}
			out[e.Name()] = string(b)
		}
	}
	return out
}

// The kubelet's atomic-writer layout inside the guest: each update replaces the whole set
// (removed keys disappear, rotated values change), through ..data, and leaves no old
// generation behind; modes are kept; the service-account volume is found under the name
// admission gave it; other volumes are refused.
func TestUpdateHostFiles(t *testing.T) {
	p := hostFilesPod(t)
	m := &Manager{pod: p}
	root := p.volumes["creds"].path
	steps := []struct {
		files []HostFile
		want  map[string]string
	}{
		{[]HostFile{{Path: "password", Mode: 0o400, Data: []byte("v1")}, {Path: "tls/cert.pem", Mode: 0o644, Data: []byte("C1")}},
			map[string]string{"password": "v1", "tls/cert.pem": "C1"}},
		{[]HostFile{{Path: "password", Mode: 0o400, Data: []byte("v2")}},
			map[string]string{"password": "v2"}},
		{nil, map[string]string{}},
	}
	for i, st := range steps {
		if err := m.UpdateHostFiles("creds", st.files); err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
		got := readTree(t, root)
		if len(got) != len(st.want) {
			t.Fatalf("update %d: files %v, want %v", i, got, st.want)
		}
		for k, v := range st.want {
			if got[k] != v {
				t.Errorf("update %d: %s = %q, want %q", i, k, got[k], v)
			}
		}
		ents, _ := os.ReadDir(root)
		gens := 0
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "..") && e.Name() != "..data" {
				gens++
			}
		}
		if gens != 1 {
			t.Errorf("update %d: %d generation directories, want 1 (%v)", i, gens, ents)
		}
	}
	if err := m.UpdateHostFiles("creds", []HostFile{{Path: "k", Mode: 0o440, Data: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(root, "k")); err != nil || fi.Mode().Perm() != 0o440 {
		t.Errorf("mode of k: %v %v, want 0440", fi, err)
	}
	if err := m.UpdateHostFiles("kube-api-access-x7k2p", []HostFile{{Path: "token", Mode: 0o644, Data: []byte("jwt")}}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(p.volumes["sa-token"].path, "token")); err != nil || string(b) != "jwt" {
		t.Errorf("service-account token: %q %v", b, err)
	}
	for _, name := range []string{"cache", "nope", "kube-api-access-TOOLONG"} {
		if err := m.UpdateHostFiles(name, nil); !errors.Is(err, ErrNotHostVolume) {
			t.Errorf("UpdateHostFiles(%s): %v, want ErrNotHostVolume", name, err)
		}
	}
	if err := m.UpdateHostFiles("creds", []HostFile{{Path: "../../etc/passwd", Data: []byte("x")}}); !errors.Is(err, ErrHostFiles) {
		t.Errorf("escaping path: %v, want ErrHostFiles", err)
	}
	if err := (&Manager{}).UpdateHostFiles("creds", nil); !errors.Is(err, ErrNoPod) {
		t.Errorf("no pod: %v, want ErrNoPod", err)
	}
}

// FuzzCheckHostFiles: whatever passes the check is written inside the volume root and
// nowhere else.
func FuzzCheckHostFiles(f *testing.F) {
	for _, s := range []string{"token", "a/b", "../x", "..data", "a/./b", "/abs", "a\x00"} {
		f.Add(s, "other", uint32(0o644))
	}
	f.Fuzz(func(t *testing.T, p1, p2 string, mode uint32) {
		files := []HostFile{{Path: p1, Mode: mode, Data: []byte("1")}, {Path: p2, Mode: 0o644, Data: []byte("2")}}
		if CheckHostFiles(files) != nil {
			return
		}
		parent := t.TempDir()
		root := filepath.Join(parent, "root")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := writeAtomic(root, 1, files); err != nil {
			t.Fatalf("writeAtomic(%q, %q): %v", p1, p2, err)
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 1 {
			t.Fatalf("%q, %q: wrote beside the root: %v", p1, p2, ents)
		}
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(root, f.Path))
			if err != nil || string(b) != string(f.Data) {
				t.Fatalf("%q: %q %v", f.Path, b, err)
			}
		}
	})
}

// Host-provided values reach a container: a host-provided volume mounted read-only with the
// files of the last update, and Secret keys from the host's environment by variable name
// (optional ones skipped when absent, required ones refused, never substituted into argv).
func TestHostProvidedInContainer(t *testing.T) {
	reg := newTestRegistry(t)
	tok := spec.EnvVar{Name: "TOKEN", FromHost: spec.HostSecretKeyRef + "api/token"}
	opt := spec.EnvVar{Name: "MAYBE", FromHost: spec.HostConfigMapKeyRef + "cfg/maybe", Optional: true}
	mnt := []spec.Mount{{Volume: "creds", Path: "/creds"}}
	ctrs := []spec.Container{
		{Name: "files", Command: []string{"sh", "-c", `cat /creds/password /creds/tls/ca.crt; echo x > /creds/new 2>/dev/null && echo WRITABLE; ls -a /creds | tr '\n' ' '`}, Mounts: mnt},
		{Name: "env", Command: []string{"sh", "-c", `echo "$TOKEN|${MAYBE-unset}"`}, Env: []spec.EnvVar{tok, opt}},
		{Name: "required", Command: []string{"true"}, Env: []spec.EnvVar{tok}},
		{Name: "argv", Command: []string{"echo", "$(TOKEN)"}, Env: []spec.EnvVar{tok}},
		{Name: "envfrom", Command: []string{"sh", "-c", `echo "$API_USER|${API_OTHER-unset}|$K|${SEALPOD_ENVFROM_0_API_USER-untagged}|$LATER"`}, Env: []spec.EnvVar{
			{FromHost: spec.HostSecretRef + "api", Prefix: "API_"}, {FromHost: spec.HostConfigMapRef + "cm"}, {Name: "K", Value: "sealed-wins"}, {Name: "LATER", Value: "$(API_USER)"}}},
	}
	for i := range ctrs {
		ctrs[i].Image = reg.ref
	}
	f := startSpec(t, &spec.Spec{Containers: ctrs, Volumes: []spec.Volume{
		{Name: "creds", Kind: spec.VolumeHostObject, Objects: []spec.ObjectRef{{Kind: "Secret", Name: "db"}}},
	}}, nil, Options{InsecureRegistries: []string{reg.Host}})
	for _, files := range [][]HostFile{
		{{Path: "password", Mode: 0o644, Data: []byte("old\n")}},
		{{Path: "password", Mode: 0o644, Data: []byte("rotated\n")}, {Path: "tls/ca.crt", Mode: 0o644, Data: []byte("CA\n")}},
	} {
		if err := f.m.UpdateHostFiles("creds", files); err != nil {
			t.Fatal(err)
		}
	}
	run := func(t *testing.T, name string, env map[string]string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c, err := f.m.CreateWith(ctx, name, CreateOptions{HostEnv: env})
		if err != nil {
			return "", err
		}
		out := collect(c.Stdout())
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		return out.wait(t), nil
	}
	hostEnv := map[string]string{"TOKEN": "t0k$(HOME)", "PATH": "/evil"}
	if out, err := run(t, "files", nil); err != nil || out != "rotated\nCA\n. .. ..2 ..data password tls " {
		t.Errorf("files: %q %v", out, err)
	}
	if out, err := run(t, "env", hostEnv); err != nil || out != "t0k$(HOME)|unset\n" {
		t.Errorf("env: %q %v", out, err)
	}
	// envFrom: only the variables of each tagged source, without the tag; a sealed variable
	// defined later wins; host values are never expanded but may be expanded into later ones,
	// as in Kubernetes.
	fromEnv := map[string]string{"SEALPOD_ENVFROM_0_API_USER": "u", "API_OTHER": "o", "SEALPOD_ENVFROM_1_K": "host", "SEALPOD_ENVFROM_1_C": "c"}
	if out, err := run(t, "envfrom", fromEnv); err != nil || out != "u|unset|sealed-wins|untagged|u\n" {
		t.Errorf("envfrom: %q %v", out, err)
	}
	for name, want := range map[string]error{"required": ErrHostEnv, "argv": ErrInvalid} {
		env := hostEnv
		if name == "required" {
			env = map[string]string{"OTHER": "x"}
		}
		if _, err := run(t, name, env); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
}

// FuzzHostObjectValues: from any host environment, an envFrom source yields only variables
// of its own tag and prefix (tag stripped), and a key reference only its own name.
func FuzzHostObjectValues(f *testing.F) {
	f.Add("SEALPOD_ENVFROM_0_P_K", "v", "P_", "TOKEN", "t")
	f.Add("SEALPOD_ENVFROM_10_K", "v", "", "SEALPOD_ENVFROM_1_X", "x\x00")
	f.Fuzz(func(t *testing.T, k1, v1, prefix, k2, v2 string) {
		hostEnv := map[string]string{k1: v1, k2: v2}
		n := 1
		vars, err := hostObjectValues(spec.EnvVar{FromHost: spec.HostSecretRef + "s", Prefix: prefix}, hostEnv, &n)
		if n != 2 {
			t.Fatalf("envFrom count %d", n)
		}
		if err == nil {
			for _, kv := range vars {
				if hostEnv[spec.HostEnvFromPrefix(1)+kv[0]] != kv[1] || !strings.HasPrefix(kv[0], prefix) || kv[0] == "" || strings.IndexByte(kv[1], 0) >= 0 {
					t.Fatalf("envFrom gave %q from %q", kv, hostEnv)
				}
			}
		}
		vars, err = hostObjectValues(spec.EnvVar{Name: "TOKEN", FromHost: spec.HostSecretKeyRef + "s/k", Optional: true}, hostEnv, &n)
		if err == nil && (len(vars) > 1 || len(vars) == 1 && (vars[0][0] != "TOKEN" || vars[0][1] != hostEnv["TOKEN"])) {
			t.Fatalf("key ref gave %q from %q", vars, hostEnv)
		}
	})
}
