// Package client is the Go client of the Sealpod key broker: the attestation flow the agent
// runs (auth → attest with a CSR, whose answer carries the token, the sealed keys and the
// workload certificate, docs/kbs.md#the-attestation-sequence; the deprecated auth → attest →
// key → certificate flow remains for one release), the volume generation calls of encrypted
// volumes (VolumeBegin, VolumeCommit, with the attest answer's token) and the public
// endpoints sealctl uses (mesh CA, signed manifest). TLS is pinned: either to a CA certificate or to the SHA-256 of
// the broker's TLS CA certificate, as carried by the sealed envelope header.
package client

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sealpod/sealpod/kbs/api"
)

// Options configure a Client. Exactly one of CAPEM and CASHA256 is required (or HTTPClient).
type Options struct {
	// CAPEM is the broker's TLS CA certificate (PEM).
	CAPEM []byte
	// CASHA256 pins the broker's TLS CA by the hex SHA-256 of its DER; the server presents the
	// CA in its chain.
	CASHA256 string
	// HTTPClient replaces the client built from the options above (its TLS settings are used
	// as they are).
	HTTPClient *http.Client
	// Timeout per request (default 30 s).
	Timeout time.Duration
}

// Client talks to one broker.
type Client struct {
	base *url.URL
	hc   *http.Client
}

// APIError is a non-2xx answer of the broker.
type APIError struct {
	Status int
	Body   api.Error
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("key broker: HTTP %d", e.Status)
	if e.Body.Reason != "" {
		s += " (" + e.Body.Reason + ")"
	}
	return s + ": " + e.Body.Error
}

// New returns a client for the broker at baseURL (https://host:port).
func New(baseURL string, o Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("kbs client: url %q: %w", baseURL, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("kbs client: url %q: want https://host[:port]", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	hc := o.HTTPClient
	if hc == nil {
		tlsCfg, err := pinnedTLS(u.Hostname(), o)
		if err != nil {
			return nil, err
		}
		tr := &http.Transport{
			TLSClientConfig:     tlsCfg,
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     90 * time.Second,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout: 10 * time.Second,
		}
		hc = &http.Client{Transport: tr, Timeout: o.Timeout}
	}
	return &Client{base: u, hc: hc}, nil
}

func pinnedTLS(host string, o Options) (*tls.Config, error) {
	// The session cache lets a reconnecting guest (idle timeout, retry) resume its TLS session:
	// no certificate signature on the broker, no chain verification here beyond the pin check
	// that VerifyConnection repeats on resumed connections.
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(16)}
	switch {
	case len(o.CAPEM) > 0:
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(o.CAPEM) {
			return nil, errors.New("kbs client: CA PEM has no certificate")
		}
		cfg.RootCAs = pool
	case o.CASHA256 != "":
		want, err := hex.DecodeString(o.CASHA256)
		if err != nil || len(want) != sha256.Size {
			return nil, fmt.Errorf("kbs client: CA SHA-256 %q: want 64 hex digits", o.CASHA256)
		}
		// The chain is verified here, against the presented certificate whose hash is pinned.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyPinned(cs.PeerCertificates, want, host)
		}
	default:
		return nil, errors.New("kbs client: a CA certificate or a CA SHA-256 pin is required")
	}
	return cfg, nil
}

// verifyPinned verifies the server chain against the presented certificate with the pinned
// SHA-256 as the only root, including the host name.
func verifyPinned(certs []*x509.Certificate, want []byte, host string) error {
	if len(certs) == 0 {
		return errors.New("kbs TLS: no server certificate")
	}
	roots := x509.NewCertPool()
	inter := x509.NewCertPool()
	found := false
	for _, c := range certs[1:] {
		sum := sha256.Sum256(c.Raw)
		if bytes.Equal(sum[:], want) {
			roots.AddCert(c)
			found = true
		} else {
			inter.AddCert(c)
		}
	}
	if !found {
		return fmt.Errorf("kbs TLS: no certificate with the pinned CA SHA-256 %x in the server chain", want)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host})
	if err != nil {
		return fmt.Errorf("kbs TLS: server certificate: %w", err)
	}
	return nil
}

func (c *Client) do(ctx context.Context, method, path string, body any, hdr http.Header, out any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("kbs %s %s: marshal: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, rd)
	if err != nil {
		return nil, fmt.Errorf("kbs %s %s: %w", method, path, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("kbs %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("kbs %s %s: read body: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(data, &e.Body) != nil || e.Body.Error == "" {
			e.Body.Error = strings.TrimSpace(string(data))
		}
		return resp, e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp, fmt.Errorf("kbs %s %s: decode answer: %w", method, path, err)
		}
	}
	return resp, nil
}

// CA returns the broker's mesh CA.
func (c *Client) CA(ctx context.Context) (*api.CAResponse, error) {
	var out api.CAResponse
	_, err := c.do(ctx, http.MethodGet, api.PathCA, nil, nil, &out)
	return &out, err
}

// Manifest returns the broker's signed manifest (not verified: use api.VerifyManifest).
func (c *Client) Manifest(ctx context.Context) (*api.SignedManifest, error) {
	var out api.SignedManifest
	_, err := c.do(ctx, http.MethodGet, api.PathManifest, nil, nil, &out)
	return &out, err
}

// Session is one attestation: the session cookie, the nonce and, after Attest, the token.
type Session struct {
	c         *Client
	TEE       string
	Workload  string
	Nonce     []byte
	cookie    string
	Token     string
	ExpiresAt time.Time
	pub       [32]byte
	priv      *ecdh.PrivateKey
}

// Auth starts an attestation session and makes the TEE key pair (X25519, in memory).
func (c *Client) Auth(ctx context.Context, tee, workload string) (*Session, error) {
	var out api.AuthResponse
	resp, err := c.do(ctx, http.MethodPost, api.PathAuth, api.AuthRequest{TEE: tee, Workload: workload}, nil, &out)
	if err != nil {
		return nil, err
	}
	s := &Session{c: c, TEE: tee, Workload: workload, Nonce: out.Nonce}
	for _, ck := range resp.Cookies() {
		if ck.Name == api.SessionCookie {
			s.cookie = ck.Value
		}
	}
	if s.cookie == "" || len(s.Nonce) != api.NonceSize {
		return nil, errors.New("kbs auth: answer without session cookie or 32-byte nonce")
	}
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("kbs auth: TEE key: %w", err)
	}
	s.priv = k
	copy(s.pub[:], k.PublicKey().Bytes())
	return s, nil
}

// Via returns a copy of the session that talks to another replica of the same broker (same
// state directory and store): tokens verify there, nonces do not (auth and attest need the
// same replica).
func (s *Session) Via(c *Client) *Session {
	cp := *s
	cp.c = c
	return &cp
}

// PublicKey is the session's TEE public key.
func (s *Session) PublicKey() []byte { return append([]byte(nil), s.pub[:]...) }

// ReportData is the REPORT_DATA the evidence must carry.
func (s *Session) ReportData() [64]byte { return api.ReportData(s.Nonce, s.pub[:]) }

func (s *Session) headers(withToken bool) http.Header {
	h := http.Header{}
	h.Set("Cookie", (&http.Cookie{Name: api.SessionCookie, Value: s.cookie}).String())
	if withToken {
		h.Set("Authorization", "Bearer "+s.Token)
	}
	return h
}

// CSRBindingURI is the URI SAN the CSR given to AttestRelease must carry.
func (s *Session) CSRBindingURI() string { return api.CSRBindingURI(s.ReportData()) }

// Release is the answer of the two-request flow.
type Release struct {
	Keys api.Keys
	// Chain is the workload certificate, leaf then intermediate (DER); RootPEM the mesh root.
	// Callers check that the leaf is for their key and chains to the root.
	Chain   [][]byte
	RootPEM string
}

// AttestRelease sends evidence (made for s.ReportData()) with a CSR that carries
// s.CSRBindingURI(), keeps the token and returns the opened keys and the certificate chain:
// the second and last request of the flow.
func (s *Session) AttestRelease(ctx context.Context, ev *api.Evidence, csrDER []byte) (*Release, error) {
	if len(csrDER) == 0 {
		return nil, errors.New("kbs attest: empty CSR")
	}
	var out api.AttestResponse
	if _, err := s.c.do(ctx, http.MethodPost, api.PathAttest, api.AttestRequest{TEEPubKey: s.pub[:], Evidence: *ev, CSR: csrDER}, s.headers(false), &out); err != nil {
		return nil, err
	}
	if out.TEE != s.TEE {
		return nil, fmt.Errorf("kbs attest: token for tee %q, asked for %q", out.TEE, s.TEE)
	}
	if len(out.SealedKeys) == 0 || len(out.Chain) == 0 || out.RootPEM == "" {
		return nil, fmt.Errorf("kbs attest %s: answer without sealed keys, certificate chain or root (a broker without the two-request flow?)", s.Workload)
	}
	plain, err := api.OpenKeyWith(out.SealedKeys, s.pub[:], s.priv)
	if err != nil {
		return nil, fmt.Errorf("kbs attest %s: sealed keys: %w", s.Workload, err)
	}
	keys, err := api.ParseKeys(plain)
	clear(plain)
	if err != nil {
		return nil, fmt.Errorf("kbs attest %s: %w", s.Workload, err)
	}
	s.Token = out.Token
	s.ExpiresAt = time.Unix(out.ExpiresAt, 0)
	return &Release{Keys: keys, Chain: out.Chain, RootPEM: out.RootPEM}, nil
}

// Attest sends evidence (made for s.ReportData()) and keeps the token: the second request
// of the deprecated four-request flow (Key and Certificate follow). Use AttestRelease.
func (s *Session) Attest(ctx context.Context, ev *api.Evidence) error {
	var out api.AttestResponse
	if _, err := s.c.do(ctx, http.MethodPost, api.PathAttest, api.AttestRequest{TEEPubKey: s.pub[:], Evidence: *ev}, s.headers(false), &out); err != nil {
		return err
	}
	if out.TEE != s.TEE {
		return fmt.Errorf("kbs attest: token for tee %q, asked for %q", out.TEE, s.TEE)
	}
	s.Token = out.Token
	s.ExpiresAt = time.Unix(out.ExpiresAt, 0)
	return nil
}

// Key fetches and opens the workload's data key (deprecated four-request flow).
func (s *Session) Key(ctx context.Context) ([]byte, error) {
	h := s.headers(true)
	h.Set(api.HeaderTEEPubKey, base64.StdEncoding.EncodeToString(s.pub[:]))
	var out api.KeyResponse
	if _, err := s.c.do(ctx, http.MethodGet, api.ResourceKeyPath(s.Workload), nil, h, &out); err != nil {
		return nil, err
	}
	key, err := api.OpenKeyWith(out.SealedKey, s.pub[:], s.priv)
	if err != nil {
		return nil, fmt.Errorf("kbs key %s: %w", s.Workload, err)
	}
	if len(key) != api.DataKeySize {
		return nil, fmt.Errorf("kbs key %s: %d bytes, want %d", s.Workload, len(key), api.DataKeySize)
	}
	return key, nil
}

// Certificate asks for a workload certificate for the CSR (DER) (deprecated four-request
// flow).
func (s *Session) Certificate(ctx context.Context, csrDER []byte) (*api.CertificateResponse, error) {
	var out api.CertificateResponse
	if _, err := s.c.do(ctx, http.MethodPost, api.PathCertificate, api.CertificateRequest{CSR: csrDER}, s.headers(true), &out); err != nil {
		return nil, err
	}
	if len(out.Chain) == 0 {
		return nil, errors.New("kbs certificate: empty chain")
	}
	return &out, nil
}

// VolumeBegin starts the generation bump of an encrypted volume (identity
// "<namespace>/<claim>", api.ValidateVolumeIdentity) for the workload token (the attest
// answer's, Session.Token) names: the committed generation (0 for a volume the broker has not
// seen) and the pending one (committed+1; the same until it is committed).
func (c *Client) VolumeBegin(ctx context.Context, token, volume string) (committed, pending uint64, err error) {
	req := api.VolumeBeginRequest{Volume: volume}
	if err := req.Validate(); err != nil {
		return 0, 0, fmt.Errorf("kbs volume begin: %w", err)
	}
	var out api.VolumeBeginResponse
	if _, err := c.do(ctx, http.MethodPost, api.PathVolumeBegin, req, bearer(token), &out); err != nil {
		return 0, 0, err
	}
	if out.Pending != out.Committed+1 {
		return 0, 0, fmt.Errorf("kbs volume begin %s: answer committed %d, pending %d: pending is not committed+1", volume, out.Committed, out.Pending)
	}
	return out.Committed, out.Pending, nil
}

// VolumeCommit commits generation gen (the pending generation VolumeBegin returned) of the
// volume. A generation that is not the pending one is refused with an *APIError, status 409,
// reason api.ReasonVolumeConflict.
func (c *Client) VolumeCommit(ctx context.Context, token, volume string, gen uint64) error {
	req := api.VolumeCommitRequest{Volume: volume, Generation: gen}
	if err := req.Validate(); err != nil {
		return fmt.Errorf("kbs volume commit: %w", err)
	}
	var out api.VolumeCommitResponse
	if _, err := c.do(ctx, http.MethodPost, api.PathVolumeCommit, req, bearer(token), &out); err != nil {
		return err
	}
	if out.Committed != gen {
		return fmt.Errorf("kbs volume commit %s: broker committed %d, asked %d", volume, out.Committed, gen)
	}
	return nil
}

func bearer(token string) http.Header {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	return h
}
