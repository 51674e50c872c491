package admin

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/store"
)

// BucketRevoked is the store bucket of the admin deny-list: key = the certificate serial in
// lowercase hex (big.Int.Text(16)), value = JSON Revocation.
const BucketRevoked = "admin-revoked"

// ErrRevoked is matched by errors.Is for a request made with a revoked admin certificate.
var ErrRevoked = errors.New("admin certificate revoked")

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
