// Package admin is the key broker's administration API server (mounted by the server under
// /kbs/v1/admin/, authenticated by mutual TLS with an admin identity) and its admin
// certificate deny-list. Its Go client and wire types are kbs/adminclient (used by `sealctl
// kbs` and `sealctl image create`); the names re-exported here keep broker-side callers short.
package admin

import (
	"crypto/x509"
	"errors"
	"fmt"
)

// The admin identity: a client certificate issued by the admin CA (created at
// `sealpod-kbs init`), with this URI SAN, this common name and ExtKeyUsageClientAuth.
const (
	IdentityURI        = "urn:sealpod:kbs:admin"
	IdentityCommonName = "sealpod-admin"
)

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
