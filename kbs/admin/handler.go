package admin

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/meshca"
	"github.com/sealpod/sealpod/kbs/registry"
)

// Handler serves the admin API. Every request must come over TLS with a verified client chain
// whose leaf is an admin identity (see CheckIdentity); the server's tls.Config must verify
// client certificates against the admin CA (ClientCAs = setup.State.AdminCAPool).
type Handler struct {
	roots  *x509.CertPool // optional re-verification of the client chain (WithAdminCAs)
	deny   *DenyList      // admin certificate deny-list (WithDenyList)
	reg    *registry.Registry
	log    *audit.Log
	ca     *meshca.CA
	logger *slog.Logger
	mux    *http.ServeMux
	now    func() time.Time
}

// Option configures NewHandler.
type Option func(*Handler)

// WithAdminCAs makes the handler re-verify every client chain against roots (the admin CA,
// setup.State.AdminCAPool) itself, so a listener whose ClientCAs also trusts other CAs cannot
// let their certificates in. Recommended.
func WithAdminCAs(roots *x509.CertPool) Option { return func(h *Handler) { h.roots = roots } }

// WithDenyList makes the handler refuse admin certificates on d (checked on every request)
// and serves GET/POST revocations. Without it no certificate can be revoked and the
// revocations endpoints answer 501; sealpod-kbs serve always sets it.
func WithDenyList(d *DenyList) Option { return func(h *Handler) { h.deny = d } }

// NewHandler returns the admin handler. Mount it at PathPrefix without stripping the prefix
// (paths without the prefix are accepted too).
func NewHandler(reg *registry.Registry, log *audit.Log, ca *meshca.CA, logger *slog.Logger, opts ...Option) http.Handler {
	if logger == nil {
		logger = slog.Default()
	}
	h := &Handler{reg: reg, log: log, ca: ca, logger: logger, mux: http.NewServeMux(), now: time.Now}
	for _, o := range opts {
		o(h)
	}
	h.mux.HandleFunc("GET /workloads", h.list)
	h.mux.HandleFunc("GET /workloads/{id}", h.get)
	h.mux.HandleFunc("PUT /workloads/{id}", h.put)
	h.mux.HandleFunc("DELETE /workloads/{id}", h.remove)
	h.mux.HandleFunc("GET /history", h.history)
	h.mux.HandleFunc("GET /audit", h.audit)
	h.mux.HandleFunc("GET /ca", h.caInfo)
	h.mux.HandleFunc("GET /status", h.status)
	if h.deny != nil {
		h.mux.HandleFunc("GET /revocations", h.listRevoked)
		h.mux.HandleFunc("POST /revocations", h.revoke)
	} else {
		logger.Warn("admin API without a deny-list: admin certificates cannot be revoked")
		h.mux.HandleFunc("/revocations", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotImplemented, "this broker has no admin deny-list", "")
		})
	}
	h.mux.HandleFunc("/", notFound)
	return h
}

type ctxKey struct{}

// identityOf names the caller for history and audit: "admin:<CN>/<serial hex>".
func identityOf(cert *x509.Certificate) string {
	s := cert.SerialNumber.Text(16)
	if len(s) > 16 {
		s = s[:16]
	}
	return "admin:" + cert.Subject.CommonName + "/" + s
}

// Authenticate checks the request's TLS state and returns the admin identity. roots, if not
// nil, must also verify the presented chain (client auth usage). It does not consult the
// deny-list (DenyList.Check); the Handler does, on every request.
func Authenticate(r *http.Request, roots *x509.CertPool) (string, int, error) {
	id, _, code, err := authenticate(r, roots)
	return id, code, err
}

func authenticate(r *http.Request, roots *x509.CertPool) (string, *x509.Certificate, int, error) {
	if r.TLS == nil {
		return "", nil, http.StatusUnauthorized, errors.New("admin API requires TLS with an admin client certificate")
	}
	if len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return "", nil, http.StatusUnauthorized, errors.New("admin API requires a client certificate issued by the admin CA")
	}
	leaf := r.TLS.VerifiedChains[0][0]
	if roots != nil {
		inter := x509.NewCertPool()
		for _, c := range r.TLS.PeerCertificates[min(1, len(r.TLS.PeerCertificates)):] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			return "", nil, http.StatusForbidden, fmt.Errorf("%w: client certificate is not issued by the admin CA: %v", ErrNotAdmin, err)
		}
	}
	if err := CheckIdentity(leaf); err != nil {
		return "", nil, http.StatusForbidden, err
	}
	return identityOf(leaf), leaf, 0, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, leaf, code, err := authenticate(r, h.roots)
	if err == nil && h.deny != nil {
		if err = h.deny.Check(r.Context(), leaf); err != nil {
			code = http.StatusForbidden
			if !errors.Is(err, ErrRevoked) {
				code = http.StatusServiceUnavailable // fail closed while the store does not answer
			}
		}
	}
	if err != nil {
		h.logger.Warn("admin request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "error", err)
		h.audit2(r.Context(), audit.Event{Kind: audit.KindAdmin, Result: audit.ResultDenied, Reason: truncate(err.Error()), Remote: r.RemoteAddr})
		writeError(w, code, err.Error(), "")
		return
	}
	r2 := r.Clone(context.WithValue(context.WithValue(r.Context(), ctxKey{}, id), leafKey{}, leaf))
	p := r.URL.Path
	if rest, ok := strings.CutPrefix(p, strings.TrimSuffix(PathPrefix, "/")); ok && (rest == "" || rest[0] == '/') {
		p = rest
	}
	if p == "" {
		p = "/"
	}
	if p[0] != '/' || path.Clean(p) != p {
		writeError(w, http.StatusNotFound, "no admin endpoint "+p, "")
		return
	}
	r2.URL.Path = p
	r2.URL.RawPath = ""
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	r2.Body = r.Body
	h.mux.ServeHTTP(w, r2)
}

// notFound answers (in JSON) every request no route took: 405 for a known path, else 404.
func notFound(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	known := p == "/workloads" || p == "/history" || p == "/audit" || p == "/ca" || p == "/status" || p == "/revocations"
	if rest, ok := strings.CutPrefix(p, "/workloads/"); ok && rest != "" && !strings.Contains(rest, "/") {
		known = true
	}
	if known {
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s", r.Method, p), "")
		return
	}
	writeError(w, http.StatusNotFound, "no admin endpoint "+p, "")
}

func truncate(s string) string {
	if len(s) > 512 {
		return s[:512]
	}
	return s
}

func (h *Handler) audit2(ctx context.Context, e audit.Event) {
	if h.log == nil {
		return
	}
	if err := h.log.Append(context.WithoutCancel(ctx), e); err != nil {
		h.logger.Error("audit append failed", "kind", e.Kind, "workload", e.Workload, "error", err)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg, field string) {
	writeJSON(w, code, ErrorResponse{Error: msg, Field: field})
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, op string, err error) {
	var fe *registry.FieldError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &fe):
		writeError(w, http.StatusBadRequest, err.Error(), fe.Field)
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", MaxBodyBytes), "")
	case errors.Is(err, errBadRequest):
		writeError(w, http.StatusBadRequest, err.Error(), "")
	case errors.Is(err, registry.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error(), "")
	default:
		h.logger.Error("admin request failed", "op", op, "path", r.URL.Path, "error", err)
		writeError(w, http.StatusInternalServerError, op+": internal error", "")
	}
}

// DecodeWorkload decodes a PUT workloads/{id} body: one JSON Workload object, unknown fields
// refused, nothing after it; the path id must match the body id (an empty body id takes it).
func DecodeWorkload(body io.Reader, pathID string) (registry.Workload, error) {
	var wl registry.Workload
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&wl); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return wl, err
		}
		return wl, fmt.Errorf("%w: workload body: %v", errBadRequest, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return wl, fmt.Errorf("%w: workload body: trailing data after the JSON object", errBadRequest)
	}
	if err := registry.ValidateID(pathID); err != nil {
		return wl, err
	}
	if wl.ID == "" {
		wl.ID = pathID
	}
	if wl.ID != pathID {
		return wl, fmt.Errorf("%w: body id %q does not match path id %q", errBadRequest, wl.ID, pathID)
	}
	return wl, nil
}

// ParseAuditQuery parses GET audit's query: since (RFC 3339 or a Go duration back from now,
// e.g. "1h"; default: no bound) and limit (1..audit.MaxListLimit; default audit.DefaultListLimit).
func ParseAuditQuery(q url.Values, now time.Time) (time.Time, int, error) {
	var since time.Time
	if s := q.Get("since"); s != "" {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			since = t
		} else if d, derr := time.ParseDuration(s); derr == nil && d >= 0 {
			since = now.Add(-d)
		} else {
			return since, 0, fmt.Errorf("%w: since %q: want RFC 3339 time or a duration like 1h", errBadRequest, s)
		}
	}
	limit := audit.DefaultListLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > audit.MaxListLimit {
			return since, 0, fmt.Errorf("%w: limit %q: want 1..%d", errBadRequest, s, audit.MaxListLimit)
		}
		limit = n
	}
	return since, limit, nil
}

func caller(r *http.Request) string { s, _ := r.Context().Value(ctxKey{}).(string); return s }

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	ws, err := h.reg.List(r.Context())
	if err != nil {
		h.fail(w, r, "list workloads", err)
		return
	}
	out := ListResponse{Workloads: make([]registry.Workload, 0, len(ws))}
	for i := range ws {
		out.Workloads = append(out.Workloads, ws[i].Public())
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	wl, err := h.reg.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, "get workload", err)
		return
	}
	writeJSON(w, http.StatusOK, wl.Public())
}

func (h *Handler) put(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	wl, err := DecodeWorkload(r.Body, id)
	if err != nil {
		h.fail(w, r, "put workload", err)
		return
	}
	who := caller(r)
	entry, err := h.reg.Put(r.Context(), wl, who)
	if err != nil {
		h.audit2(r.Context(), audit.Event{Kind: audit.KindAdmin, Workload: id, Result: resultOf(err), Reason: truncate("put by " + who + ": " + err.Error()), Remote: r.RemoteAddr})
		h.fail(w, r, "put workload", err)
		return
	}
	h.audit2(r.Context(), audit.Event{Kind: audit.KindAdmin, Workload: id, Result: audit.ResultOK, Reason: fmt.Sprintf("put by %s (generation %d, history %d)", who, entry.Workload.Generation, entry.Seq), Remote: r.RemoteAddr})
	h.logger.Info("workload registered", "workload", id, "generation", entry.Workload.Generation, "by", who, "history", entry.Seq)
	writeJSON(w, http.StatusOK, PutResponse{Entry: entry, Workload: *entry.Workload})
}

func resultOf(err error) string {
	if errors.Is(err, registry.ErrInvalid) || errors.Is(err, registry.ErrNotFound) || errors.Is(err, errBadRequest) {
		return audit.ResultDenied
	}
	return audit.ResultError
}

func (h *Handler) remove(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	who := caller(r)
	entry, err := h.reg.Remove(r.Context(), id, who)
	if err != nil {
		h.audit2(r.Context(), audit.Event{Kind: audit.KindAdmin, Workload: truncate(id), Result: resultOf(err), Reason: truncate("remove by " + who + ": " + err.Error()), Remote: r.RemoteAddr})
		h.fail(w, r, "remove workload", err)
		return
	}
	h.audit2(r.Context(), audit.Event{Kind: audit.KindAdmin, Workload: id, Result: audit.ResultOK, Reason: fmt.Sprintf("remove by %s (history %d)", who, entry.Seq), Remote: r.RemoteAddr})
	h.logger.Info("workload removed", "workload", id, "by", who, "history", entry.Seq)
	writeJSON(w, http.StatusOK, RemoveResponse{Entry: entry})
}

func (h *Handler) history(w http.ResponseWriter, r *http.Request) {
	hs, err := h.reg.History(r.Context())
	if err != nil {
		h.fail(w, r, "history", err)
		return
	}
	if hs == nil {
		hs = []registry.HistoryEntry{}
	}
	writeJSON(w, http.StatusOK, HistoryResponse{History: hs})
}

func (h *Handler) audit(w http.ResponseWriter, r *http.Request) {
	since, limit, err := ParseAuditQuery(r.URL.Query(), h.now())
	if err != nil {
		h.fail(w, r, "audit", err)
		return
	}
	if h.log == nil {
		writeJSON(w, http.StatusOK, AuditResponse{Events: []audit.Event{}})
		return
	}
	evs, err := h.log.List(r.Context(), since, limit)
	if err != nil {
		h.fail(w, r, "audit", err)
		return
	}
	if evs == nil {
		evs = []audit.Event{}
	}
	writeJSON(w, http.StatusOK, AuditResponse{Events: evs})
}

func (h *Handler) caInfo(w http.ResponseWriter, r *http.Request) {
	if h.ca == nil {
		writeError(w, http.StatusNotFound, "no mesh CA configured", "")
		return
	}
	writeJSON(w, http.StatusOK, caInfoOf(h.ca))
}

func caInfoOf(ca *meshca.CA) CAInfo {
	sum := sha256.Sum256(ca.Root().Raw)
	return CAInfo{
		RootPEM:             string(ca.RootPEM()),
		BundlePEM:           string(ca.BundlePEM()),
		RootSHA256:          hex.EncodeToString(sum[:]),
		RootSubject:         ca.Root().Subject.String(),
		RootNotAfter:        ca.Root().NotAfter.UTC(),
		IntermediateSubject: ca.Intermediate().Subject.String(),
		IntermediateExpiry:  ca.Intermediate().NotAfter.UTC(),
	}
}

func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	m, err := h.reg.Manifest(ctx)
	if err != nil {
		h.fail(w, r, "status", err)
		return
	}
	st := Status{Time: h.now().UTC(), Workloads: len(m.Manifest.Workloads), Head: m.Manifest.Head, Identity: caller(r)}
	if err := registry.VerifyManifest(m, h.reg.PublicKey()); err != nil {
		st.HistoryError = err.Error()
	} else {
		st.HistoryValid = true
	}
	if h.ca != nil {
		st.MeshRootSHA = caInfoOf(h.ca).RootSHA256
	}
	if h.log != nil {
		a, err := h.log.Anchor(ctx)
		if err != nil {
			h.fail(w, r, "status", err)
			return
		}
		st.AuditAnchor = &a
	}
	writeJSON(w, http.StatusOK, st)
}
