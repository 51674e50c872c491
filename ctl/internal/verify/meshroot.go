package verify

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/sealpod/sealpod/kbs/client"
)

// Checks of the mesh CA root the broker publishes, and the PEM helpers they share with Run.

func pemCertSHA256(p []byte) (string, error) {
	for {
		var b *pem.Block
		b, p = pem.Decode(p)
		if b == nil {
			return "", errors.New("no CERTIFICATE block")
		}
		if b.Type == "CERTIFICATE" {
			sum := sha256.Sum256(b.Bytes)
			return hex.EncodeToString(sum[:]), nil
		}
	}
}

func parsePEMCerts(p []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, p = pem.Decode(p)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no CERTIFICATE block")
	}
	return out, nil
}

// checkMeshRoot fetches the mesh CA and checks that the root is one self-signed CA
// certificate, valid now, and that the bundle's intermediate chains to it.
func checkMeshRoot(ctx context.Context, r *Report, c *client.Client) {
	ca, err := c.CA(ctx)
	if err != nil {
		r.fail(CheckMeshRoot, "GET /kbs/v1/ca", "", "", "%v", err)
		return
	}
	certs, err := parsePEMCerts([]byte(ca.MeshRootPEM))
	if err != nil {
		r.fail(CheckMeshRoot, "", "", "", "meshRootPem: %v", err)
		return
	}
	if len(certs) != 1 {
		r.fail(CheckMeshRoot, "", "1", fmt.Sprint(len(certs)), "meshRootPem holds %d certificates, want exactly the root", len(certs))
		return
	}
	root := certs[0]
	sum := sha256.Sum256(root.Raw)
	info := &MeshRootInfo{SHA256: hex.EncodeToString(sum[:]), Subject: root.Subject.String(), NotAfter: root.NotAfter}
	r.MeshRoot = info
	switch {
	case !root.IsCA || !root.BasicConstraintsValid:
		r.fail(CheckMeshRoot, "", "", "", "mesh root %s is not a CA certificate", info.Subject)
		return
	case root.CheckSignatureFrom(root) != nil:
		r.fail(CheckMeshRoot, "", "", "", "mesh root %s is not self-signed", info.Subject)
		return
	case r.Time.After(root.NotAfter) || r.Time.Before(root.NotBefore):
		r.fail(CheckMeshRoot, "", "", "", "mesh root %s is not valid now (%s … %s)", info.Subject, root.NotBefore.Format(time.RFC3339), root.NotAfter.Format(time.RFC3339))
		return
	}
	if ca.MeshBundlePEM != "" {
		bundleCerts, err := parsePEMCerts([]byte(ca.MeshBundlePEM))
		if err != nil {
			r.fail(CheckMeshRoot, "", "", "", "meshBundlePem: %v", err)
			return
		}
		roots := x509.NewCertPool()
		roots.AddCert(root)
		for _, bc := range bundleCerts {
			if bc.Equal(root) {
				continue
			}
			if _, err := bc.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: r.Time, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				r.fail(CheckMeshRoot, "", "", "", "mesh bundle certificate %s does not chain to the mesh root: %v", bc.Subject, err)
				return
			}
		}
	}
	r.MeshRootPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})
	r.ok(CheckMeshRoot, "", "mesh CA root %s sha256:%s, valid until %s", info.Subject, info.SHA256, root.NotAfter.Format(time.RFC3339))
}
