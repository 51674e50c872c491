// Package server is the HTTPS server of the Sealpod key broker (docs/kbs.md#protocol): auth (nonce +
// session), attest (evidence verification and appraisal against the registered workload,
// signed token), key release (nacl anonymous box to the TEE key), workload certificates, the
// volume generation calls of encrypted volumes (volume.go), the public CA and manifest, the admin API of package admin, /metrics, /healthz and /readyz.
package server

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/meshca"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/verify"
)

// Defaults.
const (
	DefaultNonceTTL     = 5 * time.Minute
	DefaultTokenTTL     = 5 * time.Minute
	DefaultCertValidity = 24 * time.Hour
	DefaultMaxSessions  = 100000

	maxAuthBody   = 4 << 10
	maxAttestBody = 256 << 10
	maxCertBody   = 64 << 10
	handlerBudget = 20 * time.Second
	// maxAuditReason keeps audit reasons within the audit log's field limit.
	maxAuditReason = 900
)

// Config configures a Server.
type Config struct {
	Registry *registry.Registry
	Audit    *audit.Log
	MeshCA   *meshca.CA
	// TokenSigner is the state's signing key; the token MAC key is derived from it
	// (DeriveTokenKey) unless TokenKey is set.
	TokenSigner crypto.Signer
	// TokenKey, if set, is the 32-byte token MAC key (for a signer whose private key cannot
	// be read). Replicas must share it.
	TokenKey []byte
	// Verifiers by TEE name. A TEE without a verifier is refused at auth.
	Verifiers map[string]verify.Verifier
	// Admin is mounted at /kbs/v1/admin/ (it authenticates admin client certificates itself).
	Admin http.Handler
	// Ready reports whether the backing store answers; nil = always ready.
	Ready func(ctx context.Context) error

	NonceTTL, TokenTTL, CertValidity time.Duration
	MaxSessions                      int
	// MaxSessionsPerSource bounds the open sessions of one source (IPv4 address or IPv6
	// /64); default MaxSessions/SourceShareDivisor (at least 1). Past it, auth answers 429.
	MaxSessionsPerSource int
	Logger               *slog.Logger
	Now                  func() time.Time
}

// Server is the broker's HTTP handler plus its TLS serving logic.
type Server struct {
	cfg      Config
	tokens   *tokenSigner
	sessions *sessions
	log      *slog.Logger
	metrics  *metrics
	mux      *http.ServeMux
	rootPEM  string // the mesh root, PEM, as attest answers carry it
}

// New builds a server.
func New(cfg Config) (*Server, error) {
	if cfg.Registry == nil || cfg.Audit == nil || cfg.MeshCA == nil || (cfg.TokenSigner == nil && cfg.TokenKey == nil) {
		return nil, errors.New("server config: registry, audit, mesh CA and token signer (or token key) are required")
	}
	if cfg.NonceTTL <= 0 {
		cfg.NonceTTL = DefaultNonceTTL
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.CertValidity <= 0 {
		cfg.CertValidity = DefaultCertValidity
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.MaxSessionsPerSource <= 0 {
		cfg.MaxSessionsPerSource = max(cfg.MaxSessions/SourceShareDivisor, 1)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tokenKey := cfg.TokenKey
	if tokenKey == nil {
		k, err := DeriveTokenKey(cfg.TokenSigner)
		if err != nil {
			return nil, fmt.Errorf("server config: %w", err)
		}
		tokenKey = k
	}
	ts, err := newTokenSigner(tokenKey)
	if err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	s := &Server{cfg: cfg, tokens: ts, sessions: newSessions(cfg.NonceTTL, cfg.MaxSessions, cfg.MaxSessionsPerSource), log: cfg.Logger, metrics: newMetrics(),
		rootPEM: string(cfg.MeshCA.RootPEM())}
	cfg.Audit.SetErrorHandler(func(err error, n int) {
		s.log.Error("audit append failed", "events", n, "err", err)
	})
	if v, ok := cfg.Verifiers[api.TEESim]; ok && v != nil {
		s.log.Warn("INSECURE: sim evidence is accepted (--insecure-sim-roots); sim guests are not confidential and every sim token says tee=sim")
	}
	if v, ok := cfg.Verifiers[api.TEESimTDX]; ok && v != nil {
		s.log.Warn("INSECURE: sim-tdx evidence is accepted (--insecure-sim-roots with a fake Intel root); sim-tdx guests are not confidential and every sim-tdx token says tee=sim-tdx")
	}
	if v, ok := cfg.Verifiers[api.TEESimPEF]; ok && v != nil {
		s.log.Warn("INSECURE: sim-pef evidence is accepted (--insecure-sim-pef); the node plays the PEF ultravisor with a software host key, sim-pef guests are not confidential and every sim-pef token says tee=sim-pef")
	}
	mux := http.NewServeMux()
	mux.Handle("POST "+api.PathAuth, s.instrument("auth", s.handleAuth))
	mux.Handle("POST "+api.PathAttest, s.instrument("attest", s.handleAttest))
	// Deprecated (the four-request flow, kept for one release): attest answers with the key
	// and the certificate when the request carries a CSR.
	mux.Handle("GET "+api.PathResource+"{workload}/key", s.instrument("key", s.handleKey))
	mux.Handle("POST "+api.PathCertificate, s.instrument("certificate", s.handleCertificate))
	mux.Handle("POST "+api.PathVolumeBegin, s.instrument("volume-begin", s.handleVolumeBegin))
	mux.Handle("POST "+api.PathVolumeCommit, s.instrument("volume-commit", s.handleVolumeCommit))
	mux.Handle("GET "+api.PathCA, s.instrument("ca", s.handleCA))
	mux.Handle("GET "+api.PathManifest, s.instrument("manifest", s.handleManifest))
	if cfg.Admin != nil {
		mux.Handle(api.PathAdmin, http.MaxBytesHandler(cfg.Admin, 1<<20))
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { s.writeBody(w, r, "healthz", []byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.handleReady)
	s.mux = mux
	return s, nil
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// TLSConfig returns the listener's TLS configuration: the server certificate chain (with the
// TLS CA appended so clients can pin it by hash) and optional admin client certificates.
func TLSConfig(cert tls.Certificate, tlsCAPEM []byte, adminCAs *x509.CertPool) (*tls.Config, error) {
	chain := cert
	chain.Certificate = slices.Clone(cert.Certificate)
	if len(tlsCAPEM) > 0 {
		b, _ := pem.Decode(tlsCAPEM)
		if b == nil || b.Type != "CERTIFICATE" {
			return nil, errors.New("tls config: TLS CA PEM has no certificate")
		}
		if !slices.ContainsFunc(chain.Certificate, func(c []byte) bool { return string(c) == string(b.Bytes) }) {
			chain.Certificate = append(chain.Certificate, b.Bytes)
		}
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{chain},
	}
	if adminCAs != nil {
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		cfg.ClientCAs = adminCAs
	}
	return cfg, nil
}

// Serve serves HTTPS on ln until ctx is cancelled, then shuts down gracefully (in-flight
// requests get up to 15 s).
func (s *Server) Serve(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	hs := &http.Server{
		Handler:           s.mux,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(tls.NewListener(ln, tlsCfg)) }()
	s.log.Info("key broker serving", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("key broker shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	s.log.Info("key broker stopped")
	return nil
}

// httpError is a handler failure with its status and wire error.
type httpError struct {
	status     int
	body       api.Error
	retryAfter time.Duration // > 0: sent as Retry-After (whole seconds, rounded up)
}

func (e *httpError) Error() string { return e.body.Error }

func fail(status int, reason, format string, args ...any) *httpError {
	msg := fmt.Sprintf(format, args...)
	if len(msg) > maxAuditReason {
		msg = msg[:maxAuditReason] + "..."
	}
	return &httpError{status: status, body: api.Error{Error: msg, Reason: reason}}
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) (auditEvent, *httpError)

// auditEvent is what a handler wants recorded; Kind empty = nothing.
type auditEvent struct {
	kind, workload, tee string
	// mustAudit: the response is withheld when the audit record cannot be written.
	mustAudit bool
	// detail is the reason recorded for a success (public values only; a refusal records
	// its error).
	detail string
}

func (s *Server) instrument(name string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(r.Context(), handlerBudget)
		defer cancel()
		r = r.WithContext(ctx)
		rec := &bufferedWriter{header: http.Header{}}
		ev, herr := h(rec, r)
		status := http.StatusOK
		if herr != nil {
			status = herr.status
		}
		if ev.kind != "" {
			// Only well-formed names reach the audit record (the error text says the rest).
			if !api.ValidWorkloadID(ev.workload) {
				ev.workload = ""
			}
			if !api.ValidTEE(ev.tee) {
				ev.tee = ""
			}
			e := audit.Event{Time: s.cfg.Now().UTC(), Kind: ev.kind, Workload: ev.workload, TEE: ev.tee, Remote: r.RemoteAddr, Result: audit.ResultOK, Reason: ev.detail}
			if herr != nil {
				e.Result = audit.ResultDenied
				if status == http.StatusInternalServerError || status == http.StatusServiceUnavailable {
					e.Result = audit.ResultError
				}
				e.Reason = herr.body.Error
				if len(e.Reason) > maxAuditReason {
					e.Reason = e.Reason[:maxAuditReason] + "…"
				}
			}
			// A token, key or certificate is released only once its event is durable; other
			// events (auth, refusals) are queued without waiting: they commit in order with
			// the next transaction, so they are durable by the time anything later is.
			appendEvent := s.cfg.Audit.Enqueue
			if ev.mustAudit && herr == nil {
				appendEvent = s.cfg.Audit.Append
			}
			if err := appendEvent(ctx, e); err != nil {
				s.log.Error("audit append failed", "kind", ev.kind, "workload", ev.workload, "err", err)
				if ev.mustAudit && herr == nil {
					herr = fail(http.StatusInternalServerError, api.ReasonInternal, "audit log unavailable")
					status = herr.status
				}
			}
		}
		if herr != nil {
			level := slog.LevelInfo
			if status == http.StatusInternalServerError {
				level = slog.LevelError
			}
			s.log.Log(ctx, level, "request refused", "endpoint", name, "status", status, "reason", herr.body.Reason,
				"field", herr.body.Field, "error", herr.body.Error, "workload", ev.workload, "tee", ev.tee, "remote", r.RemoteAddr)
			if herr.retryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(int((herr.retryAfter+time.Second-1)/time.Second)))
			}
			s.writeJSON(w, r, name, status, herr.body)
		} else {
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			// A known length spares the chunked encoding of bodies over 2 KiB (attest answers).
			w.Header().Set("Content-Length", strconv.Itoa(len(rec.body)))
			w.WriteHeader(http.StatusOK)
			s.writeBody(w, r, name, rec.body)
		}
		s.metrics.observe(name, status, time.Since(start))
	})
}

// bufferedWriter holds a handler's success response until the audit record is durable.
type bufferedWriter struct {
	header http.Header
	body   []byte
}

func (b *bufferedWriter) Header() http.Header { return b.header }
func (b *bufferedWriter) Write(p []byte) (int, error) {
	b.body = append(b.body, p...)
	return len(p), nil
}
func (b *bufferedWriter) WriteHeader(int) {}

func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, endpoint string, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		s.logUndelivered(r, endpoint, err)
	}
}

// writeBody sends a response body after the status line. A failed write means the client
// went away: the status is already sent, so the log is the only place to record it.
func (s *Server) writeBody(w http.ResponseWriter, r *http.Request, endpoint string, b []byte) {
	if _, err := w.Write(b); err != nil {
		s.logUndelivered(r, endpoint, err)
	}
}

func (s *Server) logUndelivered(r *http.Request, endpoint string, err error) {
	s.log.Warn("response not delivered", "endpoint", endpoint, "remote", r.RemoteAddr, "err", err)
}

func encode(w http.ResponseWriter, v any) *httpError {
	if err := json.NewEncoder(w).Encode(v); err != nil {
		return fail(http.StatusInternalServerError, api.ReasonInternal, "encode response: %v", err)
	}
	return nil
}

func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) *httpError {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	if err := api.DecodeJSON(r.Body, v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fail(http.StatusRequestEntityTooLarge, api.ReasonBadRequest, "request body larger than %d bytes", limit)
		}
		return fail(http.StatusBadRequest, api.ReasonBadRequest, "decode request body: %v", err)
	}
	return nil
}

func (s *Server) lookup(ctx context.Context, id string) (*registry.Workload, *httpError) {
	wl, secret, herr := s.lookupForRelease(ctx, id)
	clear(secret)
	return wl, herr
}

// lookupForRelease is lookup plus the workload's volume secret (nil when it has none).
func (s *Server) lookupForRelease(ctx context.Context, id string) (*registry.Workload, []byte, *httpError) {
	wl, secret, err := s.cfg.Registry.GetForRelease(ctx, id)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, nil, fail(http.StatusNotFound, api.ReasonNotFound, "workload %q is not registered", id)
	}
	if errors.Is(err, registry.ErrTampered) || errors.Is(err, registry.ErrRollback) {
		// A record that does not match the signed history is refused; the message reaches the
		// audit record of the request.
		s.log.Error("registry record refused", "workload", id, "err", err)
		return nil, nil, fail(http.StatusInternalServerError, api.ReasonInternal, "workload %s refused: %v", id, err)
	}
	if err != nil {
		s.log.Error("registry get", "workload", id, "err", err)
		return nil, nil, fail(http.StatusInternalServerError, api.ReasonInternal, "registry unavailable")
	}
	return wl, secret, nil
}

func (s *Server) handleAuth(w http.ResponseWriter, r *http.Request) (auditEvent, *httpError) {
	ev := auditEvent{kind: audit.KindAuth}
	var req api.AuthRequest
	if herr := decodeBody(w, r, maxAuthBody, &req); herr != nil {
		return ev, herr
	}
	ev.workload, ev.tee = req.Workload, req.TEE
	if err := req.Validate(); err != nil {
		return ev, fail(http.StatusBadRequest, api.ReasonBadRequest, "%v", err)
	}
	if herr := s.teeEnabled(req.TEE); herr != nil {
		return ev, herr
	}
	wl, herr := s.lookup(r.Context(), req.Workload)
	if herr != nil {
		return ev, herr
	}
	if !slices.Contains(wl.TEEs, req.TEE) {
		return ev, fail(http.StatusForbidden, api.ReasonPolicy, "workload %q does not allow tee %s (allowed: %s)", wl.ID, req.TEE, strings.Join(wl.TEEs, ","))
	}
	now := s.cfg.Now()
	sess, err := s.sessions.open(req.TEE, req.Workload, sourceOf(r.RemoteAddr), now)
	if errors.Is(err, ErrSourceShare) || errors.Is(err, ErrTooManySession) {
		herr := fail(http.StatusServiceUnavailable, api.ReasonSession, "%v", err)
		if errors.Is(err, ErrSourceShare) {
			herr = fail(http.StatusTooManyRequests, api.ReasonSession, "%v (at most %d per source until they are used or expire)", err, s.cfg.MaxSessionsPerSource)
		}
		herr.retryAfter = s.sessions.retryAfter(now)
		return ev, herr
	}
	if err != nil {
		return ev, fail(http.StatusInternalServerError, api.ReasonInternal, "open session: %v", err)
	}
	http.SetCookie(w, &http.Cookie{Name: api.SessionCookie, Value: sess.id, Path: "/kbs/v1/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, Expires: sess.expires})
	return ev, encode(w, api.AuthResponse{Nonce: sess.nonce, ExpiresAt: sess.expires.Unix()})
}

func (s *Server) teeEnabled(tee string) *httpError {
	if v := s.cfg.Verifiers[tee]; v == nil {
		if tee == api.TEESim {
			return fail(http.StatusForbidden, api.ReasonUnsupported, "tee sim is not enabled on this broker (start it with --insecure-sim-roots)")
		}
		if tee == api.TEESimTDX {
			return fail(http.StatusForbidden, api.ReasonUnsupported, "tee sim-tdx is not enabled on this broker (start it with --insecure-sim-roots naming a roots file from `sealpod-kbs sim-roots --tdx-key-out`)")
		}
		if tee == api.TEESimPEF {
			return fail(http.StatusForbidden, api.ReasonUnsupported, "tee sim-pef is not enabled on this broker (start it with --insecure-sim-pef)")
		}
		return fail(http.StatusNotImplemented, api.ReasonUnsupported, "tee %s: no verifier configured", tee)
	}
	return nil
}

func sessionID(r *http.Request) string {
	c, err := r.Cookie(api.SessionCookie)
	if err != nil {
		return ""
	}
	return c.Value
}

// policyFor builds the verification policy of workload wl for tee.
func policyFor(wl *registry.Workload, tee string, reportData []byte) (verify.Policy, error) {
	hd, err := hex.DecodeString(wl.EnvelopeDigest)
	if err != nil || len(hd) != 32 {
		return verify.Policy{}, fmt.Errorf("workload %s field envelopeDigest: not 32 bytes of hex", wl.ID)
	}
	p := verify.Policy{Measurements: wl.Measurements[tee], HostData: hd, ReportData: reportData}
	if tee == api.TEEPEF || tee == api.TEESimPEF {
		// No report: the guest signs with the credential sealed in its ESM blob (kbs/verify/pef).
		if p.PEFCredential, err = hex.DecodeString(wl.PEFCredential); err != nil || len(p.PEFCredential) != 32 {
			return p, fmt.Errorf("workload %s field pefCredential: not 32 bytes of hex", wl.ID)
		}
		return p, nil
	}
	if len(p.Measurements) == 0 {
		return p, fmt.Errorf("workload %s field measurements: none for tee %s", wl.ID, tee)
	}
	switch tee {
	case api.TEESNP, api.TEESim:
		if m := wl.MinTCB.SNP; m != nil {
			p.MinSNPTCB = &verify.SNPTCB{Bootloader: m.Bootloader, TEE: m.TEE, SNP: m.SNP, Microcode: m.Microcode}
		}
	case api.TEETDX, api.TEESimTDX:
		if wl.MinTCB.TDXTeeTCBSVN != "" {
			b, err := hex.DecodeString(wl.MinTCB.TDXTeeTCBSVN)
			if err != nil || len(b) != 16 {
				return p, fmt.Errorf("workload %s field minTcb.tdxTeeTcbSvn: not 16 bytes of hex", wl.ID)
			}
			p.MinTDXTeeTCBSVN = b
		}
	}
	return p, nil
}

func (s *Server) handleAttest(w http.ResponseWriter, r *http.Request) (auditEvent, *httpError) {
	ev := auditEvent{kind: audit.KindAttest}
	sid := sessionID(r)
	if sid == "" {
		return ev, fail(http.StatusUnauthorized, api.ReasonSession, "no session cookie: call %s first", api.PathAuth)
	}
	// The session (and its nonce) is consumed by any attest attempt, whatever its outcome.
	sess, err := s.sessions.take(sid, s.cfg.Now())
	if err != nil {
		return ev, fail(http.StatusUnauthorized, api.ReasonNonce, "nonce refused: %v (replayed or from another replica; call %s again)", err, api.PathAuth)
	}
	ev.workload, ev.tee = sess.workload, sess.tee
	var req api.AttestRequest
	if herr := decodeAttest(w, r, maxAttestBody, &req); herr != nil {
		return ev, herr
	}
	release := req.CSR != nil // the two-request flow
	if release {
		ev.kind = audit.KindRelease
	}
	if err := req.Validate(); err != nil {
		return ev, fail(http.StatusBadRequest, api.ReasonBadRequest, "%v", err)
	}
	if herr := s.teeEnabled(sess.tee); herr != nil {
		return ev, herr
	}
	wl, volumeSecret, herr := s.lookupForRelease(r.Context(), sess.workload)
	defer clear(volumeSecret)
	if herr != nil {
		return ev, herr
	}
	if !slices.Contains(wl.TEEs, sess.tee) {
		return ev, fail(http.StatusForbidden, api.ReasonPolicy, "workload %q does not allow tee %s", wl.ID, sess.tee)
	}
	rd := api.ReportData(sess.nonce, req.TEEPubKey)
	var csr *x509.CertificateRequest
	if release {
		// Checked before the evidence: refusing a bad CSR costs one P-256 verify, not a P-384.
		if csr, herr = checkCSR(req.CSR, rd); herr != nil {
			return ev, herr
		}
		if len(wl.DataKey) != api.DataKeySize {
			return ev, fail(http.StatusInternalServerError, api.ReasonInternal, "workload %s has no %d-byte data key", wl.ID, api.DataKeySize)
		}
	}
	pol, err := policyFor(wl, sess.tee, rd[:])
	if err != nil {
		return ev, fail(http.StatusForbidden, api.ReasonPolicy, "%v", err)
	}
	v := s.cfg.Verifiers[sess.tee]
	vstart := time.Now()
	res, err := v.Verify(r.Context(), &req.Evidence, pol)
	s.metrics.verified(sess.tee, err, time.Since(vstart))
	if err != nil {
		var rej *verify.Rejection
		if errors.As(err, &rej) {
			return ev, &httpError{status: http.StatusForbidden, body: api.Error{Error: rej.Error(), Reason: api.ReasonEvidence,
				Field: rej.Field, Expected: rej.Expected, Got: rej.Got}}
		}
		if errors.Is(err, verify.ErrUnsupported) {
			return ev, fail(http.StatusNotImplemented, api.ReasonUnsupported, "%v", err)
		}
		return ev, fail(http.StatusInternalServerError, api.ReasonInternal, "verify %s evidence: %v", sess.tee, err)
	}
	now := s.cfg.Now()
	exp := now.Add(s.cfg.TokenTTL)
	resp := api.AttestResponse{ExpiresAt: exp.Unix(), TEE: res.TEE}
	if release {
		if herr := s.release(&resp, wl, volumeSecret, csr, req.TEEPubKey); herr != nil {
			return ev, herr
		}
	}
	resp.Token, err = s.tokens.sign(Claims{SessionID: sess.id, Workload: wl.ID, TEE: res.TEE, PubKeyHash: PubKeyHash(req.TEEPubKey),
		Generation: wl.Generation, Measure: res.Measurement, Released: release, IssuedAt: now.Unix(), ExpiresAt: exp.Unix()})
	if err != nil {
		return ev, fail(http.StatusInternalServerError, api.ReasonInternal, "%v", err)
	}
	ev.mustAudit = true
	return ev, encode(w, resp)
}

// authorize checks the bearer token of the deprecated key and certificate requests, its
// session binding and that the workload has not changed since the evidence was appraised.
func (s *Server) authorize(r *http.Request, ev *auditEvent) (*Claims, *registry.Workload, *httpError) {
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		return nil, nil, fail(http.StatusUnauthorized, api.ReasonToken, "missing bearer token")
	}
	c, err := s.tokens.verify(tok, s.cfg.Now())
	if errors.Is(err, ErrTokenExpired) {
		return nil, nil, fail(http.StatusUnauthorized, api.ReasonTokenExpired, "%v: attest again", err)
	}
	if err != nil {
		return nil, nil, fail(http.StatusUnauthorized, api.ReasonToken, "%v", err)
	}
	ev.workload, ev.tee = c.Workload, c.TEE
	if sid := sessionID(r); sid != c.SessionID {
		return nil, nil, fail(http.StatusUnauthorized, api.ReasonToken, "token is bound to another session")
	}
	if c.Released {
		// The two-request flow released the key and the certificate with this token: it
		// does not fetch them again.
		return nil, nil, fail(http.StatusForbidden, api.ReasonToken, "the key and certificate were released with this token's attest answer: attest again")
	}
	wl, herr := s.lookup(r.Context(), c.Workload)
	if herr != nil {
		return nil, nil, herr
	}
	if wl.Generation != c.Generation {
		return nil, nil, fail(http.StatusUnauthorized, api.ReasonToken, "workload %s changed since attestation (generation %d, token %d): attest again", wl.ID, wl.Generation, c.Generation)
	}
	return c, wl, nil
}

func (s *Server) handleKey(w http.ResponseWriter, r *http.Request) (auditEvent, *httpError) {
	ev := auditEvent{kind: audit.KindKey, workload: r.PathValue("workload")}
	c, wl, herr := s.authorize(r, &ev)
	if herr != nil {
		return ev, herr
	}
	if path := r.PathValue("workload"); path != c.Workload {
		ev.workload = path
		return ev, fail(http.StatusForbidden, api.ReasonToken, "token is for workload %s, not %s", c.Workload, path)
	}
	pub, err := decodeB64Header(r.Header.Get(api.HeaderTEEPubKey))
	if err != nil || len(pub) != api.TEEPubKeySize {
		return ev, fail(http.StatusBadRequest, api.ReasonBadRequest, "header %s: want the base64 32-byte TEE public key", api.HeaderTEEPubKey)
	}
	if PubKeyHash(pub) != c.PubKeyHash {
		return ev, fail(http.StatusForbidden, api.ReasonToken, "TEE public key does not match the attested one")
	}
	if len(wl.DataKey) != api.DataKeySize {
		return ev, fail(http.StatusInternalServerError, api.ReasonInternal, "workload %s has no %d-byte data key", wl.ID, api.DataKeySize)
	}
	sealed, err := api.SealKey(wl.DataKey, pub)
	if errors.Is(err, api.ErrBadTEEKey) {
		return ev, fail(http.StatusBadRequest, api.ReasonBadRequest, "header %s: %v", api.HeaderTEEPubKey, err)
	}
	if err != nil {
		return ev, fail(http.StatusInternalServerError, api.ReasonInternal, "%v", err)
	}
	ev.mustAudit = true
	return ev, encode(w, api.KeyResponse{SealedKey: sealed})
}

func (s *Server) handleCertificate(w http.ResponseWriter, r *http.Request) (auditEvent, *httpError) {
	ev := auditEvent{kind: audit.KindCertificate}
	_, wl, herr := s.authorize(r, &ev)
	if herr != nil {
		return ev, herr
	}
	var req api.CertificateRequest
	if herr := decodeBody(w, r, maxCertBody, &req); herr != nil {
		return ev, herr
	}
	if err := req.Validate(); err != nil {
		return ev, fail(http.StatusBadRequest, api.ReasonBadRequest, "%v", err)
	}
	chain, err := s.cfg.MeshCA.Issue(req.CSR, wl.ID, wl.SANs, s.cfg.CertValidity)
	if errors.Is(err, meshca.ErrBadCSR) {
		return ev, fail(http.StatusBadRequest, api.ReasonBadRequest, "%v", err)
	}
	if err != nil {
		return ev, fail(http.StatusInternalServerError, api.ReasonInternal, "issue certificate: %v", err)
	}
	resp := api.CertificateResponse{Chain: chain, RootPEM: string(s.cfg.MeshCA.RootPEM())}
	var sb strings.Builder
	for _, der := range chain {
		sb.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	resp.ChainPEM = sb.String()
	ev.mustAudit = true
	return ev, encode(w, resp)
}

func (s *Server) handleCA(w http.ResponseWriter, r *http.Request) (auditEvent, *httpError) {
	return auditEvent{}, encode(w, api.CAResponse{MeshRootPEM: string(s.cfg.MeshCA.RootPEM()), MeshBundlePEM: string(s.cfg.MeshCA.BundlePEM())})
}

func (s *Server) handleManifest(w http.ResponseWriter, r *http.Request) (auditEvent, *httpError) {
	m, err := s.cfg.Registry.Manifest(r.Context())
	if err != nil {
		s.log.Error("manifest", "err", err)
		return auditEvent{}, fail(http.StatusInternalServerError, api.ReasonInternal, "manifest unavailable")
	}
	return auditEvent{}, encode(w, m)
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := s.cfg.Ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	s.writeBody(w, r, "readyz", []byte("ok\n"))
}
