// Package adminclient is the Go client of the key broker's administration API (docs/kbs.md,
// "Admin API"): its wire types, the sealctl-kbs.json client config and the mutual-TLS client
// used by `sealctl kbs` and `sealctl image create`. It imports only kbs/api and the standard
// library, so sealctl links nothing of the broker's server side (kbs/admin serves the API).
package adminclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sealpod/sealpod/kbs/api"
)

// APIError is a non-2xx answer of the admin API.
type APIError struct {
	StatusCode int
	Message    string
	Field      string // workload field for validation errors
}

func (e *APIError) Error() string {
	return fmt.Sprintf("kbs admin API: %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// Is maps HTTP statuses to sentinels: 404 -> api.ErrWorkloadNotFound, 400 with a field ->
// api.ErrInvalidWorkload.
func (e *APIError) Is(target error) bool {
	switch target {
	case api.ErrWorkloadNotFound:
		return e.StatusCode == http.StatusNotFound
	case api.ErrInvalidWorkload:
		return e.StatusCode == http.StatusBadRequest && e.Field != ""
	}
	return false
}

// Client talks to the admin API over mutual TLS.
type Client struct {
	base string // https://host:port
	hc   *http.Client
}

// NewClient returns a client for baseURL (https://host:port) using tlsConfig, which must hold
// the admin client certificate and the broker's CA.
func NewClient(baseURL string, tlsConfig *tls.Config) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("kbs admin client: url %q: want https://host[:port]", baseURL)
	}
	tr := &http.Transport{
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4,
		ForceAttemptHTTP2:   true,
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}}, nil
}

// NewClientFromConfig reads a sealctl-kbs.json (see ClientConfig) and returns a client.
func NewClientFromConfig(path string) (*Client, error) {
	cfg, err := ReadClientConfig(path)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("admin client config %s: caFile: %w", path, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("admin client config %s: caFile %s: no PEM certificate", path, cfg.CAFile)
	}
	if fi, err := os.Stat(cfg.KeyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("admin client config %s: keyFile %s: mode %04o is accessible by group/others (want 0600)", path, cfg.KeyFile, fi.Mode().Perm())
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("admin client config %s: client certificate: %w", path, err)
	}
	return NewClient(cfg.URL, &tls.Config{
		RootCAs:      pool,
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	})
}

// URL returns the broker base URL.
func (c *Client) URL() string { return c.base }

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+strings.TrimSuffix(PathPrefix, "/")+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("kbs admin %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("kbs admin %s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var er ErrorResponse
		if json.Unmarshal(b, &er) != nil || er.Error == "" {
			er.Error = strings.TrimSpace(string(b))
		}
		return &APIError{StatusCode: resp.StatusCode, Message: er.Error, Field: er.Field}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("kbs admin %s %s: decode response: %w", method, path, err)
		}
	}
	return nil
}

func escapeID(id string) (string, error) {
	if err := api.ValidateWorkloadID(id); err != nil {
		return "", err
	}
	return url.PathEscape(id), nil
}

// PutWorkload registers or updates w (with its DataKey; an update may omit it to keep the
// stored key) and returns the history entry recording the change.
func (c *Client) PutWorkload(ctx context.Context, w api.Workload) (api.HistoryEntry, error) {
	id, err := escapeID(w.ID)
	if err != nil {
		return api.HistoryEntry{}, err
	}
	var out PutResponse
	if err := c.do(ctx, http.MethodPut, "/workloads/"+id, w, &out); err != nil {
		return api.HistoryEntry{}, err
	}
	return out.Entry, nil
}

// GetWorkload returns one workload (never with its DataKey); errors.Is(err,
// api.ErrWorkloadNotFound) when it does not exist.
func (c *Client) GetWorkload(ctx context.Context, id string) (*api.Workload, error) {
	eid, err := escapeID(id)
	if err != nil {
		return nil, err
	}
	var out api.Workload
	if err := c.do(ctx, http.MethodGet, "/workloads/"+eid, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListWorkloads returns every workload (without data keys), sorted by id.
func (c *Client) ListWorkloads(ctx context.Context) ([]api.Workload, error) {
	var out ListResponse
	if err := c.do(ctx, http.MethodGet, "/workloads", nil, &out); err != nil {
		return nil, err
	}
	return out.Workloads, nil
}

// RemoveWorkload removes a workload and returns the history entry.
func (c *Client) RemoveWorkload(ctx context.Context, id string) (api.HistoryEntry, error) {
	eid, err := escapeID(id)
	if err != nil {
		return api.HistoryEntry{}, err
	}
	var out RemoveResponse
	if err := c.do(ctx, http.MethodDelete, "/workloads/"+eid, nil, &out); err != nil {
		return api.HistoryEntry{}, err
	}
	return out.Entry, nil
}

// History returns the full signed history.
func (c *Client) History(ctx context.Context) ([]api.HistoryEntry, error) {
	var out HistoryResponse
	if err := c.do(ctx, http.MethodGet, "/history", nil, &out); err != nil {
		return nil, err
	}
	return out.History, nil
}

// Audit returns the newest audit events at or after since (zero = no bound), at most limit
// (0 = server default), in ascending time order.
func (c *Client) Audit(ctx context.Context, since time.Time, limit int) ([]api.AuditEvent, error) {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/audit"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out AuditResponse
	if err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	return out.Events, nil
}

// Status returns the broker's state summary.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var out Status
	if err := c.do(ctx, http.MethodGet, "/status", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CA returns the mesh CA certificates.
func (c *Client) CA(ctx context.Context) (*CAInfo, error) {
	var out CAInfo
	if err := c.do(ctx, http.MethodGet, "/ca", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Revoke puts an admin certificate on the broker's deny-list (see RevokeRequestFromPEM) and
// returns the stored entry (the first revocation of a serial stands).
func (c *Client) Revoke(ctx context.Context, req RevokeRequest) (*Revocation, error) {
	serial, err := NormalizeSerial(req.Serial)
	if err != nil {
		return nil, err
	}
	req.Serial = serial
	var out Revocation
	if err := c.do(ctx, http.MethodPost, "/revocations", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListRevoked returns the deny-list.
func (c *Client) ListRevoked(ctx context.Context) ([]Revocation, error) {
	var out RevocationsResponse
	if err := c.do(ctx, http.MethodGet, "/revocations", nil, &out); err != nil {
		return nil, err
	}
	return out.Revocations, nil
}
