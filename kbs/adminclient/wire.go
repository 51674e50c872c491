package adminclient

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sealpod/sealpod/kbs/api"
)

// PathPrefix is where the broker mounts the admin API.
const PathPrefix = "/kbs/v1/admin/"

// MaxBodyBytes bounds every admin request body.
const MaxBodyBytes = 256 << 10

// AdminClientConfig is where `sealpod-kbs init` writes the ClientConfig for sealctl, relative
// to its state directory (sealctl --kbs-dir DIR reads DIR/AdminClientConfig).
const AdminClientConfig = "admin/sealctl-kbs.json"

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

// Wire types of the admin API (JSON).
type (
	// PutResponse answers PUT workloads/{id}.
	PutResponse struct {
		Entry    api.HistoryEntry `json:"entry"`
		Workload api.Workload     `json:"workload"` // without dataKey
	}
	// RemoveResponse answers DELETE workloads/{id}.
	RemoveResponse struct {
		Entry api.HistoryEntry `json:"entry"`
	}
	// ListResponse answers GET workloads.
	ListResponse struct {
		Workloads []api.Workload `json:"workloads"` // without dataKey
	}
	// HistoryResponse answers GET history.
	HistoryResponse struct {
		History []api.HistoryEntry `json:"history"`
	}
	// AuditResponse answers GET audit?since=RFC3339&limit=N.
	AuditResponse struct {
		Events []api.AuditEvent `json:"events"`
	}
	// CAInfo answers GET ca.
	CAInfo struct {
		RootPEM             string    `json:"rootPem"`
		BundlePEM           string    `json:"bundlePem"` // intermediate + root
		RootSHA256          string    `json:"rootSha256"`
		RootSubject         string    `json:"rootSubject"`
		RootNotAfter        time.Time `json:"rootNotAfter"`
		IntermediateSubject string    `json:"intermediateSubject"`
		IntermediateExpiry  time.Time `json:"intermediateNotAfter"`
	}
	// Status answers GET status.
	Status struct {
		Time         time.Time     `json:"time"`
		Workloads    int           `json:"workloads"`
		Head         api.ChainHead `json:"head"`
		HistoryValid bool          `json:"historyValid"` // the stored history verifies under the broker key
		HistoryError string        `json:"historyError,omitempty"`
		MeshRootSHA  string        `json:"meshRootSha256"`
		Identity     string        `json:"identity"` // the caller's admin identity
		// AuditAnchor: where the exported (dropped) part of the audit log ends; check an
		// export against it with audit.VerifyExport.
		AuditAnchor *api.AuditAnchor `json:"auditAnchor,omitempty"`
	}
	// ErrorResponse is the body of every non-2xx answer.
	ErrorResponse struct {
		Error string `json:"error"`
		Field string `json:"field,omitempty"` // set for workload validation errors
	}
	// Revocation is one entry of the admin certificate deny-list.
	Revocation struct {
		Serial    string    `json:"serial"` // lowercase hex
		Subject   string    `json:"subject,omitempty"`
		NotAfter  time.Time `json:"notAfter,omitzero"` // of the revoked certificate, when known
		Reason    string    `json:"reason,omitempty"`
		RevokedAt time.Time `json:"revokedAt"`
		RevokedBy string    `json:"revokedBy,omitempty"`
	}
	// RevokeRequest is the body of POST revocations.
	RevokeRequest struct {
		Serial   string    `json:"serial"`
		Subject  string    `json:"subject,omitempty"`
		NotAfter time.Time `json:"notAfter,omitzero"`
		Reason   string    `json:"reason,omitempty"`
	}
	// RevocationsResponse answers GET revocations.
	RevocationsResponse struct {
		Revocations []Revocation `json:"revocations"`
	}
)

// ErrBadRequest is matched by errors.Is for a malformed request value (NormalizeSerial);
// the broker answers it with 400.
var ErrBadRequest = errors.New("bad request")

// maxSerialHex: RFC 5280 serials are at most 20 octets.
const maxSerialHex = 40

// NormalizeSerial parses a certificate serial given in hex (optionally "0x"-prefixed or with
// ':' between octets, as openssl prints it) and returns it in the deny-list's form.
func NormalizeSerial(s string) (string, error) {
	h := strings.ToLower(strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "0x"), "0X"))
	h = strings.ReplaceAll(h, ":", "")
	if h == "" || len(h) > maxSerialHex {
		return "", fmt.Errorf("%w: serial %q: want 1..%d hex digits", ErrBadRequest, truncate(s), maxSerialHex)
	}
	n, ok := new(big.Int).SetString(h, 16)
	if !ok || n.Sign() <= 0 {
		return "", fmt.Errorf("%w: serial %q: not a positive hex number", ErrBadRequest, truncate(s))
	}
	return n.Text(16), nil
}

// SerialOf returns cert's serial in the deny-list's form.
func SerialOf(cert *x509.Certificate) string { return cert.SerialNumber.Text(16) }

// RevokeRequestFromPEM builds a revoke request from a PEM certificate (the first CERTIFICATE
// block), so the deny-list records its subject and expiry.
func RevokeRequestFromPEM(b []byte, reason string) (RevokeRequest, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return RevokeRequest{}, errors.New("no PEM CERTIFICATE block")
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return RevokeRequest{}, fmt.Errorf("parse certificate: %w", err)
		}
		return RevokeRequest{Serial: SerialOf(c), Subject: c.Subject.String(), NotAfter: c.NotAfter.UTC(), Reason: reason}, nil
	}
}

// truncate bounds a caller-supplied string quoted in an error.
func truncate(s string) string {
	if len(s) > 512 {
		return s[:512]
	}
	return s
}
