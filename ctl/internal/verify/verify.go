// Package verify checks a Sealpod key broker from the outside (DESIGN §3.4), trusting only
// what the verifier pins: the broker's TLS CA (certificate or SHA-256, the pin the envelopes
// carry) and, optionally, the broker's manifest signing key. It fetches the signed manifest
// and the mesh CA root, re-computes the history hash chain, and compares every sealed pod
// template of the owner's sealed manifests with what the broker would release keys for.
package verify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/image"
	"github.com/sealpod/sealpod/kbs/client"
	"github.com/sealpod/sealpod/kbs/registry"
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
	CheckManifest        = "manifest"                 // anything else registry.VerifyManifest refuses
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
	MinTCB *registry.TCB
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
	MinTCB         registry.TCB        `json:"minTcb"`
	SANs           []string            `json:"sans"`
	Generation     uint64              `json:"generation"`
	UpdatedAt      time.Time           `json:"updatedAt"`
	Expected       bool                `json:"expected"` // named by --expect
}

// Report is the outcome; it is written as report.json and (readable) report.txt.
type Report struct {
	Version        int                `json:"version"` // 1
	Time           time.Time          `json:"time"`
	KBS            string             `json:"kbs"`
	TLSCASHA256    string             `json:"tlsCaSha256"`
	SigningKey     KeyInfo            `json:"signingKey"`
	IssuedAt       time.Time          `json:"manifestIssuedAt,omitzero"`
	Head           registry.ChainHead `json:"head"`
	HistoryEntries int                `json:"historyEntries"`
	MeshRoot       *MeshRootInfo      `json:"meshRoot,omitempty"`
	Workloads      []WorkloadInfo     `json:"workloads"`
	Expected       []Expected         `json:"expected"`
	Checks         []Check            `json:"checks"`
	Failures       int                `json:"failures"`
	Warnings       int                `json:"warnings"`
	OK             bool               `json:"ok"`

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

// KeySHA256 is the fingerprint of a public key: hex SHA-256 of its PKIX DER.
func KeySHA256(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
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
		head, herr := registry.VerifyHistory(m.History, pub)
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
			if err := registry.VerifyManifest(sm, pub); err != nil {
				r.fail(CheckManifest, "", "", "", "%v", err)
			}
		}
	}

	checkMeshRoot(ctx, r, c)

	byID := map[string]*registry.Workload{}
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

// verifyKey decides which key the manifest must verify under and records the decision.
func verifyKey(r *Report, sm *registry.SignedManifest, o Options, pinnedSum string, log *slog.Logger) crypto.PublicKey {
	embedded, err := sm.ParsePublicKey()
	if err != nil {
		r.fail(CheckKey, "", pinnedSum, "", "%v", err)
		return nil
	}
	embSum, err := KeySHA256(embedded)
	if err != nil {
		r.fail(CheckKey, "", pinnedSum, "", "manifest publicKey: %v", err)
		return nil
	}
	r.SigningKey.SHA256 = embSum
	r.SigningKey.PinnedSHA256 = pinnedSum
	switch {
	case pinnedSum == "":
		log.Warn("manifest signing key NOT pinned: trusting the key the manifest carries (trust on first use); pin it with --kbs-key or --kbs-key-sha256",
			"kbs", r.KBS, "key_sha256", embSum)
		st := StatusWarn
		if o.Strict {
			st = StatusFail
		}
		r.add(Check{ID: CheckKeyTrustOnFirst, Status: st, Got: embSum,
			Message: fmt.Sprintf("signing key NOT pinned: the manifest is verified under the key it carries itself, sha256:%s (trusted on first use); compare it with the broker's signing.pub.pem and pin it next time", embSum)})
		return embedded
	case pinnedSum != embSum:
		r.fail(CheckKey, "", pinnedSum, embSum, "the manifest is signed by key sha256:%s, the pinned key is sha256:%s", embSum, pinnedSum)
		if o.SigningKey != nil {
			return o.SigningKey // verify under the pinned key: nothing else is trusted
		}
		return nil
	default:
		r.SigningKey.Pinned = true
		r.ok(CheckKey, "", "the manifest carries the pinned signing key sha256:%s", embSum)
		return embedded
	}
}

// canonical and manifestDigest follow docs/kbs.md ("The signature covers SHA-256(
// "sealpod-kbs-manifest-v1\n" || canonical JSON of manifest)"), independently of the broker's
// code; registry.VerifyManifest is run as well.
func canonical(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func manifestDigest(m *registry.Manifest) ([]byte, error) {
	b, err := canonical(m)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write([]byte("sealpod-kbs-manifest-v1\n"))
	h.Write(b)
	return h.Sum(nil), nil
}

func checkSignature(r *Report, sm *registry.SignedManifest, pub crypto.PublicKey) {
	d, err := manifestDigest(&sm.Manifest)
	if err != nil {
		r.fail(CheckSignature, "", "", "", "encode manifest: %v", err)
		return
	}
	var ok bool
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = sm.Algorithm == registry.AlgECDSASHA256 && ecdsa.VerifyASN1(k, d, sm.Signature)
	case ed25519.PublicKey:
		ok = sm.Algorithm == registry.AlgEd25519 && len(k) == ed25519.PublicKeySize && ed25519.Verify(k, d, sm.Signature)
	default:
		r.fail(CheckSignature, "", "", "", "unsupported signing key type %T", pub)
		return
	}
	if !ok {
		keySum, _ := KeySHA256(pub)
		r.fail(CheckSignature, "", "", "", "the manifest signature (%s) does not verify under key sha256:%s: the manifest was altered or signed by another key", sm.Algorithm, keySum)
		return
	}
	r.ok(CheckSignature, "", "manifest issued %s, %s signature verifies", sm.Manifest.IssuedAt.Format(time.RFC3339), sm.Algorithm)
}

// checkReplay replays the history and compares the result with the manifest's workloads.
func checkReplay(r *Report, m *registry.Manifest) {
	state := map[string]*registry.Workload{}
	for i := range m.History {
		e := &m.History[i]
		switch e.Op {
		case registry.OpPut:
			state[e.WorkloadID] = e.Workload
		case registry.OpRemove:
			delete(state, e.WorkloadID)
		}
	}
	var problems []string
	seen := map[string]bool{}
	for i := range m.Workloads {
		w := &m.Workloads[i]
		seen[w.ID] = true
		hw, ok := state[w.ID]
		if !ok || hw == nil {
			problems = append(problems, fmt.Sprintf("workload %s is listed but the history does not register it", w.ID))
			continue
		}
		a, err1 := canonical(w)
		b, err2 := canonical(hw)
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			problems = append(problems, fmt.Sprintf("workload %s differs from its last history entry", w.ID))
		}
	}
	for id := range state {
		if !seen[id] {
			problems = append(problems, fmt.Sprintf("the history registers %s but the manifest does not list it", id))
		}
	}
	sort.Strings(problems)
	if len(problems) > 0 {
		r.fail(CheckHistoryReplay, "", "", "", "%s", strings.Join(problems, "; "))
		return
	}
	r.ok(CheckHistoryReplay, "", "replaying %d history entries gives exactly the %d listed workloads", len(m.History), len(m.Workloads))
}

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

type imageResult struct {
	info *image.Info
	err  error
}

// refDigest returns the digest a reference pins ("" for a tag).
func refDigest(ref string) string {
	if i := strings.LastIndex(ref, "@"); i >= 0 {
		return ref[i+1:]
	}
	return ""
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	sort.Strings(x)
	sort.Strings(y)
	x, y = slices.Compact(x), slices.Compact(y)
	return slices.Equal(x, y) && len(a) == len(x) && len(b) == len(y)
}

// checkExpected compares one sealed pod template with the broker.
// namesBroker reports whether url is the broker's URL or one of its aliases.
func namesBroker(url, broker string, aliases []string) bool {
	u := normalizeURL(url)
	if u == broker {
		return true
	}
	for _, a := range aliases {
		if u == normalizeURL(a) {
			return true
		}
	}
	return false
}

func checkExpected(ctx context.Context, r *Report, e Expected, w *registry.Workload, images map[string]imageResult, o Options) {
	subj := e.Workload
	if e.Object != "" {
		subj += " (" + e.Object + ")"
	}
	if e.Workload == "" {
		r.fail(CheckRegistered, subj, "", "", "%s in %s: annotation sealpod.io/workload is empty", e.Path, e.Source)
		return
	}
	if !namesBroker(e.KBS, r.KBS, o.Aliases) {
		r.fail(CheckAnnotationKBS, subj, r.KBS, e.KBS, "annotation sealpod.io/kbs names %q, not this broker %s", e.KBS, r.KBS)
	} else {
		r.ok(CheckAnnotationKBS, subj, "annotation sealpod.io/kbs names this broker")
	}
	if w == nil {
		r.fail(CheckRegistered, subj, "registered", "absent", "workload %s is not registered at the broker: no guest can get its key", e.Workload)
		return
	}
	r.ok(CheckRegistered, subj, "registered, generation %d, updated %s", w.Generation, w.UpdatedAt.Format(time.RFC3339))

	if e.Image == "" {
		r.fail(CheckImage, subj, "", "", "%s in %s: annotation sealpod.io/image is missing", e.Path, e.Source)
		return
	}
	res, ok := images[e.Image]
	if !ok {
		res.info, res.err = o.LoadImage(ctx, e.Image)
		images[e.Image] = res
	}
	if res.err != nil {
		r.fail(CheckImage, subj, e.Image, "", "load secure image %s: %v", e.Image, res.err)
		return
	}
	info := res.info
	if d := refDigest(e.Image); d == "" {
		r.fail(CheckImage, subj, "a digest", e.Image, "annotation sealpod.io/image %q does not pin a digest", e.Image)
		return
	} else if d != info.Digest {
		r.fail(CheckImage, subj, d, info.Digest, "secure image %s has digest %s", e.Image, info.Digest)
		return
	}
	r.ok(CheckImage, subj, "secure image %s loaded, digest verified", e.Image)

	var wi *image.WorkloadInfo
	for i := range info.Workloads {
		if info.Workloads[i].ID == e.Workload {
			wi = &info.Workloads[i]
		}
	}
	if wi == nil {
		r.fail(CheckEnvelope, subj, e.Workload, "", "secure image %s holds no envelope for workload %s", e.Image, e.Workload)
		return
	}
	if wi.EnvelopeDigest != w.EnvelopeDigest {
		r.fail(CheckEnvelopeDigest, subj, wi.EnvelopeDigest, w.EnvelopeDigest,
			"the broker expects envelope digest (HOST_DATA) %s, the envelope in the image has %s: the broker would release the key for another envelope", w.EnvelopeDigest, wi.EnvelopeDigest)
	} else {
		r.ok(CheckEnvelopeDigest, subj, "envelope digest %s", w.EnvelopeDigest)
	}
	var kbsProblems []string
	if !namesBroker(wi.KBS, r.KBS, o.Aliases) {
		kbsProblems = append(kbsProblems, fmt.Sprintf("URL %q, want %s", wi.KBS, r.KBS))
	}
	if normalizeHex(wi.KBSCASHA256) != r.TLSCASHA256 {
		kbsProblems = append(kbsProblems, fmt.Sprintf("CA pin sha256:%s, want sha256:%s", wi.KBSCASHA256, r.TLSCASHA256))
	}
	if len(kbsProblems) > 0 {
		r.fail(CheckEnvelopeKBS, subj, r.KBS+" sha256:"+r.TLSCASHA256, wi.KBS+" sha256:"+wi.KBSCASHA256,
			"the envelope header names another broker: %s", strings.Join(kbsProblems, "; "))
	} else {
		r.ok(CheckEnvelopeKBS, subj, "the envelope header names this broker and pins its TLS CA")
	}
	if !sameSet(wi.TEEs, w.TEEs) {
		r.fail(CheckTEEs, subj, strings.Join(wi.TEEs, ","), strings.Join(w.TEEs, ","), "the broker allows TEEs %v, the envelope is sealed for %v", w.TEEs, wi.TEEs)
	} else {
		r.ok(CheckTEEs, subj, "TEEs %s", strings.Join(w.TEEs, ","))
	}
	gc := bundle.Config{Measurements: info.Guest.Measurements}
	tees := slices.Clone(w.TEEs)
	for t := range w.Measurements {
		if !slices.Contains(tees, t) {
			tees = append(tees, t)
		}
	}
	sort.Strings(tees)
	for _, t := range tees {
		got := w.Measurements[t]
		want, err := gc.Measurement(t)
		if err != nil {
			r.fail(CheckMeasurement, subj+" "+t, "", strings.Join(got, ","), "the secure image's guest.json: %v", err)
			continue
		}
		if len(got) != 1 || got[0] != want {
			r.fail(CheckMeasurement, subj+" "+t, want, strings.Join(got, ","),
				"the broker allows %s launch measurement(s) %v, the image's guest is %s", t, got, want)
			continue
		}
		r.ok(CheckMeasurement, subj+" "+t, "%s measurement %s", t, want)
	}
	checkSANs(r, subj, w, o)
	checkMinTCB(r, subj, w, e.MinTCB, "the sealed manifest ("+AnnotationMinTCB+")")
}

func checkSANs(r *Report, subj string, w *registry.Workload, o Options) {
	var bad []string
	for _, s := range w.SANs {
		if err := registry.ValidateSAN(s); err != nil {
			bad = append(bad, fmt.Sprintf("%q: %v", s, err))
		}
	}
	switch {
	case len(bad) > 0:
		r.fail(CheckSANs, subj, "", strings.Join(w.SANs, ","), "invalid registered SANs: %s", strings.Join(bad, "; "))
	case len(w.SANs) == 0:
		r.fail(CheckSANs, subj, "", "", "no SANs registered: the workload certificate would name nothing")
	default:
		if want, ok := o.SANs[w.ID]; ok && !sameSet(want, w.SANs) {
			r.fail(CheckSANs, subj, strings.Join(want, ","), strings.Join(w.SANs, ","), "the broker issues certificates for SANs %v, expected %v", w.SANs, want)
			return
		}
		r.ok(CheckSANs, subj, "certificates name %s", strings.Join(w.SANs, ", "))
	}
}
