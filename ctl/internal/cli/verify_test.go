package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"

	"github.com/sealpod/sealpod/ctl/internal/verify"
	"github.com/sealpod/sealpod/guest-image/bundletest"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/kbstest"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/server"
	"github.com/sealpod/sealpod/kbs/store"
)

const verifyWorkload = "default.deployment.web"

// verifyEnv is a real broker over HTTPS on 127.0.0.1, a real OCI registry, and the sealed
// manifests of appYAML, sealed with `sealctl image create` and registered at the broker.
type verifyEnv struct {
	kb     *kbstest.Broker
	dir    string
	sealed string
	out    string
	host   string // the OCI registry
}

func newVerifyEnv(t *testing.T) *verifyEnv {
	t.Helper()
	kb := kbstest.Start(t)
	reg := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	dir := t.TempDir()
	e := &verifyEnv{kb: kb, dir: dir, sealed: filepath.Join(dir, "app.sealed.yaml"), out: filepath.Join(dir, "verify"), host: host}
	e.seal(t, e.sealed)
	return e
}

// seal runs sealctl image create for appYAML, registering at the broker, pushing the image.
func (e *verifyEnv) seal(t *testing.T, out string, extra ...string) {
	t.Helper()
	args := append([]string{"image", "create", "-f", "-", "--seal-secrets", "--guest", bundletest.Write(t),
		"--tee", "sim", "--resolve=false", "--kbs-dir", e.kb.Dir, "--push", e.host + "/team/app-sealed:v1", "--insecure-registry", "--output-file", out}, extra...)
	if _, stderr, err := runSealctl(t, appYAML, args...); err != nil {
		t.Fatalf("image create: %v\n%s", err, stderr)
	}
}

// args are the fully pinned verify arguments.
func (e *verifyEnv) args(extra ...string) []string {
	return append([]string{"verify", "--kbs", e.kb.URL, "--kbs-ca", e.kb.TLSCAPath(), "--kbs-key", e.kb.SigningPubPath(),
		"--expect", e.sealed, "--insecure-registry", "--dir", e.out}, extra...)
}

func (e *verifyEnv) report(t *testing.T) *verify.Report {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.out, verify.FileReportJSON))
	if err != nil {
		t.Fatal(err)
	}
	var r verify.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func checkIDs(r *verify.Report, status string) []string {
	var ids []string
	for _, c := range r.Checks {
		if c.Status == status && !slices.Contains(ids, c.ID) {
			ids = append(ids, c.ID)
		}
	}
	sort.Strings(ids)
	return ids
}

// updateWorkload re-registers the workload with a change, as a broker admin (or an attacker
// holding the admin identity) could.
func updateWorkload(t *testing.T, kb *kbstest.Broker, mutate func(w *registry.Workload)) {
	t.Helper()
	w, err := kb.Registry.Get(context.Background(), verifyWorkload)
	if err != nil {
		t.Fatal(err)
	}
	mutate(w)
	if _, err := kb.Registry.Put(context.Background(), *w, "test"); err != nil {
		t.Fatal(err)
	}
}

// tamperingFront serves the broker's handler with the broker's own TLS identity on another
// 127.0.0.1 port and rewrites the signed manifest on the way: a compromised front end.
func tamperingFront(t *testing.T, kb *kbstest.Broker, mutate func(sm *registry.SignedManifest)) string {
	t.Helper()
	tlsCfg, err := server.TLSConfig(kb.State.TLSCert, kb.State.TLSCAPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := kb.Server.Handler()
	front := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != api.PathManifest {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		var sm registry.SignedManifest
		if err := json.Unmarshal(rec.Body.Bytes(), &sm); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		mutate(&sm)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(&sm)
	}))
	front.TLS = tlsCfg
	front.StartTLS()
	t.Cleanup(front.Close)
	return front.URL
}

func writeOtherKey(t *testing.T, dir string) string {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	p := filepath.Join(dir, "other.pub.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVerifyPasses(t *testing.T) {
	e := newVerifyEnv(t)
	stdout, stderr, err := runSealctl(t, "", e.args()...)
	if err != nil {
		t.Fatalf("verify: %v\n%s\n%s", err, stdout, stderr)
	}
	if !strings.Contains(stdout, "PASSED") || !strings.Contains(stdout, verifyWorkload) {
		t.Errorf("stdout:\n%s", stdout)
	}
	r := e.report(t)
	if !r.OK || r.Failures != 0 || r.Warnings != 0 || !r.SigningKey.Pinned {
		t.Fatalf("report: ok=%v failures=%d warnings=%d pinned=%v\n%s", r.OK, r.Failures, r.Warnings, r.SigningKey.Pinned, stdout)
	}
	for _, id := range []string{verify.CheckTLS, verify.CheckKey, verify.CheckSignature, verify.CheckHistoryChain, verify.CheckHistoryHead,
		verify.CheckHistoryReplay, verify.CheckMeshRoot, verify.CheckAnnotationKBS, verify.CheckRegistered, verify.CheckImage,
		verify.CheckEnvelopeDigest, verify.CheckEnvelopeKBS, verify.CheckTEEs, verify.CheckMeasurement, verify.CheckSANs} {
		if !slices.Contains(checkIDs(r, verify.StatusOK), id) {
			t.Errorf("check %s did not pass: %v", id, checkIDs(r, verify.StatusOK))
		}
	}
	root, err := os.ReadFile(filepath.Join(e.out, verify.FileMeshRoot))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(root)
	want, _ := pem.Decode(e.kb.State.MeshCA.RootPEM())
	if b == nil || want == nil || string(b.Bytes) != string(want.Bytes) {
		t.Fatalf("mesh-root.pem is not the broker's mesh root:\n%s", root)
	}
	sum := sha256.Sum256(b.Bytes)
	if r.MeshRoot == nil || r.MeshRoot.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("report mesh root %+v", r.MeshRoot)
	}
	txt, err := os.ReadFile(filepath.Join(e.out, verify.FileReportText))
	if err != nil || !strings.Contains(string(txt), "PASSED") || !strings.Contains(string(txt), "(pinned)") {
		t.Errorf("report.txt: %v\n%s", err, txt)
	}

	// The same with fingerprint pins only, the sealed manifests on stdin and JSON on stdout.
	keySum := r.SigningKey.SHA256
	out2 := filepath.Join(e.dir, "v2")
	sealed, _ := os.ReadFile(e.sealed)
	stdout, stderr, err = runSealctl(t, string(sealed), "verify", "--kbs", e.kb.URL, "--kbs-ca-sha256", e.kb.CASHA256,
		"--kbs-key-sha256", "sha256:"+keySum, "--expect", "-", "--insecure-registry", "--dir", out2, "-o", "json",
		"--san", verifyWorkload+"=spiffe://sealpod/ns/default/deployment/web")
	var jr verify.Report
	if err != nil || json.Unmarshal([]byte(stdout), &jr) != nil || !jr.OK || !jr.SigningKey.Pinned || jr.TLSCASHA256 != e.kb.CASHA256 {
		t.Fatalf("fingerprint pins: %v\n%s\n%s", err, stdout, stderr)
	}
}

// Without a key pin the run passes with a loud warning and the key's fingerprint; --strict
// makes that a failure.
func TestVerifyTrustOnFirstUse(t *testing.T) {
	e := newVerifyEnv(t)
	args := []string{"verify", "--kbs", e.kb.URL, "--kbs-ca", e.kb.TLSCAPath(), "--expect", e.sealed, "--insecure-registry", "--dir", e.out}
	stdout, stderr, err := runSealctl(t, "", args...)
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, stdout, stderr)
	}
	if !strings.Contains(stderr, "NOT pinned") || !strings.Contains(stdout, "NOT PINNED") {
		t.Errorf("no loud warning:\nstderr: %s\nstdout: %s", stderr, stdout)
	}
	r := e.report(t)
	der, _ := x509.MarshalPKIXPublicKey(e.kb.State.Signer.Public())
	sum := sha256.Sum256(der)
	if r.SigningKey.Pinned || r.SigningKey.SHA256 != hex.EncodeToString(sum[:]) || !slices.Equal(checkIDs(r, verify.StatusWarn), []string{verify.CheckKeyTrustOnFirst}) {
		t.Fatalf("report signing key %+v, warnings %v", r.SigningKey, checkIDs(r, verify.StatusWarn))
	}
	_, _, err = runSealctl(t, "", append(args, "--strict")...)
	if !errors.Is(err, verify.ErrFailed) {
		t.Fatalf("--strict: %v", err)
	}
}

// Every kind of mismatch is its own failed check, exit code 2, and no mesh-root.pem.
func TestVerifyFailures(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, e *verifyEnv) []string // returns the verify arguments
		want  []string                                  // failed check ids, exactly
		msg   string                                    // in the error or the report
	}{
		{
			name: "tampered manifest signature",
			setup: func(t *testing.T, e *verifyEnv) []string {
				url := tamperingFront(t, e.kb, func(sm *registry.SignedManifest) { sm.Signature[len(sm.Signature)-3] ^= 1 })
				return []string{"verify", "--kbs", url, "--kbs-ca", e.kb.TLSCAPath(), "--kbs-key", e.kb.SigningPubPath(), "--dir", e.out}
			},
			want: []string{verify.CheckSignature},
			msg:  "does not verify",
		},
		{
			name: "manifest workload altered in transit",
			setup: func(t *testing.T, e *verifyEnv) []string {
				url := tamperingFront(t, e.kb, func(sm *registry.SignedManifest) {
					sm.Manifest.Workloads[0].EnvelopeDigest = strings.Repeat("0", 64)
				})
				return []string{"verify", "--kbs", url, "--kbs-ca", e.kb.TLSCAPath(), "--kbs-key", e.kb.SigningPubPath(), "--dir", e.out}
			},
			want: []string{verify.CheckSignature, verify.CheckHistoryReplay},
			msg:  "differs from its last history entry",
		},
		{
			name: "wrong pinned key",
			setup: func(t *testing.T, e *verifyEnv) []string {
				return e.args("--kbs-key", writeOtherKey(t, e.dir))
			},
			want: []string{verify.CheckKey, verify.CheckSignature, verify.CheckHistoryChain},
			msg:  "the pinned key is sha256:",
		},
		{
			name: "wrong pinned key fingerprint",
			setup: func(t *testing.T, e *verifyEnv) []string {
				return []string{"verify", "--kbs", e.kb.URL, "--kbs-ca", e.kb.TLSCAPath(), "--kbs-key-sha256", strings.Repeat("ab", 32),
					"--expect", e.sealed, "--insecure-registry", "--dir", e.out}
			},
			want: []string{verify.CheckKey},
			msg:  "the pinned key is sha256:" + strings.Repeat("ab", 32),
		},
		{
			name: "wrong CA pin",
			setup: func(t *testing.T, e *verifyEnv) []string {
				return []string{"verify", "--kbs", e.kb.URL, "--kbs-ca-sha256", strings.Repeat("cd", 32), "--kbs-key", e.kb.SigningPubPath(),
					"--expect", e.sealed, "--insecure-registry", "--dir", e.out}
			},
			want: []string{verify.CheckTLS},
			msg:  "pinned CA SHA-256",
		},
		{
			name: "wrong CA certificate",
			setup: func(t *testing.T, e *verifyEnv) []string {
				return []string{"verify", "--kbs", e.kb.URL, "--kbs-ca", writeCA(t, e.dir), "--kbs-key", e.kb.SigningPubPath(), "--dir", e.out}
			},
			want: []string{verify.CheckTLS},
			msg:  "certificate signed by unknown authority",
		},
		{
			name: "broker unreachable",
			setup: func(t *testing.T, e *verifyEnv) []string {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				addr := ln.Addr().String()
				ln.Close()
				return []string{"verify", "--kbs", "https://" + addr, "--kbs-ca", e.kb.TLSCAPath(), "--kbs-key", e.kb.SigningPubPath(),
					"--expect", e.sealed, "--insecure-registry", "--dir", e.out}
			},
			want: []string{verify.CheckConnect},
			msg:  "connection refused",
		},
		{
			name: "history entry altered in the store",
			setup: func(t *testing.T, e *verifyEnv) []string {
				err := e.kb.Store.Update(context.Background(), func(tx store.Tx) error {
					key := "00000000000000000001"
					b, err := tx.Get(registry.BucketHistory, key)
					if err != nil {
						return err
					}
					var h registry.HistoryEntry
					if err := json.Unmarshal(b, &h); err != nil {
						return err
					}
					h.Actor = "admin:someone-else"
					b, _ = json.Marshal(h)
					return tx.Put(registry.BucketHistory, key, b)
				})
				if err != nil {
					t.Fatal(err)
				}
				return e.args()
			},
			want: []string{verify.CheckHistoryChain},
			msg:  "history entry 1: hash mismatch",
		},
		{
			name: "envelope digest differs from the image",
			setup: func(t *testing.T, e *verifyEnv) []string {
				updateWorkload(t, e.kb, func(w *registry.Workload) { w.EnvelopeDigest = strings.Repeat("e1", 32) })
				return e.args()
			},
			want: []string{verify.CheckEnvelopeDigest},
			msg:  "the broker expects envelope digest (HOST_DATA) " + strings.Repeat("e1", 32),
		},
		{
			name: "measurement differs",
			setup: func(t *testing.T, e *verifyEnv) []string {
				updateWorkload(t, e.kb, func(w *registry.Workload) { w.Measurements["sim"] = []string{strings.Repeat("5a", 48)} })
				return e.args()
			},
			want: []string{verify.CheckMeasurement},
			msg:  strings.Repeat("5a", 48),
		},
		{
			name: "extra allowed measurement",
			setup: func(t *testing.T, e *verifyEnv) []string {
				updateWorkload(t, e.kb, func(w *registry.Workload) {
					w.Measurements["sim"] = append(w.Measurements["sim"], strings.Repeat("5b", 48))
				})
				return e.args()
			},
			want: []string{verify.CheckMeasurement},
			msg:  strings.Repeat("5b", 48),
		},
		{
			name: "workload missing",
			setup: func(t *testing.T, e *verifyEnv) []string {
				if _, err := e.kb.Registry.Remove(context.Background(), verifyWorkload, "test"); err != nil {
					t.Fatal(err)
				}
				return e.args()
			},
			want: []string{verify.CheckRegistered},
			msg:  "not registered at the broker",
		},
		{
			name: "SANs differ from --san",
			setup: func(t *testing.T, e *verifyEnv) []string {
				return e.args("--san", verifyWorkload+"=web.example.com")
			},
			want: []string{verify.CheckSANs},
			msg:  "expected [web.example.com]",
		},
		{
			name: "unexpected workload with --strict",
			setup: func(t *testing.T, e *verifyEnv) []string {
				w, err := e.kb.Registry.Get(context.Background(), verifyWorkload)
				if err != nil {
					t.Fatal(err)
				}
				w.ID = "default.deployment.intruder"
				if _, err := e.kb.Registry.Put(context.Background(), *w, "test"); err != nil {
					t.Fatal(err)
				}
				return e.args("--strict")
			},
			want: []string{verify.CheckUnexpected},
			msg:  "default.deployment.intruder",
		},
		{
			name: "envelope names another broker",
			setup: func(t *testing.T, e *verifyEnv) []string {
				// Registered here, but the guest would attest to another broker.
				e.seal(t, e.sealed, "--kbs", "https://kbs.elsewhere.example:8443")
				return e.args()
			},
			want: []string{verify.CheckAnnotationKBS, verify.CheckEnvelopeKBS},
			msg:  `the envelope header names another broker: URL "https://kbs.elsewhere.example:8443"`,
		},
		{
			name: "sealed manifest names another broker",
			setup: func(t *testing.T, e *verifyEnv) []string {
				b, _ := os.ReadFile(e.sealed)
				other := filepath.Join(e.dir, "other.sealed.yaml")
				os.WriteFile(other, []byte(strings.ReplaceAll(string(b), e.kb.URL, "https://kbs.elsewhere.example")), 0o644)
				return []string{"verify", "--kbs", e.kb.URL, "--kbs-ca", e.kb.TLSCAPath(), "--kbs-key", e.kb.SigningPubPath(),
					"--expect", other, "--insecure-registry", "--dir", e.out}
			},
			want: []string{verify.CheckAnnotationKBS},
			msg:  "https://kbs.elsewhere.example",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newVerifyEnv(t)
			// A root from an earlier passing run must not survive a failing one.
			if _, _, err := runSealctl(t, "", e.args()...); err != nil {
				t.Fatalf("baseline verify: %v", err)
			}
			args := tc.setup(t, e)
			stdout, stderr, err := runSealctl(t, "", args...)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != exitVerifyFailed || !errors.Is(err, verify.ErrFailed) {
				t.Fatalf("err = %v (want exit %d)\n%s\n%s", err, exitVerifyFailed, stdout, stderr)
			}
			r := e.report(t)
			want := slices.Sorted(slices.Values(tc.want))
			if got := checkIDs(r, verify.StatusFail); !slices.Equal(got, want) {
				t.Errorf("failed checks %v, want %v\n%s", got, want, stdout)
			}
			for _, id := range tc.want {
				if !strings.Contains(err.Error(), id) {
					t.Errorf("error does not name %s: %v", id, err)
				}
			}
			txt, _ := os.ReadFile(filepath.Join(e.out, verify.FileReportText))
			if !strings.Contains(string(txt), "FAILED") || !strings.Contains(string(txt), tc.msg) {
				t.Errorf("report.txt lacks FAILED / %q:\n%s", tc.msg, txt)
			}
			if fileExists(filepath.Join(e.out, verify.FileMeshRoot)) {
				t.Error("mesh-root.pem present after a failed verification")
			}
		})
	}
}

func TestVerifyFlagErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "plain.yaml")
	os.WriteFile(empty, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"verify", "--kbs-ca-sha256", strings.Repeat("a", 64)}, "--kbs"},
		{[]string{"verify", "--kbs", "https://127.0.0.1:1"}, "missing required flag: --kbs-ca (or --kbs-ca-sha256)"},
		{[]string{"verify", "--kbs", "https://127.0.0.1:1", "--kbs-ca", "x", "--kbs-ca-sha256", "y"}, "exactly one of --kbs-ca"},
		{[]string{"verify", "--kbs", "https://127.0.0.1:1", "--kbs-ca-sha256", strings.Repeat("a", 64), "--kbs-key", "a", "--kbs-key-sha256", "b"}, "give one"},
		{[]string{"verify", "--kbs", "https://127.0.0.1:1", "--kbs-ca-sha256", strings.Repeat("a", 64), "--expect", empty}, "no sealed pod templates"},
		{[]string{"verify", "--kbs", "https://127.0.0.1:1", "--kbs-ca-sha256", strings.Repeat("a", 64), "-o", "xml"}, `invalid argument "xml" for "-o, --output" flag`},
		{[]string{"verify", "--kbs", "https://127.0.0.1:1", "--kbs-ca-sha256", strings.Repeat("a", 64), "--san", "nosans"}, "--san"},
		{[]string{"verify", "--kbs", "https://127.0.0.1:1", "--kbs-ca-sha256", strings.Repeat("a", 64), "--kbs-key-sha256", "zz", "--dir", dir}, "64 hex digits"},
		{[]string{"verify", "--kbs", "https://127.0.0.1:1", "--kbs-ca-sha256", strings.Repeat("a", 64), "--kbs-key", empty}, "no PUBLIC KEY block"},
	} {
		_, _, err := runSealctl(t, "", tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
		var ee *exitError
		if errors.As(err, &ee) {
			t.Errorf("%v: usage error got verification exit code %d", tc.args, ee.code)
		}
	}
}

// Execute maps a failed verification to exit code 2 and other errors to 1.
func TestVerifyExitCodes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "https://" + ln.Addr().String()
	ln.Close()
	out := filepath.Join(t.TempDir(), "verify")
	saved := os.Args
	t.Cleanup(func() { os.Args = saved })
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"verify", "--kbs", closed}, 1},
		{[]string{"verify", "--kbs", closed, "--kbs-ca-sha256", strings.Repeat("a", 64), "--dir", out, "-o", "json"}, exitVerifyFailed},
	} {
		os.Args = append([]string{"sealctl"}, tc.args...)
		if got := Execute(); got != tc.code {
			t.Errorf("%v: exit %d, want %d", tc.args, got, tc.code)
		}
	}
}

// A broker reached at another URL by the guests (NAT, load balancer) is the same broker when
// the owner says so with --kbs-alias; the CA pin in the envelope must still match.
func TestVerifyAlias(t *testing.T) {
	e := newVerifyEnv(t)
	e.seal(t, e.sealed, "--kbs", "https://kbs.guests.example:8443")
	if _, _, err := runSealctl(t, "", e.args()...); err == nil {
		t.Fatal("verify passed although the envelope names another URL")
	}
	if _, stderr, err := runSealctl(t, "", e.args("--kbs-alias", "https://kbs.guests.example:8443/")...); err != nil {
		t.Fatalf("verify with --kbs-alias: %v\n%s", err, stderr)
	}
}
