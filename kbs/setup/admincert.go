package setup

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/sealpod/sealpod/internal/atomicfile"
	"github.com/sealpod/sealpod/kbs/admin"
)

// adminNameRE is the syntax of an admin certificate's common name (IssueAdminClient).
var adminNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$`)

// IssueAdminClient issues a new admin client certificate from the admin CA of the state
// directory dir (its key, admin-ca/ca.key, must be there) with common name name, valid for
// validity (0 = DefaultAdminCertValidity), and writes a complete sealctl config into outDir
// (which must not exist or be empty; mode 0700, files 0600): sealctl-kbs.json, kbs-ca.pem,
// client.pem, client.key. It returns the certificate (revoke it by its serial).
func IssueAdminClient(dir, name string, validity time.Duration, outDir string) (*x509.Certificate, error) {
	fail := func(err error) (*x509.Certificate, error) {
		return nil, fmt.Errorf("issue admin certificate %q from %s: %w", name, dir, err)
	}
	if !adminNameRE.MatchString(name) {
		return fail(fmt.Errorf("name: want lowercase letters, digits, '.', '_' or '-' (1..64), got %q", name))
	}
	validity, err := checkAdminValidity(validity)
	if err != nil {
		return fail(err)
	}
	if entries, err := os.ReadDir(outDir); err == nil && len(entries) > 0 {
		return fail(fmt.Errorf("output directory %s: %w", outDir, ErrExists))
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fail(err)
	}
	st, err := Load(dir)
	if err != nil {
		return fail(err)
	}
	caCert, _, err := parseCertFile(filepath.Join(dir, AdminCACertFile))
	if err != nil {
		return fail(err)
	}
	caKey, err := parseKeyFile(filepath.Join(dir, AdminCAKeyFile))
	if err != nil {
		return fail(err)
	}
	ecKey, ok := caKey.(*ecdsa.PrivateKey)
	if !ok {
		return fail(fmt.Errorf("%s: key type %T, want ECDSA", AdminCAKeyFile, caKey))
	}
	ca := &keyPair{cert: caCert, key: ecKey}
	adminURI, _ := url.Parse(admin.IdentityURI)
	client, err := ca.issue(leafSpec{cn: name, uris: []*url.URL{adminURI}, usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, validity: validity})
	if err != nil {
		return fail(err)
	}
	keyPEM, err := client.keyPEM()
	if err != nil {
		return fail(err)
	}
	cc, _ := json.MarshalIndent(admin.ClientConfig{
		Version: admin.ClientConfigVersion, URL: st.Config.URL,
		CAFile: adminClientCAFile, CertFile: adminClientCertFile, KeyFile: adminClientKeyFile,
	}, "", "  ")
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return fail(err)
	}
	if err := os.Chmod(outDir, 0o700); err != nil {
		return fail(err)
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{adminClientCAFile, st.TLSCAPEM}, {adminClientCertFile, client.certPEM()}, {adminClientKeyFile, keyPEM}, {filepath.Base(AdminClientConfig), append(cc, '\n')}} {
		if err := atomicfile.Write(filepath.Join(outDir, f.name), f.b, 0o600); err != nil {
			return fail(err)
		}
	}
	if err := syncDir(outDir); err != nil {
		return fail(err)
	}
	return client.cert, nil
}
