// Package unseal is the agent's Unseal flow (docs/design.md#attest, docs/agent.md): parse the envelope header, get
// evidence from the TEE for a fresh broker nonce and an in-memory X25519 key, check that the
// evidence's launch-bound HOST_DATA/MRCONFIGID is this envelope's digest, attest to the key
// broker named in the header (TLS pinned to the header's CA SHA-256) with a CSR for a P-256
// key made here, receive the data key and the workload certificate in the attest answer
// (two requests: auth and attest), and open the envelope.
package unseal

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/sealpod/sealpod/agent/errkind"
	"github.com/sealpod/sealpod/internal/atomicfile"

	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/internal/tee"
	kbsapi "github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/client"
)

// Errors callers branch on. They are errkind kinds: texts the host and the console may see.
var (
	// ErrHostData: the evidence's HOST_DATA/MRCONFIGID is not the digest of the envelope the
	// host handed over (the host changed the envelope or launched with other values).
	ErrHostData error = errkind.New("launch HOST_DATA does not match the envelope digest")
	// ErrTEE: the envelope was not sealed for this guest's TEE.
	ErrTEE error = errkind.New("envelope not sealed for this TEE")
	// ErrSpec: the opened spec does not belong to the envelope's workload.
	ErrSpec error = errkind.New("sealed spec does not match its envelope")
	// ErrSpecInvalid: the opened spec does not parse or validate (the details, which quote
	// sealed content, stay in the guest).
	ErrSpecInvalid error = errkind.New("sealed spec invalid")
	// ErrCertificate: the broker's certificate answer is not for our key or does not chain.
	ErrCertificate error = errkind.New("workload certificate invalid")
	// ErrNoVolumeSecret: the sealed spec has encrypted volumes but the broker released no
	// volume secret (a broker without volume support).
	ErrNoVolumeSecret error = errkind.New("sealed spec has encrypted volumes but the key broker released no volume secret")
)

// Times are the durations of the phases of one Unseal. Attest is the request that returns
// the token, the key and the certificate; Key is zero (the key comes with attest, no
// request of its own); Certificate is the CSR (made while the TEE makes the evidence) and
// the check of the returned chain.
type Times struct {
	Auth, Evidence, Attest, Key, Open, Certificate, Total time.Duration
}

// Identity is the workload's certificate material, PEM.
type Identity struct {
	CertPEM []byte // leaf then intermediate(s)
	KeyPEM  []byte // PKCS#8 EC private key, generated in the guest
	CAPEM   []byte // the mesh root
}

// Result is an opened envelope.
type Result struct {
	Header   *envelope.Header
	Digest   envelope.Digest // SHA-256 of the envelope = HOST_DATA/MRCONFIGID
	Spec     *spec.Spec
	Identity *Identity
	// Volumes is what opening the sealed encrypted volumes needs later (AttachVolume): nil
	// when the sealed spec has none.
	Volumes *VolumeAccess
	Times   Times
}

// VolumeAccess is kept from the attest answer for the sealed encrypted volumes: the
// workload's volume secret (guest memory only; docs/volumes.md) and the broker session
// token that authenticates the volume generation calls (VolumeBegin/VolumeCommit).
type VolumeAccess struct {
	Secret    []byte
	Token     string
	ExpiresAt time.Time
	Broker    *client.Client
}

// Wipe zeroes the secret.
func (v *VolumeAccess) Wipe() {
	if v != nil {
		clear(v.Secret)
		v.Secret = nil
	}
}

// hasEncryptedVolumes reports whether sp has a volume of kind VolumeEncrypted.
func hasEncryptedVolumes(sp *spec.Spec) bool {
	for _, v := range sp.Volumes {
		if v.Kind == spec.VolumeEncrypted {
			return true
		}
	}
	return false
}

// volumeAccess keeps what the encrypted volumes of sp need from the attest answer: the
// volume secret (a copy; the caller clears the release's) and the session's token. A spec
// without encrypted volumes keeps nothing; one with encrypted volumes and no volume secret
// of the right size is ErrNoVolumeSecret.
func volumeAccess(sp *spec.Spec, secret []byte, token string, expires time.Time, c *client.Client) (*VolumeAccess, error) {
	if !hasEncryptedVolumes(sp) {
		return nil, nil
	}
	if len(secret) != kbsapi.VolumeSecretSize {
		return nil, fmt.Errorf("%w (got %d bytes)", ErrNoVolumeSecret, len(secret))
	}
	if token == "" {
		return nil, fmt.Errorf("%w: no session token for the volume generation calls", ErrNoVolumeSecret)
	}
	return &VolumeAccess{Secret: bytes.Clone(secret), Token: token, ExpiresAt: expires, Broker: c}, nil
}

// Options tune the flow.
type Options struct {
	// Timeout per broker request (default 30 s).
	Timeout time.Duration
	// RetryFor is how long the flow keeps retrying, from auth, while the broker is
	// unreachable or answers 429/502/503/504 (default 2 min; negative: no retries). Refusals
	// (other 4xx, bad evidence, a key that does not open the envelope) are never retried.
	RetryFor time.Duration
	// Logger reports retries (default slog.Default()).
	Logger *slog.Logger
}

// DefaultRetryFor is Options.RetryFor's default: a broker restart or a short outage delays
// pods instead of failing them.
const DefaultRetryFor = 2 * time.Minute

// Transient reports whether err is worth retrying: the broker could not be reached or said
// it is overloaded or unavailable.
func Transient(err error) bool {
	var ae *client.APIError
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || (errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EHOSTUNREACH)
}

// Unseal runs the whole flow for one envelope with the guest's attester.
func Unseal(ctx context.Context, env []byte, att Attester, o Options) (*Result, error) {
	start := time.Now()
	h, err := envelope.ParseHeader(env)
	if err != nil {
		return nil, fmt.Errorf("unseal: envelope header: %w", err)
	}
	guestTEE := att.TEE()
	if !slices.Contains(h.TEEs, guestTEE) {
		return nil, fmt.Errorf("unseal %s: %w: header.tees %v, guest is %s", h.Workload, ErrTEE, h.TEEs, guestTEE)
	}
	digest := envelope.Sum(env)
	res := &Result{Header: h, Digest: digest}
	c, err := client.New(h.KBS.URL, client.Options{CASHA256: h.KBS.CASHA256, Timeout: o.Timeout})
	if err != nil {
		return nil, fmt.Errorf("unseal %s: %w", h.Workload, err)
	}
	retryFor := o.RetryFor
	if retryFor == 0 {
		retryFor = DefaultRetryFor
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	deadline := time.Now().Add(retryFor)
	wait := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := unsealOnce(ctx, env, c, att, h, digest, res)
		if err == nil {
			res.Times.Total = time.Since(start)
			return res, nil
		}
		res.Volumes.Wipe()
		res.Volumes = nil
		if !Transient(err) || time.Now().Add(wait).After(deadline) || ctx.Err() != nil {
			if attempt > 1 {
				return nil, fmt.Errorf("%w (after %d attempts in %v)", err, attempt, time.Since(start).Round(time.Millisecond))
			}
			return nil, err
		}
		log.Warn("key broker unavailable: retrying", "workload", h.Workload, "attempt", attempt, "in", wait)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (retry cancelled: %v)", err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// unsealOnce is one attempt: auth, then attest with the evidence and a CSR bound to this
// attestation, whose answer carries the data key (sealed to the TEE key) and the workload
// certificate (the two-request flow, DESIGN §3.3).
func unsealOnce(ctx context.Context, env []byte, c *client.Client, att Attester, h *envelope.Header, digest envelope.Digest, res *Result) error {
	guestTEE := att.TEE()
	t := time.Now()
	s, err := c.Auth(ctx, guestTEE, h.Workload)
	if err != nil {
		return fmt.Errorf("unseal %s: kbs auth at %s: %w", h.Workload, h.KBS.URL, err)
	}
	res.Times.Auth = time.Since(t)
	// The workload key and its CSR need only the nonce: they are made while the TEE makes
	// the evidence.
	type bound struct {
		key *ecdsa.PrivateKey
		csr []byte
		err error
		d   time.Duration
	}
	csrc := make(chan bound, 1)
	go func() {
		t := time.Now()
		k, c, err := bindingCSR(s)
		csrc <- bound{k, c, err, time.Since(t)}
	}()
	t = time.Now()
	ev, err := att.Evidence(ctx, s.ReportData())
	if err != nil {
		return fmt.Errorf("unseal %s: %s evidence: %w", h.Workload, guestTEE, err)
	}
	res.Times.Evidence = time.Since(t)
	// The launch-bound data must be exactly the digest as this TEE places it (tee.HostData):
	// no other width, no bytes beyond it. PEF (pef, sim-pef) binds none: its ultravisor
	// released the data key sealed with the boot's digests, which authenticates the envelope.
	var sealedKey []byte
	if tee.TEE(guestTEE).Evidence() == tee.EvidencePEFCredential {
		sk, ok := att.(sealedKeyAttester)
		if !ok {
			return fmt.Errorf("unseal %s: %w: TEE %s has no sealed data key", h.Workload, ErrHostData, guestTEE)
		}
		sealedKey = sk.SealedDataKey()
		defer clear(sealedKey)
	} else {
		want := digest.HostData(tee.TEE(guestTEE))
		if want == nil {
			return fmt.Errorf("unseal %s: %w: TEE %s binds no host data to the launch", h.Workload, ErrHostData, guestTEE)
		}
		if !bytes.Equal(ev.HostData, want) {
			return fmt.Errorf("unseal %s: %w: evidence carries %x, want %x (envelope digest %s)", h.Workload, ErrHostData, ev.HostData, want, digest)
		}
	}
	b := <-csrc
	if b.err != nil {
		return fmt.Errorf("unseal %s: %w", h.Workload, b.err)
	}
	t = time.Now()
	rel, err := s.AttestRelease(ctx, ev.Evidence, b.csr)
	if err != nil {
		return fmt.Errorf("unseal %s: kbs attest: %w", h.Workload, err)
	}
	res.Times.Attest = time.Since(t)
	res.Times.Key = 0 // the key came with the attest answer
	t = time.Now()
	defer clear(rel.Keys.VolumeSecret) // volumeAccess keeps a copy when the spec needs it
	dataKey := rel.Keys.DataKey
	if sealedKey != nil {
		dataKey = sealedKey // PEF: the key from the ESM blob, not the broker's
	}
	_, plain, err := envelope.Open(env, dataKey)
	clear(rel.Keys.DataKey)
	if err != nil {
		return fmt.Errorf("unseal %s: %w", h.Workload, err)
	}
	sp, err := spec.Unmarshal(plain)
	clear(plain)
	if err != nil {
		// The parse error quotes the sealed spec: only its kind leaves the guest.
		return fmt.Errorf("unseal %s: %w", h.Workload, errkind.Withhold(ErrSpecInvalid, err))
	}
	if sp.Workload != h.Workload {
		return fmt.Errorf("unseal %s: %w", h.Workload, ErrSpec)
	}
	va, err := volumeAccess(sp, rel.Keys.VolumeSecret, s.Token, s.ExpiresAt, c)
	if err != nil {
		return fmt.Errorf("unseal %s: %w", h.Workload, err)
	}
	res.Volumes.Wipe() // an earlier attempt's
	res.Spec, res.Volumes = sp, va
	res.Times.Open = time.Since(t)
	t = time.Now()
	id, err := identity(b.key, rel)
	if err != nil {
		return fmt.Errorf("unseal %s: %w", h.Workload, err)
	}
	res.Identity = id
	res.Times.Certificate = b.d + time.Since(t)
	return nil
}

// bindingCSR makes the workload's P-256 key in guest memory and a CSR for it that carries
// the session's binding URI (api.CSRBindingURI) and nothing sealed: the broker puts the SANs
// the owner registered into the certificate, never the CSR's, and the spec is not open yet.
func bindingCSR(s *client.Session) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("workload key: %w", err)
	}
	u, err := url.Parse(s.CSRBindingURI())
	if err != nil {
		return nil, nil, fmt.Errorf("workload CSR binding: %w", err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: s.Workload}, URIs: []*url.URL{u}}
	csr, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, nil, fmt.Errorf("workload CSR: %w", err)
	}
	return key, csr, nil
}

// identity checks the broker's certificate answer, which must be for the guest's key and
// chain to the returned root, and returns the PEM material.
func identity(key *ecdsa.PrivateKey, rel *client.Release) (*Identity, error) {
	leaf, err := x509.ParseCertificate(rel.Chain[0])
	if err != nil {
		return nil, fmt.Errorf("leaf: %w", errkind.Withhold(ErrCertificate, err))
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("%w: the leaf is not for the guest's key", ErrCertificate)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(rel.RootPEM)) {
		return nil, fmt.Errorf("%w: no root certificate in the answer", ErrCertificate)
	}
	var chainPEM []byte
	for i, der := range rel.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("chain[%d]: %w", i, errkind.Withhold(ErrCertificate, err))
		}
		if i > 0 {
			inter.AddCert(c)
		}
		chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("verify: %w", errkind.Withhold(ErrCertificate, err)) // x509 texts quote names
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("workload key: %w", err)
	}
	return &Identity{
		CertPEM: chainPEM,
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		CAPEM:   []byte(rel.RootPEM),
	}, nil
}

// Identity file names inside the TLS directory.
const (
	CertFile = "cert.pem"
	KeyFile  = "key.pem"
	CAFile   = "ca.pem"
)

// WriteIdentity writes cert.pem, key.pem (0640) and ca.pem into dir (a guest tmpfs), each
// atomically.
func WriteIdentity(dir string, id *Identity) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write identity %s: %w", dir, err)
	}
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{{CertFile, id.CertPEM, 0o644}, {KeyFile, id.KeyPEM, 0o640}, {CAFile, id.CAPEM, 0o644}} {
		if err := atomicfile.Write(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return fmt.Errorf("write identity %s: %w", dir, err)
		}
	}
	return nil
}
