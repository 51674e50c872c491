package installer

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	shimconfig "github.com/sealpod/sealpod/runtime-shim/config"
)

// countingRestarter records restarts; it stands in for systemctl in unit tests (the real
// containerd restart is exercised in containerd_test.go).
type countingRestarter struct{ n int }

func (c *countingRestarter) Restart(context.Context) error { c.n++; return nil }

// recordingLabeler records label calls.
type recordingLabeler struct{ calls []string }

// SetTEELabels records "set t1,t2" (or "remove" for none).
func (r *recordingLabeler) SetTEELabels(_ context.Context, tees []TEE) error {
	if len(tees) == 0 {
		r.calls = append(r.calls, "remove")
		return nil
	}
	s := make([]string, len(tees))
	for i, t := range tees {
		s[i] = string(t)
	}
	r.calls = append(r.calls, "set "+strings.Join(s, ","))
	return nil
}

func writeShim(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), ShimBinaryName)
	if err := os.WriteFile(p, []byte(content), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func listTree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		st, _ := d.Info()
		rel, _ := filepath.Rel(root, p)
		out[rel] = st.Mode().String() + " " + string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestInstallUninstallRoundTrip(t *testing.T) {
	cases := configCases(t)
	cases = append(cases, "") // no config file at all
	for _, in := range cases {
		name := "no-file"
		if in != "" {
			name = strings.TrimSuffix(filepath.Base(in), ".toml")
		}
		t.Run(name, func(t *testing.T) {
			host := t.TempDir()
			cfgPath := filepath.Join(host, "etc/containerd/config.toml")
			var orig []byte
			if in != "" {
				var err error
				if orig, err = os.ReadFile(in); err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(filepath.Dir(cfgPath), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(cfgPath, orig, 0o640); err != nil {
					t.Fatal(err)
				}
			}
			before := listTree(t, host)
			rs, lb := &countingRestarter{}, &recordingLabeler{}
			keySrc := filepath.Join(t.TempDir(), "vcek.pem")
			os.WriteFile(keySrc, []byte("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n"), 0o600)
			opts := Options{
				HostRoot:   host,
				ShimSource: writeShim(t, "#!/bin/sh\necho shim v1\n"),
				ShimConfig: &ShimNodeConfig{SimKeySource: keySrc},
				RemoveShim: true,
				Restarter:  rs,
				TEEs:       []TEE{TEESim},
				Labeler:    lb,
			}
			res, err := Install(context.Background(), opts)
			if err != nil {
				t.Fatalf("Install: %v", err)
			}
			if !res.ConfigChanged || !res.ShimChanged || !res.ShimConfigChanged || !res.Restarted || !res.Labeled || !res.BackupWritten || rs.n != 1 {
				t.Fatalf("first Install result %+v, restarts %d", res, rs.n)
			}
			got, err := os.ReadFile(cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			want, err := AddRuntime(orig, RuntimeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("installed config differs from AddRuntime's:\n%s", got)
			}
			if in != "" {
				golden, err := os.ReadFile(strings.TrimSuffix(in, ".toml") + ".golden")
				if err != nil || !bytes.Equal(got, golden) {
					t.Fatalf("installed config differs from golden (%v)", err)
				}
				if st, _ := os.Stat(cfgPath); st.Mode().Perm() != 0o640 {
					t.Fatalf("config mode changed to %v", st.Mode())
				}
				bak, err := os.ReadFile(cfgPath + BackupSuffix)
				if err != nil || !bytes.Equal(bak, orig) {
					t.Fatalf("backup: %v", err)
				}
			} else if _, err := os.Stat(cfgPath + BackupSuffix + AbsentSuffix); err != nil {
				t.Fatalf("no-config marker: %v", err)
			}
			shim := filepath.Join(host, "usr/local/bin", ShimBinaryName)
			if st, err := os.Stat(shim); err != nil || st.Mode().Perm() != 0o755 {
				t.Fatalf("shim: %v %v", st, err)
			}

			sc, err := shimconfig.Load(filepath.Join(host, shimconfig.DefaultPath))
			if err != nil || !sc.Offer(TEESim) || len(sc.Offers()) != 1 || sc.SimKey != DefaultSimKeyPath {
				t.Fatalf("shim config %+v: %v", sc, err)
			}
			if st, err := os.Stat(filepath.Join(host, DefaultSimKeyPath)); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("sim key on host: %v %v", st, err)
			}

			// Second install: nothing changes, no restart.
			installed := listTree(t, host)
			res2, err := Install(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			if res2.ConfigChanged || res2.ShimChanged || res2.ShimConfigChanged || res2.Restarted || res2.BackupWritten || rs.n != 1 {
				t.Fatalf("second Install changed something: %+v", res2)
			}
			if after := listTree(t, host); !equalMaps(after, installed) {
				t.Fatalf("second Install changed files")
			}

			// Uninstall: the host is exactly as before.
			res3, err := Uninstall(context.Background(), opts)
			if err != nil {
				t.Fatalf("Uninstall: %v", err)
			}
			if !res3.ConfigChanged || !res3.Restored || !res3.Restarted || !res3.ShimChanged || rs.n != 2 {
				t.Fatalf("Uninstall result %+v", res3)
			}
			after := listTree(t, host)
			if !equalMaps(after, before) {
				t.Fatalf("host after uninstall:\n%v\nwant\n%v", after, before)
			}
			if want := []string{"set sim", "set sim", "remove"}; strings.Join(lb.calls, ",") != strings.Join(want, ",") {
				t.Fatalf("labeler calls %v", lb.calls)
			}
			// Uninstall again: no-op.
			res4, err := Uninstall(context.Background(), opts)
			if err != nil || res4.ConfigChanged || res4.Restarted || res4.ShimChanged {
				t.Fatalf("second Uninstall: %+v %v", res4, err)
			}
		})
	}
}

// otherCA returns a freshly made self-signed CA certificate (PEM).
func otherCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "other CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestUninstallKeepsLaterEdits(t *testing.T) {
	host := t.TempDir()
	cfgPath := filepath.Join(host, "etc/containerd/config.toml")
	orig, err := os.ReadFile(filepath.Join("testdata", "config", "custom-runc-implicit.toml"))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(cfgPath), 0o755)
	if err := os.WriteFile(cfgPath, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	opts := Options{HostRoot: host}
	if _, err := Install(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	// An admin edits the file after the install (after our block).
	f, _ := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n")
	f.Close()
	res, err := Uninstall(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Restored || !res.ConfigChanged {
		t.Fatalf("Uninstall %+v: must not restore a stale backup over later edits", res)
	}
	got, _ := os.ReadFile(cfgPath)
	if bytes.Contains(got, []byte(RuntimeType)) || bytes.Contains(got, []byte(BeginMarker)) || !bytes.Contains(got, []byte("certs.d")) || !bytes.HasPrefix(got, orig) {
		t.Fatalf("config after uninstall (certs %v prefix %v):\n%q", bytes.Contains(got, []byte("certs.d")), bytes.HasPrefix(got, orig), got)
	}
	if _, err := os.Stat(cfgPath + BackupSuffix); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("backup left behind: %v", err)
	}
}

func TestInstallReplacesStaleBackup(t *testing.T) {
	host := t.TempDir()
	cfgPath := filepath.Join(host, "etc/containerd/config.toml")
	os.MkdirAll(filepath.Dir(cfgPath), 0o755)
	os.WriteFile(cfgPath, []byte("version = 2\n"), 0o644)
	opts := Options{HostRoot: host}
	if _, err := Install(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	// A package upgrade replaces the config wholesale: our block is gone, the backup is stale.
	upgraded := []byte("version = 2\n# new package default\n")
	os.WriteFile(cfgPath, upgraded, 0o644)
	res, err := Install(context.Background(), opts)
	if err != nil || !res.BackupWritten || !res.ConfigChanged {
		t.Fatalf("reinstall %+v %v", res, err)
	}
	if bak, _ := os.ReadFile(cfgPath + BackupSuffix); !bytes.Equal(bak, upgraded) {
		t.Fatalf("backup = %q, want the upgraded config", bak)
	}
	if _, err := Uninstall(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(cfgPath); !bytes.Equal(got, upgraded) {
		t.Fatalf("after uninstall %q", got)
	}
}

func TestInstallRefusesBadConfig(t *testing.T) {
	host := t.TempDir()
	cfgPath := filepath.Join(host, "etc/containerd/config.toml")
	os.MkdirAll(filepath.Dir(cfgPath), 0o755)
	bad := []byte("[plugins.cri]\n") // version 1
	os.WriteFile(cfgPath, bad, 0o644)
	rs := &countingRestarter{}
	_, err := Install(context.Background(), Options{HostRoot: host, Restarter: rs, ShimSource: writeShim(t, "x")})
	if !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("Install = %v", err)
	}
	if got, _ := os.ReadFile(cfgPath); !bytes.Equal(got, bad) || rs.n != 0 {
		t.Fatalf("config touched or containerd restarted after a refused install")
	}
	if _, err := os.Stat(filepath.Join(host, "usr/local/bin", ShimBinaryName)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("shim copied although the config was refused")
	}
	os.WriteFile(filepath.Join(host, "etc/containerd/real.toml"), []byte("version = 2\n"), 0o644)
	os.Symlink("real.toml", filepath.Join(host, "etc/containerd/link.toml"))
	if _, err := Install(context.Background(), Options{HostRoot: host, ConfigPath: "/etc/containerd/link.toml"}); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("symlinked config: %v", err)
	}
	if _, err := Install(context.Background(), Options{HostRoot: host, ConfigPath: "etc/x.toml"}); err == nil {
		t.Fatal("relative config path accepted")
	}
}

func TestInstallUpdatesShim(t *testing.T) {
	host := t.TempDir()
	opts := Options{HostRoot: host, ShimSource: writeShim(t, "v1")}
	if _, err := Install(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	opts.ShimSource = writeShim(t, "v2")
	rs := &countingRestarter{}
	opts.Restarter = rs
	res, err := Install(context.Background(), opts)
	if err != nil || !res.ShimChanged || res.ConfigChanged || rs.n != 0 {
		t.Fatalf("shim update %+v %v (restarts %d)", res, err, rs.n)
	}
	if b, _ := os.ReadFile(res.ShimPath); string(b) != "v2" {
		t.Fatalf("shim = %q", b)
	}
}

func TestCommandRestarter(t *testing.T) {
	dir := t.TempDir()
	mark := filepath.Join(dir, "restarted")
	ok := CommandRestarter{Argv: []string{"sh", "-c", "echo yes > " + mark}}
	if err := ok.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(mark); string(b) != "yes\n" {
		t.Fatalf("command did not run: %q", b)
	}
	fail := CommandRestarter{Argv: []string{"sh", "-c", "echo unit containerd not found >&2; exit 5"}}
	err := fail.Restart(context.Background())
	if err == nil || !strings.Contains(err.Error(), "unit containerd not found") {
		t.Fatalf("failing restart: %v", err)
	}
	if err := (CommandRestarter{}).Restart(context.Background()); err == nil {
		t.Fatal("empty command accepted")
	}
	// systemd detection under a fake host root.
	if _, err := SystemdRestarter(dir, ""); !errors.Is(err, ErrNoRestartMethod) {
		t.Fatalf("SystemdRestarter without systemd: %v", err)
	}
	os.MkdirAll(filepath.Join(dir, "run/systemd/system"), 0o755)
	r, err := SystemdRestarter(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.(CommandRestarter).Argv, " "); got != "nsenter --target 1 --mount -- systemctl restart containerd" {
		t.Fatalf("restart argv %q", got)
	}
}

func TestDetectTEE(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  TEE
	}{
		{"snp", map[string]string{snpHostParam: "Y\n", tdxHostParam: "N\n"}, TEESNP},
		{"tdx", map[string]string{snpHostParam: "N\n", tdxHostParam: "Y\n"}, TEETDX},
		{"pef", map[string]string{pefUltravisor + "/compatible": "ibm,ultravisor"}, TEEPEF},
		{"none", map[string]string{snpHostParam: "N\n"}, ""},
		{"empty host", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for p, c := range tc.files {
				os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755)
				os.WriteFile(filepath.Join(root, p), []byte(c), 0o644)
			}
			got, err := DetectTEE(root)
			if tc.want == "" {
				if !errors.Is(err, ErrNoTEE) || got != "" {
					t.Fatalf("DetectTEE = %q, %v; want ErrNoTEE", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("DetectTEE = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	for _, s := range []string{"snp", "tdx", "pef", "sim"} {
		if _, err := ParseTEE(s); err != nil {
			t.Errorf("ParseTEE(%q): %v", s, err)
		}
	}
	if _, err := ParseTEE("sev"); err == nil {
		t.Error("ParseTEE accepted sev")
	}
}

func TestKubeNodeLabeler(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	labels := map[string]string{"kubernetes.io/hostname": "node-a"}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Method != http.MethodPatch || r.URL.Path != "/api/v1/nodes/node-a" {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, `{"kind":"Status","reason":"Unauthorized"}`, http.StatusUnauthorized)
			return
		}
		if r.Header.Get("Content-Type") != "application/merge-patch+json" {
			http.Error(w, "unsupported media type", http.StatusUnsupportedMediaType)
			return
		}
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		// Apply the merge patch to metadata.labels like the API server does.
		var patch struct {
			Metadata struct {
				Labels map[string]*string `json:"labels"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(b, &patch); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for k, v := range patch.Metadata.Labels {
			if v == nil {
				delete(labels, k)
			} else {
				labels[k] = *v
			}
		}
		json.NewEncoder(w).Encode(map[string]any{"kind": "Node", "metadata": map[string]any{"name": "node-a", "labels": labels}})
	}))
	defer srv.Close()
	if !strings.HasPrefix(srv.Listener.Addr().String(), "127.0.0.1:") {
		t.Fatalf("test server on %s", srv.Listener.Addr())
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})

	k := &KubeNodeLabeler{Server: srv.URL, Token: "tok", CAPEM: caPEM, NodeName: "node-a"}
	labels["sealpod.io/tee"] = "snp" // an earlier installer's single label: removed
	steps := []struct {
		tees []TEE
		want map[string]string
	}{
		{[]TEE{TEESNP}, map[string]string{"kubernetes.io/hostname": "node-a", "sealpod.io/tee.snp": "true"}},
		{[]TEE{TEESim, TEESimTDX}, map[string]string{"kubernetes.io/hostname": "node-a", "sealpod.io/tee.sim": "true", "sealpod.io/tee.sim-tdx": "true"}},
		{[]TEE{TEESimTDX}, map[string]string{"kubernetes.io/hostname": "node-a", "sealpod.io/tee.sim-tdx": "true"}},
		{nil, map[string]string{"kubernetes.io/hostname": "node-a"}},
	}
	for i, st := range steps {
		if err := k.SetTEELabels(context.Background(), st.tees); err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(labels, st.want) {
			t.Fatalf("step %d (%v): labels %v, want %v\npatch %s", i, st.tees, labels, st.want, bodies[len(bodies)-1])
		}
	}
	// One merge patch naming every known TEE's label and the legacy one.
	want := `{"metadata":{"labels":{"sealpod.io/tee":null,"sealpod.io/tee.pef":null,"sealpod.io/tee.sim":"true","sealpod.io/tee.sim-pef":null,"sealpod.io/tee.sim-tdx":"true","sealpod.io/tee.snp":null,"sealpod.io/tee.tdx":null}}}`
	if len(bodies) != len(steps) || bodies[1] != want {
		t.Fatalf("patch bodies %q\nwant [1] %s", bodies, want)
	}
	// Wrong token: the API's refusal is surfaced.
	bad := &KubeNodeLabeler{Server: srv.URL, Token: "nope", CAPEM: caPEM, NodeName: "node-a"}
	if err := bad.SetTEELabels(context.Background(), []TEE{TEESNP}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("unauthorized patch: %v", err)
	}
	// A CA the server's certificate does not chain to is refused.
	wrongCA := &KubeNodeLabeler{Server: srv.URL, Token: "tok", CAPEM: otherCA(t), NodeName: "node-a"}
	if err := wrongCA.SetTEELabels(context.Background(), []TEE{TEESNP}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted server accepted: %v", err)
	}
	n := len(bodies)
	if err := k.SetTEELabels(context.Background(), []TEE{TEESim, "sev"}); err == nil || len(bodies) != n {
		t.Fatalf("invalid TEE label accepted (%v) or a patch sent", err)
	}
}

func TestShimConfigErrors(t *testing.T) {
	key := filepath.Join(t.TempDir(), "k.pem")
	os.WriteFile(key, []byte("-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----\n"), 0o600)
	notKey := filepath.Join(t.TempDir(), "cert.pem")
	os.WriteFile(notKey, []byte("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"), 0o644)
	tests := []struct {
		name string
		tee  TEE
		sc   ShimNodeConfig
	}{
		{"sim key on snp", TEESNP, ShimNodeConfig{SimKeySource: key}},
		{"sim without key", TEESim, ShimNodeConfig{}},
		{"not a private key", TEESim, ShimNodeConfig{SimKeySource: notKey}},
		{"missing key file", TEESim, ShimNodeConfig{SimKeySource: key + ".missing"}},
		{"tee mismatch", TEESim, ShimNodeConfig{Config: shimconfig.Config{TEE: "snp"}}},
		{"bad accel", TEESNP, ShimNodeConfig{Config: shimconfig.Config{Accel: "hvf"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			host := t.TempDir()
			sc := tc.sc
			rs := &countingRestarter{}
			_, err := Install(context.Background(), Options{HostRoot: host, TEEs: []TEE{tc.tee}, ShimConfig: &sc, Restarter: rs})
			if err == nil {
				t.Fatal("Install accepted a bad shim config")
			}
			if _, err := os.Stat(filepath.Join(host, "etc/containerd/config.toml")); !errors.Is(err, fs.ErrNotExist) || rs.n != 0 {
				t.Fatalf("containerd config written or restarted after a shim config error")
			}
		})
	}
}

// failingRestarter fails its first n restarts.
type failingRestarter struct{ fail, calls int }

func (f *failingRestarter) Restart(context.Context) error {
	f.calls++
	if f.calls <= f.fail {
		return errors.New("systemctl: Job for containerd.service failed")
	}
	return nil
}

func TestRestartRetriedAfterFailure(t *testing.T) {
	host := t.TempDir()
	rs := &failingRestarter{fail: 1}
	opts := Options{HostRoot: host, Restarter: rs}
	if _, err := Install(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "will retry") {
		t.Fatalf("first Install: %v", err)
	}
	// The config is written; the retry must still restart containerd.
	res, err := Install(context.Background(), opts)
	if err != nil || res.ConfigChanged || !res.Restarted || rs.calls != 2 {
		t.Fatalf("retry %+v %v, restarts %d", res, err, rs.calls)
	}
	res, err = Install(context.Background(), opts)
	if err != nil || res.Restarted || rs.calls != 2 {
		t.Fatalf("third Install restarted again: %+v %v", res, err)
	}
	rs.fail, rs.calls = 1, 0
	if _, err := Uninstall(context.Background(), opts); err == nil {
		t.Fatal("Uninstall ignored a failed restart")
	}
	res, err = Uninstall(context.Background(), opts)
	if err != nil || !res.Restarted || rs.calls != 2 {
		t.Fatalf("Uninstall retry %+v %v", res, err)
	}
	if left := listTree(t, host); len(left) != 0 {
		t.Fatalf("files left after uninstall: %v", left)
	}
}

// The simulated VCEK key goes beside the node config when the config is written elsewhere.
func TestSimKeyBesideNodeConfig(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(src, []byte("-----BEGIN SEALPOD SIM VCEK PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{"", DefaultSimKeyPath},
		{"/srv/node/sealpod/shim.json", "/srv/node/sealpod/sim-vcek.pem"},
	} {
		r := resolved{Options: Options{TEEs: []TEE{TEESim}, HostRoot: dir, ShimConfig: &ShimNodeConfig{SimKeySource: src, Path: tc.path}}}
		p, err := prepareShimConfig(r)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.keys) != 1 || p.keys[0].path != filepath.Join(dir, tc.want) || !bytes.Contains(p.data, []byte(`"simKey": "`+tc.want+`"`)) {
			t.Errorf("path %q: keys %v, config %s", tc.path, p.keys, p.data)
		}
	}
}

// Issue 14 item 1: the installer writes the TEEs the node offers, each simulated TEE's key
// beside the node config, and SNP's cbitpos from the host's CPUID.
func TestShimConfigTEEs(t *testing.T) {
	dir := t.TempDir()
	simKey, tdxKey := filepath.Join(dir, "vcek.pem"), filepath.Join(dir, "pck.pem")
	for p, data := range map[string]string{simKey: "-----BEGIN SEALPOD SIM VCEK PRIVATE KEY-----\n", tdxKey: "-----BEGIN EC PRIVATE KEY-----\n"} {
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	milan := fakeCPUID{0x80000000: {0x80000028, 0, 0, 0}, 0x8000001f: {0x1003f, 0x16f, 0, 0}} // SNP, cbitpos 47
	tests := []struct {
		name    string
		tee     TEE
		sc      ShimNodeConfig
		want    []string // substrings of the written config
		keys    []string // host paths of the keys written
		wantErr string
	}{
		{"single tee written as tees", TEESim, ShimNodeConfig{SimKeySource: simKey}, []string{`"tees": [`, `"sim"`}, []string{DefaultSimKeyPath}, ""},
		{"sim and sim-tdx", TEESim, ShimNodeConfig{Config: shimconfig.Config{TEEs: []string{"sim", "sim-tdx"}}, SimKeySource: simKey, SimTDXKeySource: tdxKey},
			[]string{`"sim-tdx"`, `"simTDXKey": "` + DefaultSimTDXKeyPath + `"`}, []string{DefaultSimKeyPath, DefaultSimTDXKeyPath}, ""},
		{"sim-tdx key without sim-tdx", TEESim, ShimNodeConfig{SimKeySource: simKey, SimTDXKeySource: tdxKey}, nil, nil, "only for tee sim-tdx"},
		{"tees without the node's tee", TEESim, ShimNodeConfig{Config: shimconfig.Config{TEEs: []string{"sim-tdx"}}, SimTDXKeySource: tdxKey}, nil, nil, "do not include"},
		{"snp cbitpos from CPUID", TEESNP, ShimNodeConfig{CPUID: milan}, []string{`"snpCBitPos": 47`, `"snpReducedPhysBits": 1`, `"accel": "kvm"`}, nil, ""},
		{"snp cbitpos given", TEESNP, ShimNodeConfig{Config: shimconfig.Config{SNPCBitPos: 51}, CPUID: milan}, []string{`"snpCBitPos": 51`}, nil, ""},
		{"snp without CPUID", TEESNP, ShimNodeConfig{CPUID: fakeCPUID{}}, []string{`"tees": [`}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sc := tc.sc
			if tc.tee == TEESNP {
				sc.Config.Accel = "kvm"
			}
			r := resolved{Options: Options{TEEs: []TEE{tc.tee}, HostRoot: dir, ShimConfig: &sc}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			p, err := prepareShimConfig(r)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("prepareShimConfig: %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !bytes.Contains(p.data, []byte(w)) {
					t.Errorf("config lacks %s:\n%s", w, p.data)
				}
			}
			if bytes.Contains(p.data, []byte(`"tee":`)) {
				t.Errorf("config written with the old single tee:\n%s", p.data)
			}
			var got []string
			for _, k := range p.keys {
				got = append(got, strings.TrimPrefix(k.path, dir))
			}
			if !slices.Equal(got, tc.keys) {
				t.Errorf("keys written %v, want %v", got, tc.keys)
			}
		})
	}
}
