// Package verify checks a Sealpod key broker from the outside (docs/verify.md), trusting only
// what the verifier pins: the broker's TLS CA (certificate or SHA-256, the pin the envelopes
// carry) and, optionally, the broker's manifest signing key. It fetches the signed manifest
// and the mesh CA root, re-computes the history hash chain, and compares every sealed pod
// template of the owner's sealed manifests with what the broker would release keys for.
package verify

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/sealpod/sealpod/imagebuilder/image"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/client"
)

// Check statuses.
const (
	StatusOK   = "ok"
	StatusWarn = "warn"
	StatusFail = "fail"
)

// Check identifiers: each kind of mismatch has its own.
const (
	CheckConnect         = "connect"                  // the broker could not be reached at all
	CheckTLS             = "tls"                      // connecting with the pinned TLS CA
	CheckFetch           = "fetch"                    // the broker answered an error
	CheckKey             = "manifest.key"             // manifest signed by the pinned key
	CheckSignature       = "manifest.signature"       // manifest signature verifies
	CheckManifest        = "manifest"                 // anything else api.VerifyManifest refuses
	CheckHistoryChain    = "history.chain"            // every entry's hash, link and signature
	CheckHistoryHead     = "history.head"             // the chain ends at the manifest's head
	CheckHistoryReplay   = "history.replay"           // replaying the history gives the workloads
	CheckMeshRoot        = "mesh-root"                // the mesh CA root is a self-signed CA
	CheckAnnotationKBS   = "workload.annotation-kbs"  // sealpod.io/kbs names this broker
	CheckRegistered      = "workload.registered"      // the workload is registered
	CheckImage           = "workload.image"           // the secure image loads and has the pinned digest
	CheckEnvelope        = "workload.envelope"        // the image holds the workload's envelope
	CheckEnvelopeDigest  = "workload.envelope-digest" // broker's envelope digest = the image's
	CheckEnvelopeKBS     = "workload.envelope-kbs"    // envelope header names this broker (URL + CA pin)
	CheckTEEs            = "workload.tees"            // broker's TEEs = the envelope's TEEs
	CheckMeasurement     = "workload.measurement"     // broker's measurements = guest.json's
	CheckSANs            = "workload.sans"            // registered SANs (valid; = --san when given)
	CheckUnexpected      = "workload.unexpected"      // registered but not in --expect
	CheckKeyTrustOnFirst = "manifest.key-trust-on-first-use"
)

// ErrFailed is matched (errors.Is) by the error returned when a report has failures.
var ErrFailed = errors.New("verification failed")

// ImageLoader returns the description of a secure image (image.Load + image.Inspect).
type ImageLoader func(ctx context.Context, ref string) (*image.Info, error)

// Options say what to trust and what to expect.
type Options struct {
	URL string // https://host:port of the broker
	// Exactly one TLS pin: the CA certificate (PEM) or the hex SHA-256 of its DER.
	CAPEM    []byte
	CASHA256 string
	// Optional pin of the manifest signing key: the key itself or the hex SHA-256 of its
	// PKIX DER. Without either the key embedded in the manifest is trusted on first use.
	SigningKey       crypto.PublicKey
	SigningKeySHA256 string
	// Expect are the sealed pod templates to compare with the broker; LoadImage is required
	// when there are any.
	Expect    []Expected
	LoadImage ImageLoader
	// SANs pins the SANs expected per workload id (compared as sets).
	SANs map[string][]string
	// Aliases are other URLs of this same broker, e.g. the address guests reach it at behind
	// NAT or a load balancer, that sealed manifests and envelopes may name instead of URL. The
	// broker's identity is the pinned TLS CA, which envelopes must carry in any case.
	Aliases []string
	// MinTCB, if set, is the minimum TCB every registered policy must require (a policy below
	// it, or with none, fails CheckMinTCB).
	MinTCB *api.TCB
	// Strict turns warnings (unexpected workloads, trust on first use) into failures.
	Strict bool
	Logger *slog.Logger
	Now    func() time.Time
}

// Check is one comparison.
type Check struct {
	ID      string `json:"id"`
	Subject string `json:"subject,omitempty"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Want    string `json:"want,omitempty"`
	Got     string `json:"got,omitempty"`
}

// KeyInfo describes the manifest signing key.
type KeyInfo struct {
	Algorithm string `json:"algorithm,omitempty"`
	SHA256    string `json:"sha256,omitempty"` // of the PKIX DER of the key the manifest carries
	// PinnedSHA256 is the fingerprint the verifier pinned ("" = none: trust on first use).
	PinnedSHA256 string `json:"pinnedSha256,omitempty"`
	// Pinned is true when the manifest carries the pinned key.
	Pinned bool `json:"pinned"`
}

// MeshRootInfo describes the mesh CA root.
type MeshRootInfo struct {
	SHA256   string    `json:"sha256"`
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"notAfter"`
	File     string    `json:"file,omitempty"` // where it was written (only after a passing run)
}

// WorkloadInfo is one workload as the broker's manifest lists it.
type WorkloadInfo struct {
	ID             string              `json:"id"`
	TEEs           []string            `json:"tees"`
	Measurements   map[string][]string `json:"measurements"`
	EnvelopeDigest string              `json:"envelopeDigest"`
	MinTCB         api.TCB             `json:"minTcb"`
	SANs           []string            `json:"sans"`
	Generation     uint64              `json:"generation"`
	UpdatedAt      time.Time           `json:"updatedAt"`
	Expected       bool                `json:"expected"` // named by --expect
}

// Report is the outcome; it is written as report.json and (readable) report.txt.
type Report struct {
	Version        int            `json:"version"` // 1
	Time           time.Time      `json:"time"`
	KBS            string         `json:"kbs"`
	TLSCASHA256    string         `json:"tlsCaSha256"`
	SigningKey     KeyInfo        `json:"signingKey"`
	IssuedAt       time.Time      `json:"manifestIssuedAt,omitzero"`
	Head           api.ChainHead  `json:"head"`
	HistoryEntries int            `json:"historyEntries"`
	MeshRoot       *MeshRootInfo  `json:"meshRoot,omitempty"`
	Workloads      []WorkloadInfo `json:"workloads"`
	Expected       []Expected     `json:"expected"`
	Checks         []Check        `json:"checks"`
	Failures       int            `json:"failures"`
	Warnings       int            `json:"warnings"`
	OK             bool           `json:"ok"`

	// MeshRootPEM is the root certificate to write (verified to be a self-signed CA).
	MeshRootPEM []byte `json:"-"`
}

func (r *Report) add(c Check) {
	switch c.Status {
	case StatusFail:
		r.Failures++
	case StatusWarn:
		r.Warnings++
	}
	r.Checks = append(r.Checks, c)
}

func (r *Report) ok(id, subject, format string, args ...any) {
	r.add(Check{ID: id, Subject: subject, Status: StatusOK, Message: fmt.Sprintf(format, args...)})
}

func (r *Report) fail(id, subject, want, got, format string, args ...any) {
	r.add(Check{ID: id, Subject: subject, Status: StatusFail, Message: fmt.Sprintf(format, args...), Want: want, Got: got})
}

// Err returns nil for a passing report, otherwise an error matching ErrFailed that names
// every failed check.
func (r *Report) Err() error {
	if r.OK {
		return nil
	}
	var names []string
	for _, c := range r.Checks {
		if c.Status == StatusFail {
			n := c.ID
			if c.Subject != "" {
				n += " (" + c.Subject + ")"
			}
			names = append(names, n)
		}
	}
	return fmt.Errorf("%w: %d check(s) failed: %s", ErrFailed, len(names), strings.Join(names, ", "))
}

// normalizeHex lowercases a hex pin and drops an optional "sha256:" prefix.
func normalizeHex(s string) string {
	return strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "sha256:")
}

func normalizeURL(u string) string { return strings.TrimSuffix(strings.TrimSpace(u), "/") }

// Run verifies the broker. It returns an error only when it could not run (bad options);
// every mismatch is a failed check in the report (see Report.Err).
func Run(ctx context.Context, o Options) (*Report, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	if (len(o.CAPEM) > 0) == (o.CASHA256 != "") {
		return nil, errors.New("verify: pin the broker's TLS CA with exactly one of a CA certificate or its SHA-256")
	}
	if o.SigningKey != nil && o.SigningKeySHA256 != "" {
		return nil, errors.New("verify: pin the signing key with one of the key or its SHA-256, not both")
	}
	if len(o.Expect) > 0 && o.LoadImage == nil {
		return nil, errors.New("verify: no image loader for the expected workloads")
	}
	r := &Report{Version: 1, Time: now().UTC(), KBS: normalizeURL(o.URL), Workloads: []WorkloadInfo{}, Expected: o.Expect}
	if r.Expected == nil {
		r.Expected = []Expected{}
	}
	copts := client.Options{CAPEM: o.CAPEM}
	if len(o.CAPEM) > 0 {
		sum, err := pemCertSHA256(o.CAPEM)
		if err != nil {
			return nil, fmt.Errorf("verify: TLS CA: %w", err)
		}
		r.TLSCASHA256 = sum
	} else {
		r.TLSCASHA256 = normalizeHex(o.CASHA256)
		copts.CASHA256 = r.TLSCASHA256
	}
	var pinnedKeySum string
	if o.SigningKey != nil {
		s, err := KeySHA256(o.SigningKey)
		if err != nil {
			return nil, fmt.Errorf("verify: signing key: %w", err)
		}
		pinnedKeySum = s
	} else if o.SigningKeySHA256 != "" {
		pinnedKeySum = normalizeHex(o.SigningKeySHA256)
		if b, err := hex.DecodeString(pinnedKeySum); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("verify: signing key SHA-256 %q: want 64 hex digits", o.SigningKeySHA256)
		}
	}
	c, err := client.New(r.KBS, copts)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}

	sm, err := c.Manifest(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var apiErr *client.APIError
		var opErr *net.OpError
		switch {
		case errors.As(err, &apiErr):
			r.fail(CheckFetch, "GET /kbs/v1/manifest", "", "", "%v", err)
		case errors.As(err, &opErr) && opErr.Op == "dial":
			r.fail(CheckConnect, r.KBS, "", "", "%v", err)
		default:
			r.fail(CheckTLS, r.KBS, "", "", "connect with TLS pinned to CA sha256:%s: %v", r.TLSCASHA256, err)
		}
		return finish(r), nil
	}
	r.ok(CheckTLS, r.KBS, "TLS server certificate chains to the pinned CA sha256:%s", r.TLSCASHA256)
	m := &sm.Manifest
	r.IssuedAt, r.Head, r.HistoryEntries = m.IssuedAt, m.Head, len(m.History)
	r.SigningKey.Algorithm = sm.Algorithm

	pub := verifyKey(r, sm, o, pinnedKeySum, log)
	if pub != nil {
		checkSignature(r, sm, pub)
		head, herr := api.VerifyHistory(m.History, pub)
		if herr != nil {
			r.fail(CheckHistoryChain, "", "", "", "%v", herr)
		} else {
			r.ok(CheckHistoryChain, "", "%d history entries: every hash, link and signature verifies", len(m.History))
			if head != m.Head {
				r.fail(CheckHistoryHead, "", fmt.Sprintf("%d/%s", m.Head.Seq, m.Head.Hash), fmt.Sprintf("%d/%s", head.Seq, head.Hash),
					"the history ends at #%d %s, the manifest's head is #%d %s", head.Seq, head.Hash, m.Head.Seq, m.Head.Hash)
			} else {
				r.ok(CheckHistoryHead, "", "the chain ends at the manifest's head #%d %s", head.Seq, head.Hash)
			}
		}
		checkReplay(r, m)
		if r.Failures == 0 {
			// The broker's own offline check covers the rest (version, ordering, ...).
			if err := api.VerifyManifest(sm, pub); err != nil {
				r.fail(CheckManifest, "", "", "", "%v", err)
			}
		}
	}

	checkMeshRoot(ctx, r, c)

	byID := map[string]*api.Workload{}
	for i := range m.Workloads {
		w := &m.Workloads[i]
		byID[w.ID] = w
	}
	expected := map[string]bool{}
	images := map[string]imageResult{}
	for _, e := range o.Expect {
		expected[e.Workload] = true
		checkExpected(ctx, r, e, byID[e.Workload], images, o)
	}
	for _, w := range m.Workloads {
		checkMinTCB(r, w.ID, &w, o.MinTCB, "the verifier (--snp-min-tcb/--tdx-min-tcb)")
		r.Workloads = append(r.Workloads, WorkloadInfo{
			ID: w.ID, TEEs: w.TEEs, Measurements: w.Measurements, EnvelopeDigest: w.EnvelopeDigest, MinTCB: w.MinTCB,
			SANs: w.SANs, Generation: w.Generation, UpdatedAt: w.UpdatedAt, Expected: expected[w.ID],
		})
		if len(o.Expect) > 0 && !expected[w.ID] {
			st := StatusWarn
			if o.Strict {
				st = StatusFail
			}
			r.add(Check{ID: CheckUnexpected, Subject: w.ID, Status: st,
				Message: fmt.Sprintf("registered at the broker (generation %d, envelope %s) but in none of the expected manifests: the broker releases its key to guests that attest for it", w.Generation, w.EnvelopeDigest)})
		}
	}
	return finish(r), nil
}

func finish(r *Report) *Report {
	r.OK = r.Failures == 0
	return r
}
