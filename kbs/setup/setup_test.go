package setup

import (
	"context"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/kbs/admin"
	"github.com/sealpod/sealpod/kbs/store"
	"github.com/sealpod/sealpod/kbs/store/etcd/etcdtest"
)

func TestInitLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kbs")
	if err := Init(dir, []string{"kbs.example", "127.0.0.1"}, "https://kbs.example:8443"); err != nil {
		t.Fatal(err)
	}
	// Modes: directories 0700, files 0600; no temp leftovers next to dir.
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, _ := d.Info()
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", p, fi.Mode().Perm(), want)
		}
		if strings.Contains(d.Name(), ".tmp-") {
			t.Errorf("temp file left: %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(dir))
	if len(entries) != 1 {
		t.Errorf("parent holds %d entries, want only the state dir", len(entries))
	}
	st, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.StoreKey) != store.KeySize || st.Signer == nil || st.MeshCA == nil || st.AdminCAPool == nil {
		t.Fatalf("incomplete state: %+v", st)
	}
	if !slices.Equal(st.TLSCert.Leaf.DNSNames, []string{"kbs.example"}) || len(st.TLSCert.Leaf.IPAddresses) != 1 {
		t.Errorf("server cert SANs %v %v", st.TLSCert.Leaf.DNSNames, st.TLSCert.Leaf.IPAddresses)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(st.TLSCAPEM)
	if _, err := st.TLSCert.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "kbs.example"}); err != nil {
		t.Errorf("server cert does not verify against the TLS CA: %v", err)
	}
	if sum, err := st.TLSCASHA256(); err != nil || len(sum) != 64 {
		t.Errorf("TLSCASHA256 = %q, %v", sum, err)
	}
	if st.StoreURL != "bolt://"+filepath.Join(dir, DefaultStoreFile) {
		t.Errorf("StoreURL = %s", st.StoreURL)
	}
	// The admin client identity verifies against the admin CA pool and is an admin identity.
	cfg, err := admin.ReadClientConfig(filepath.Join(dir, AdminClientConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.URL != "https://kbs.example:8443" {
		t.Errorf("client config URL %s", cfg.URL)
	}
	cert, _, err := parseCertFile(cfg.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: st.AdminCAPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin client cert: %v", err)
	}
	if err := admin.CheckIdentity(cert); err != nil {
		t.Error(err)
	}
	// The admin client cert must not be accepted as a TLS server or by the TLS CA.
	tlsPool := x509.NewCertPool()
	tlsPool.AppendCertsFromPEM(st.TLSCAPEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: tlsPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("admin client cert verifies against the TLS CA (CAs must be separate)")
	}
	// The store opens with the state's key.
	s, err := OpenStore(st.StoreURL, st.StoreKey)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestInitRefusesOverwrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kbs")
	if err := Init(dir, []string{"localhost"}, ""); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, StoreKeyFile))
	if err := Init(dir, []string{"localhost"}, ""); !errors.Is(err, ErrExists) {
		t.Fatalf("second Init = %v, want ErrExists", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, StoreKeyFile))
	if string(before) != string(after) {
		t.Fatal("second Init changed the store key")
	}
	other := filepath.Join(t.TempDir(), "nonempty")
	os.MkdirAll(other, 0o700)
	os.WriteFile(filepath.Join(other, "x"), nil, 0o600)
	if err := Init(other, []string{"localhost"}, ""); !errors.Is(err, ErrExists) {
		t.Fatalf("Init into non-empty dir = %v, want ErrExists", err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.MkdirAll(empty, 0o700)
	if err := Init(empty, []string{"localhost"}, ""); err != nil {
		t.Fatalf("Init into an empty dir: %v", err)
	}
	if err := Init(filepath.Join(t.TempDir(), "k"), nil, ""); err == nil {
		t.Fatal("Init without hosts succeeded")
	}
	if err := Init(filepath.Join(t.TempDir(), "k"), nil, "http://plain"); err == nil {
		t.Fatal("Init with an http URL succeeded")
	}
}

func TestLoadRefusesLooseModes(t *testing.T) {
	for _, f := range []string{"", StoreKeyFile, SigningKeyFile, MeshInterKeyFile, TLSServerKeyFile} {
		dir := filepath.Join(t.TempDir(), "kbs")
		if err := Init(dir, []string{"localhost"}, ""); err != nil {
			t.Fatal(err)
		}
		mode := fs.FileMode(0o644)
		if f == "" {
			mode = 0o755
		}
		if err := os.Chmod(filepath.Join(dir, f), mode); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "group/others") {
			t.Errorf("Load with %q mode %04o: %v", f, mode, err)
		}
	}
}

func TestOpenStoreURLs(t *testing.T) {
	if _, err := OpenStore("file:///x", make([]byte, 32)); err == nil {
		t.Error("unknown scheme accepted")
	}
	eu, err := ParseEtcdURL("etcd://a:1,b:2/my/prefix")
	if err != nil || !slices.Equal(eu.Endpoints, []string{"http://a:1", "http://b:2"}) || eu.Prefix != "/my/prefix" {
		t.Errorf("ParseEtcdURL = %+v %v", eu, err)
	}
	eu, err = ParseEtcdURL("etcd://[::1]:2379?cacert=/ca.pem&cert=/c.pem&key=/k.pem")
	if err != nil || eu.Endpoints[0] != "https://[::1]:2379" || eu.Prefix != "/sealpod-kbs" || eu.Key != "/k.pem" {
		t.Errorf("ParseEtcdURL TLS = %+v %v", eu, err)
	}
	for _, bad := range []string{"etcd://noport/x", "etcd:///x", "etcd://a:1/x?bogus=1", "etcd://a:1?cert=/c.pem", "etcd://a:1?cacert=/a&cert=/c"} {
		if _, err := ParseEtcdURL(bad); err == nil {
			t.Errorf("ParseEtcdURL(%q) accepted", bad)
		}
	}
	if _, err := OpenStore("etcd://10.1.2.3:2379/x", make([]byte, 32)); err == nil || !strings.Contains(err.Error(), "insecure=true") {
		t.Errorf("plaintext non-loopback etcd: %v", err)
	}
	ep := etcdtest.Start(t)
	s, err := OpenStore("etcd://"+ep+"/setup-test", make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Update(context.Background(), func(tx store.Tx) error { return tx.Put("b", "k", []byte("v")) }); err != nil {
		t.Fatal(err)
	}
}
