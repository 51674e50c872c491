// Package setup creates (`sealpod-kbs init`) and loads (`sealpod-kbs serve`) the key broker's
// state directory: store key, signing key, mesh CA, TLS CA and server certificate, admin CA
// and the admin client identity for sealctl.
//
// Layout (directories 0700, files 0600):
//
//	config.json                       version, url, hosts, store URL
//	store.key                         32-byte store key, hex
//	signing.key, signing.pub.pem      ECDSA P-256: manifests, history, tokens
//	meshca/root.pem, root.key         mesh root (root.key is not loaded by serve; keep it offline)
//	meshca/intermediate.pem, .key     mesh intermediate (signs workload certificates)
//	tls/ca.pem, ca.key                TLS CA (agents pin SHA-256 of ca.pem's DER)
//	tls/server.pem, server.key        server certificate for hosts
//	admin-ca/ca.pem, ca.key           admin CA (client certificates on /kbs/v1/admin/)
//	admin/sealctl-kbs.json            sealctl config (relative paths), plus:
//	admin/kbs-ca.pem, client.pem, client.key
package setup

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sealpod/sealpod/internal/atomicfile"

	"github.com/sealpod/sealpod/kbs/admin"
	"github.com/sealpod/sealpod/kbs/adminclient"
	"github.com/sealpod/sealpod/kbs/meshca"
	"github.com/sealpod/sealpod/kbs/store"
)

// File names inside the state directory.
const (
	ConfigFile          = "config.json"
	StoreKeyFile        = "store.key"
	SigningKeyFile      = "signing.key"
	SigningPubFile      = "signing.pub.pem"
	MeshRootCertFile    = "meshca/root.pem"
	MeshRootKeyFile     = "meshca/root.key"
	MeshInterCertFile   = "meshca/intermediate.pem"
	MeshInterKeyFile    = "meshca/intermediate.key"
	TLSCACertFile       = "tls/ca.pem"
	TLSCAKeyFile        = "tls/ca.key"
	TLSServerCertFile   = "tls/server.pem"
	TLSServerKeyFile    = "tls/server.key"
	AdminCACertFile     = "admin-ca/ca.pem"
	AdminCAKeyFile      = "admin-ca/ca.key"
	AdminClientConfig   = adminclient.AdminClientConfig // sealctl reads it (--kbs-dir)
	adminClientCAFile   = "kbs-ca.pem"
	adminClientCertFile = "client.pem"
	adminClientKeyFile  = "client.key"
	// DefaultStoreFile is the bolt file used when config.json names no store.
	DefaultStoreFile = "kbs.db"
)

// ConfigVersion is the only Config.Version accepted.
const ConfigVersion = 1

// ErrExists is returned by Init when the directory exists and is not empty.
var ErrExists = errors.New("state directory already exists and is not empty")

// Config is config.json.
type Config struct {
	Version int      `json:"version"`
	URL     string   `json:"url"`             // public broker URL (agents, sealctl)
	Hosts   []string `json:"hosts"`           // DNS names / IPs in the server certificate
	Store   string   `json:"store,omitempty"` // store URL; empty = bolt://<dir>/kbs.db
}

// State is what `sealpod-kbs serve` loads.
type State struct {
	Dir         string
	Config      Config
	StoreURL    string // Config.Store or the default bolt file in Dir
	StoreKey    []byte
	Signer      crypto.Signer // manifests, history, tokens
	MeshCA      *meshca.CA
	TLSCert     tls.Certificate // server certificate (leaf + TLS CA not included)
	TLSCAPEM    []byte          // CA the agents pin (envelope header carries SHA-256 of its DER)
	AdminCAPool *x509.CertPool  // client certs accepted on /kbs/v1/admin/
	AdminCAPEM  []byte
}

// TLSCASHA256 returns the hex SHA-256 of the TLS CA certificate's DER (what envelopes pin).
func (s *State) TLSCASHA256() (string, error) { return CertPEMSHA256(s.TLSCAPEM) }

// CertPEMSHA256 returns the hex SHA-256 of the DER of the first certificate in a PEM blob.
func CertPEMSHA256(p []byte) (string, error) {
	blk, _ := pem.Decode(p)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return "", errors.New("no PEM CERTIFICATE block")
	}
	sum := sha256.Sum256(blk.Bytes)
	return hex.EncodeToString(sum[:]), nil
}

// serverNames splits hosts (and the URL's host) into DNS names and IPs for the server cert.
func serverNames(hosts []string, rawURL string) ([]string, []net.IP, error) {
	all := append([]string(nil), hosts...)
	if rawURL != "" {
		u, err := url.Parse(rawURL)
		if err != nil || u.Scheme != "https" || u.Hostname() == "" {
			return nil, nil, fmt.Errorf("url %q: want https://host[:port]", rawURL)
		}
		all = append(all, u.Hostname())
	}
	seen := map[string]bool{}
	var dns []string
	var ips []net.IP
	for _, h := range all {
		h = strings.TrimSpace(h)
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if strings.ContainsAny(h, "/: ") {
			return nil, nil, fmt.Errorf("host %q: not a DNS name or IP address", h)
		} else {
			dns = append(dns, h)
		}
	}
	if len(dns)+len(ips) == 0 {
		return nil, nil, errors.New("no hosts: give at least one DNS name or IP for the server certificate")
	}
	return dns, ips, nil
}

// Init creates a new broker state directory (mode 0700, files 0600, atomic writes, refuses to
// overwrite): store key, manifest/token signing key, mesh CA root + intermediate, a TLS CA and
// server cert for `hosts` (plus url's host), an admin client identity (cert+key signed by an
// admin CA) and an admin config file for sealctl (`<dir>/admin/sealctl-kbs.json`: URL, CA,
// client cert/key paths). Everything is written into a temporary sibling directory that is
// renamed to dir at the end, so a crash leaves either nothing or a complete directory.
func Init(dir string, hosts []string, url string) error {
	return InitWith(dir, hosts, url, InitOptions{})
}

// InitOptions tune InitWith.
type InitOptions struct {
	// AdminCertValidity is the lifetime of the admin client certificate (0 =
	// DefaultAdminCertValidity; at most MaxAdminCertValidity).
	AdminCertValidity time.Duration
}

func (o InitOptions) adminValidity() (time.Duration, error) {
	return checkAdminValidity(o.AdminCertValidity)
}

func checkAdminValidity(d time.Duration) (time.Duration, error) {
	switch {
	case d == 0:
		return DefaultAdminCertValidity, nil
	case d < time.Hour || d > MaxAdminCertValidity:
		return 0, fmt.Errorf("admin certificate validity %v: want 1h..%v", d, MaxAdminCertValidity)
	}
	return d, nil
}

// InitWith is Init with options.
func InitWith(dir string, hosts []string, url string, o InitOptions) error {
	adminValidity, err := o.adminValidity()
	if err != nil {
		return fmt.Errorf("init %s: %w", dir, err)
	}
	if dir == "" {
		return errors.New("init: no state directory given")
	}
	dir = filepath.Clean(dir)
	if entries, err := os.ReadDir(dir); err == nil {
		if len(entries) > 0 {
			return fmt.Errorf("init %s: %w", dir, ErrExists)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("init %s: %w", dir, err)
	}
	dnsNames, ips, err := serverNames(hosts, url)
	if err != nil {
		return fmt.Errorf("init %s: %w", dir, err)
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("init %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".init-*")
	if err != nil {
		return fmt.Errorf("init %s: %w", dir, err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o700); err != nil {
		return fmt.Errorf("init %s: %w", dir, err)
	}
	files, err := generate(dnsNames, ips, url, hosts, adminValidity)
	if err != nil {
		return fmt.Errorf("init %s: %w", dir, err)
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		p := filepath.Join(tmp, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("init %s: %w", dir, err)
		}
		if err := atomicfile.Write(p, files[name], 0o600); err != nil {
			return fmt.Errorf("init %s: %w", dir, err)
		}
	}
	for _, sub := range []string{"meshca", "tls", "admin-ca", "admin"} {
		if err := syncDir(filepath.Join(tmp, sub)); err != nil {
			return fmt.Errorf("init %s: %w", dir, err)
		}
	}
	// An existing empty dir is removed first (os.Remove fails on a non-empty one, so
	// nothing created meanwhile is lost); the rename then fails if anything reappeared.
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("init %s: %w", dir, ErrExists)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if entries, rerr := os.ReadDir(dir); rerr == nil && len(entries) > 0 {
			return fmt.Errorf("init %s: %w", dir, ErrExists)
		}
		return fmt.Errorf("init %s: %w", dir, err)
	}
	ok = true
	return syncDir(parent)
}

// generate creates every file of a new state directory, keyed by relative path.
func generate(dnsNames []string, ips []net.IP, rawURL string, hosts []string, adminValidity time.Duration) (map[string][]byte, error) {
	files := map[string][]byte{}
	storeKey, err := store.GenerateKey()
	if err != nil {
		return nil, err
	}
	files[StoreKeyFile] = []byte(hex.EncodeToString(storeKey) + "\n")

	sk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	if files[SigningKeyFile], err = encodeKey(sk); err != nil {
		return nil, fmt.Errorf("encode signing key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&sk.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encode signing public key: %w", err)
	}
	files[SigningPubFile] = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	mesh, err := meshca.Generate("Sealpod mesh", 0, 0)
	if err != nil {
		return nil, err
	}
	files[MeshRootCertFile] = mesh.RootCertPEM
	files[MeshRootKeyFile] = mesh.RootKeyPEM
	files[MeshInterCertFile] = mesh.IntermediateCertPEM
	files[MeshInterKeyFile] = mesh.IntermediateKeyPEM

	tlsCA, err := newCA("Sealpod KBS TLS CA")
	if err != nil {
		return nil, fmt.Errorf("create TLS CA: %w", err)
	}
	server, err := tlsCA.issue(leafSpec{cn: "sealpod-kbs", dns: dnsNames, ips: ips, usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return nil, fmt.Errorf("issue server certificate: %w", err)
	}
	files[TLSCACertFile] = tlsCA.certPEM()
	if files[TLSCAKeyFile], err = tlsCA.keyPEM(); err != nil {
		return nil, err
	}
	files[TLSServerCertFile] = server.certPEM()
	if files[TLSServerKeyFile], err = server.keyPEM(); err != nil {
		return nil, err
	}

	adminCA, err := newCA("Sealpod KBS admin CA")
	if err != nil {
		return nil, fmt.Errorf("create admin CA: %w", err)
	}
	adminURI, _ := url.Parse(admin.IdentityURI)
	client, err := adminCA.issue(leafSpec{cn: admin.IdentityCommonName, uris: []*url.URL{adminURI}, usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, validity: adminValidity})
	if err != nil {
		return nil, fmt.Errorf("issue admin client certificate: %w", err)
	}
	files[AdminCACertFile] = adminCA.certPEM()
	if files[AdminCAKeyFile], err = adminCA.keyPEM(); err != nil {
		return nil, err
	}
	adminDir := filepath.Dir(AdminClientConfig)
	files[filepath.Join(adminDir, adminClientCAFile)] = tlsCA.certPEM()
	files[filepath.Join(adminDir, adminClientCertFile)] = client.certPEM()
	if files[filepath.Join(adminDir, adminClientKeyFile)], err = client.keyPEM(); err != nil {
		return nil, err
	}
	clientURL := rawURL
	if clientURL == "" {
		var h string
		if len(dnsNames) > 0 {
			h = dnsNames[0]
		} else if len(ips) > 0 {
			h = ips[0].String()
		}
		clientURL = "https://" + net.JoinHostPort(h, "8443")
	}
	cc, _ := json.MarshalIndent(admin.ClientConfig{
		Version: admin.ClientConfigVersion, URL: clientURL,
		CAFile: adminClientCAFile, CertFile: adminClientCertFile, KeyFile: adminClientKeyFile,
	}, "", "  ")
	files[AdminClientConfig] = append(cc, '\n')

	cfg, _ := json.MarshalIndent(Config{Version: ConfigVersion, URL: clientURL, Hosts: hosts}, "", "  ")
	files[ConfigFile] = append(cfg, '\n')
	return files, nil
}

// Load reads a state directory created by Init. It refuses secret files readable by group or
// others and checks that every certificate matches its key.
func Load(dir string) (*State, error) {
	fail := func(err error) (*State, error) { return nil, fmt.Errorf("load KBS state %s: %w", dir, err) }
	fi, err := os.Stat(dir)
	if err != nil {
		return fail(err)
	}
	if !fi.IsDir() {
		return fail(errors.New("not a directory"))
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fail(fmt.Errorf("directory mode %04o is accessible by group/others (want 0700)", fi.Mode().Perm()))
	}
	st := &State{Dir: dir}
	p := func(name string) string { return filepath.Join(dir, name) }

	b, err := os.ReadFile(p(ConfigFile))
	if err != nil {
		return fail(err)
	}
	if err := json.Unmarshal(b, &st.Config); err != nil {
		return fail(fmt.Errorf("%s: %w", ConfigFile, err))
	}
	if st.Config.Version != ConfigVersion {
		return fail(fmt.Errorf("%s: version %d, want %d", ConfigFile, st.Config.Version, ConfigVersion))
	}
	st.StoreURL = st.Config.Store
	if st.StoreURL == "" {
		abs, err := filepath.Abs(p(DefaultStoreFile))
		if err != nil {
			return fail(err)
		}
		st.StoreURL = "bolt://" + abs
	}
	if st.StoreKey, err = store.ReadKeyFile(p(StoreKeyFile)); err != nil {
		return fail(err)
	}
	if st.Signer, err = parseKeyFile(p(SigningKeyFile)); err != nil {
		return fail(err)
	}
	meshRoot, err := os.ReadFile(p(MeshRootCertFile))
	if err != nil {
		return fail(err)
	}
	meshInter, err := os.ReadFile(p(MeshInterCertFile))
	if err != nil {
		return fail(err)
	}
	if err := checkPrivate(p(MeshInterKeyFile)); err != nil {
		return fail(err)
	}
	meshKey, err := os.ReadFile(p(MeshInterKeyFile))
	if err != nil {
		return fail(err)
	}
	if st.MeshCA, err = meshca.Load(meshRoot, meshInter, meshKey); err != nil {
		return fail(err)
	}
	if err := checkPrivate(p(TLSServerKeyFile)); err != nil {
		return fail(err)
	}
	if st.TLSCert, err = tls.LoadX509KeyPair(p(TLSServerCertFile), p(TLSServerKeyFile)); err != nil {
		return fail(fmt.Errorf("server certificate: %w", err))
	}
	tlsCA, tlsCAPEM, err := parseCertFile(p(TLSCACertFile))
	if err != nil {
		return fail(err)
	}
	leaf, err := x509.ParseCertificate(st.TLSCert.Certificate[0])
	if err != nil {
		return fail(fmt.Errorf("server certificate: %w", err))
	}
	if err := leaf.CheckSignatureFrom(tlsCA); err != nil {
		return fail(fmt.Errorf("server certificate is not signed by %s: %w", TLSCACertFile, err))
	}
	st.TLSCert.Leaf = leaf
	st.TLSCAPEM = tlsCAPEM
	adminCA, adminPEM, err := parseCertFile(p(AdminCACertFile))
	if err != nil {
		return fail(err)
	}
	st.AdminCAPool = x509.NewCertPool()
	st.AdminCAPool.AddCert(adminCA)
	st.AdminCAPEM = adminPEM
	return st, nil
}
