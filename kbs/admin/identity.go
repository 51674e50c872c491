// Package admin is the key broker's administration API (mounted by the server under
// /kbs/v1/admin/, authenticated by mutual TLS with an admin identity) and its Go client
// (used by `sealctl kbs` and `sealctl image create --kbs`).
package admin

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// The admin identity: a client certificate issued by the admin CA (created at
// `sealpod-kbs init`), with this URI SAN, this common name and ExtKeyUsageClientAuth.
const (
	IdentityURI        = "urn:sealpod:kbs:admin"
	IdentityCommonName = "sealpod-admin"
)

// PathPrefix is where the server mounts the handler (without stripping the prefix).
const PathPrefix = "/kbs/v1/admin/"

// ClientConfigVersion is the only ClientConfig.Version accepted.
const ClientConfigVersion = 1

// ClientConfig is the file `sealpod-kbs init` writes for sealctl (<dir>/admin/sealctl-kbs.json).
// Relative paths are relative to the directory of the config file.
type ClientConfig struct {
	Version  int    `json:"version"`
	URL      string `json:"url"`      // broker base URL, e.g. https://kbs.example:8443
	CAFile   string `json:"caFile"`   // PEM CA that signed the broker's TLS certificate
	CertFile string `json:"certFile"` // admin client certificate (PEM)
	KeyFile  string `json:"keyFile"`  // admin client key (PKCS#8 PEM, mode 0600)
}

// ReadClientConfig reads and checks a client config file and resolves its relative paths.
func ReadClientConfig(path string) (*ClientConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("admin client config: %w", err)
	}
	var c ClientConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("admin client config %s: %w", path, err)
	}
	if c.Version != ClientConfigVersion {
		return nil, fmt.Errorf("admin client config %s: version %d, want %d", path, c.Version, ClientConfigVersion)
	}
	for name, v := range map[string]string{"url": c.URL, "caFile": c.CAFile, "certFile": c.CertFile, "keyFile": c.KeyFile} {
		if v == "" {
			return nil, fmt.Errorf("admin client config %s: %s is required", path, name)
		}
	}
	base := filepath.Dir(path)
	for _, p := range []*string{&c.CAFile, &c.CertFile, &c.KeyFile} {
		if !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	return &c, nil
}

// ErrNotAdmin is returned by CheckIdentity for a certificate that is not an admin identity.
var ErrNotAdmin = errors.New("not an admin identity")

// CheckIdentity checks that cert (the leaf of a verified chain) is an admin identity.
func CheckIdentity(cert *x509.Certificate) error {
	if cert == nil {
		return fmt.Errorf("%w: no certificate", ErrNotAdmin)
	}
	hasURI := false
	for _, u := range cert.URIs {
		if u.String() == IdentityURI {
			hasURI = true
		}
	}
	if !hasURI {
		return fmt.Errorf("%w: certificate %q lacks URI SAN %s", ErrNotAdmin, cert.Subject.CommonName, IdentityURI)
	}
	clientAuth := false
	for _, u := range cert.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth {
			clientAuth = true
		}
	}
	if !clientAuth {
		return fmt.Errorf("%w: certificate %q lacks extended key usage clientAuth", ErrNotAdmin, cert.Subject.CommonName)
	}
	return nil
}
