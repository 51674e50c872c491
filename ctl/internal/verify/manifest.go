package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/sealpod/sealpod/kbs/api"
)

// Checks of the signed manifest: which key it must verify under, its signature (computed
// independently of the broker's code) and the replay of its history.

// KeySHA256 is the fingerprint of a public key: hex SHA-256 of its PKIX DER.
func KeySHA256(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// verifyKey decides which key the manifest must verify under and records the decision.
func verifyKey(r *Report, sm *api.SignedManifest, o Options, pinnedSum string, log *slog.Logger) crypto.PublicKey {
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
// code; api.VerifyManifest is run as well.
func canonical(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func manifestDigest(m *api.Manifest) ([]byte, error) {
	b, err := canonical(m)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write([]byte("sealpod-kbs-manifest-v1\n"))
	h.Write(b)
	return h.Sum(nil), nil
}

func checkSignature(r *Report, sm *api.SignedManifest, pub crypto.PublicKey) {
	d, err := manifestDigest(&sm.Manifest)
	if err != nil {
		r.fail(CheckSignature, "", "", "", "encode manifest: %v", err)
		return
	}
	var ok bool
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = sm.Algorithm == api.AlgECDSASHA256 && ecdsa.VerifyASN1(k, d, sm.Signature)
	case ed25519.PublicKey:
		ok = sm.Algorithm == api.AlgEd25519 && len(k) == ed25519.PublicKeySize && ed25519.Verify(k, d, sm.Signature)
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
func checkReplay(r *Report, m *api.Manifest) {
	state := map[string]*api.Workload{}
	for i := range m.History {
		e := &m.History[i]
		switch e.Op {
		case api.OpPut:
			state[e.WorkloadID] = e.Workload
		case api.OpRemove:
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
