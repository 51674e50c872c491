package admin

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/store"
)

// BucketRevoked is the store bucket of the admin deny-list: key = the certificate serial in
// lowercase hex (big.Int.Text(16)), value = JSON Revocation.
const BucketRevoked = "admin-revoked"

// maxSerialHex: RFC 5280 serials are at most 20 octets.
const maxSerialHex = 40

// ErrRevoked is matched by errors.Is for a request made with a revoked admin certificate.
var ErrRevoked = errors.New("admin certificate revoked")

// Revocation is one deny-list entry.
type Revocation struct {
	Serial    string    `json:"serial"` // lowercase hex
	Subject   string    `json:"subject,omitempty"`
	NotAfter  time.Time `json:"notAfter,omitzero"` // of the revoked certificate, when known
	Reason    string    `json:"reason,omitempty"`
	RevokedAt time.Time `json:"revokedAt"`
	RevokedBy string    `json:"revokedBy,omitempty"`
}

// RevokeRequest is the body of POST revocations.
type RevokeRequest struct {
	Serial   string    `json:"serial"`
	Subject  string    `json:"subject,omitempty"`
	NotAfter time.Time `json:"notAfter,omitzero"`
	Reason   string    `json:"reason,omitempty"`
}

// RevocationsResponse answers GET revocations.
type RevocationsResponse struct {
	Revocations []Revocation `json:"revocations"`
}

// NormalizeSerial parses a certificate serial given in hex (optionally "0x"-prefixed or with
// ':' between octets, as openssl prints it) and returns it in the deny-list's form.
func NormalizeSerial(s string) (string, error) {
	h := strings.ToLower(strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "0x"), "0X"))
	h = strings.ReplaceAll(h, ":", "")
	if h == "" || len(h) > maxSerialHex {
		return "", fmt.Errorf("%w: serial %q: want 1..%d hex digits", errBadRequest, truncate(s), maxSerialHex)
	}
	n, ok := new(big.Int).SetString(h, 16)
	if !ok || n.Sign() <= 0 {
		return "", fmt.Errorf("%w: serial %q: not a positive hex number", errBadRequest, truncate(s))
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

// DenyList is the admin certificate deny-list kept in the broker's store (shared by every
// replica). It is read on every admin request.
type DenyList struct{ st store.Store }

// NewDenyList returns the deny-list kept in st.
func NewDenyList(st store.Store) *DenyList { return &DenyList{st: st} }

// Check returns an error matching ErrRevoked when cert is on the list; a store failure is
// returned as is (callers refuse the request: fail closed).
func (d *DenyList) Check(ctx context.Context, cert *x509.Certificate) error {
	serial := SerialOf(cert)
	err := d.st.View(ctx, func(tx store.Tx) error {
		_, err := tx.Get(BucketRevoked, serial)
		return err
	})
	switch {
	case err == nil:
		return fmt.Errorf("%w: serial %s (%s)", ErrRevoked, serial, cert.Subject.CommonName)
	case errors.Is(err, store.ErrNotFound):
		return nil
	default:
		return fmt.Errorf("read admin deny-list: %w", err)
	}
}

// Add puts r on the list (an existing entry for the serial is kept: the first revocation
// stands) and returns the stored entry.
func (d *DenyList) Add(ctx context.Context, r Revocation) (Revocation, error) {
	var out Revocation
	err := d.st.Update(ctx, func(tx store.Tx) error {
		if b, err := tx.Get(BucketRevoked, r.Serial); err == nil {
			return json.Unmarshal(b, &out)
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		out = r
		return tx.Put(BucketRevoked, r.Serial, b)
	})
	if err != nil {
		return Revocation{}, fmt.Errorf("revoke admin certificate %s: %w", r.Serial, err)
	}
	return out, nil
}

// List returns every entry, by serial.
func (d *DenyList) List(ctx context.Context) ([]Revocation, error) {
	out := []Revocation{}
	err := d.st.View(ctx, func(tx store.Tx) error {
		kvs, err := tx.List(BucketRevoked)
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			var r Revocation
			if err := json.Unmarshal(kv.Value, &r); err != nil {
				return fmt.Errorf("decode revocation %s: %w", kv.Key, err)
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list admin deny-list: %w", err)
	}
	return out, nil
}

type leafKey struct{}

func callerLeaf(r *http.Request) *x509.Certificate {
	c, _ := r.Context().Value(leafKey{}).(*x509.Certificate)
	return c
}

func (h *Handler) listRevoked(w http.ResponseWriter, r *http.Request) {
	rs, err := h.deny.List(r.Context())
	if err != nil {
		h.fail(w, r, "list revocations", err)
		return
	}
	writeJSON(w, http.StatusOK, RevocationsResponse{Revocations: rs})
}

func (h *Handler) revoke(w http.ResponseWriter, r *http.Request) {
	var req RevokeRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		h.fail(w, r, "revoke", fmt.Errorf("%w: revoke body: %v", errBadRequest, err))
		return
	}
	serial, err := NormalizeSerial(req.Serial)
	if err != nil {
		h.fail(w, r, "revoke", err)
		return
	}
	if len(req.Subject) > 512 || len(req.Reason) > 512 {
		h.fail(w, r, "revoke", fmt.Errorf("%w: subject and reason are limited to 512 bytes", errBadRequest))
		return
	}
	who := caller(r)
	if leaf := callerLeaf(r); leaf != nil && SerialOf(leaf) == serial {
		writeError(w, http.StatusConflict, "refusing to revoke the certificate this request is made with (serial "+serial+"): use another admin certificate", "")
		return
	}
	rec, err := h.deny.Add(r.Context(), Revocation{Serial: serial, Subject: req.Subject, NotAfter: req.NotAfter.UTC(), Reason: req.Reason,
		RevokedAt: h.now().UTC(), RevokedBy: who})
	if err != nil {
		h.audit2(r.Context(), audit.Event{Kind: audit.KindAdmin, Result: audit.ResultError, Reason: truncate("revoke admin certificate " + serial + " by " + who + ": " + err.Error()), Remote: r.RemoteAddr})
		h.fail(w, r, "revoke", err)
		return
	}
	h.audit2(r.Context(), audit.Event{Kind: audit.KindAdmin, Result: audit.ResultOK, Reason: truncate("revoke admin certificate " + serial + " by " + who), Remote: r.RemoteAddr})
	h.logger.Info("admin certificate revoked", "serial", serial, "by", who)
	writeJSON(w, http.StatusOK, rec)
}
