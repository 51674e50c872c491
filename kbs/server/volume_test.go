package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/adminclient"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/client"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/setup"
	"github.com/sealpod/sealpod/kbs/store"
)

// release runs the two-request flow for workload id (registered with the env's policy) and
// returns the session (with its token) and the released keys.
func (e *env) release(t *testing.T, id string) (*client.Session, api.Keys) {
	t.Helper()
	ctx := context.Background()
	s, err := e.client.Auth(ctx, api.TEESim, id)
	if err != nil {
		t.Fatalf("auth %s: %v", id, err)
	}
	csr, _ := boundCSR(t, s.CSRBindingURI())
	rel, err := s.AttestRelease(ctx, e.evidence(t, s, nil), csr)
	if err != nil {
		t.Fatalf("attest %s: %v", id, err)
	}
	return s, rel.Keys
}

// register puts a workload with the env's policy under another id (fresh data key).
func (e *env) register(t *testing.T, id string) registry.Workload {
	t.Helper()
	w := e.workload.Clone()
	w.ID = id
	w.DataKey = make([]byte, api.DataKeySize)
	rand.Read(w.DataKey)
	if _, err := e.reg.Put(context.Background(), w, "admin:test"); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	return w
}

// volumeCall is one begin (gen == 0) or commit (gen > 0) and what it must answer.
type volumeCall struct {
	name          string
	token         func() string
	volume        string
	gen           uint64
	status        int    // 0: success
	reason, inMsg string // of a refusal
	committed     uint64
	pending       uint64 // begin only
}

func (e *env) runVolumeCalls(t *testing.T, calls []volumeCall) {
	t.Helper()
	ctx := context.Background()
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			var committed, pending uint64
			var err error
			if c.gen == 0 {
				committed, pending, err = e.client.VolumeBegin(ctx, c.token(), c.volume)
			} else {
				err = e.client.VolumeCommit(ctx, c.token(), c.volume, c.gen)
				committed = c.gen
			}
			if c.status != 0 {
				wantAPIError(t, err, c.status, c.reason, "")
				if !strings.Contains(err.Error(), c.inMsg) {
					t.Fatalf("error %q does not say %q", err, c.inMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v", err)
			}
			if committed != c.committed || (c.gen == 0 && pending != c.pending) {
				t.Fatalf("committed %d pending %d, want %d %d", committed, pending, c.committed, c.pending)
			}
		})
	}
}

// TestVolumeGenerations: begin/commit per (workload, volume), two-phase: begin is idempotent
// until commit, a commit of anything but the pending generation is refused (a replay of the
// commit that succeeded changes nothing), tokens of other workloads, forged or expired
// tokens cannot touch a workload's generations, and everything survives a broker restart.
func TestVolumeGenerations(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.register(t, "db")
	a, _ := e.release(t, e.workload.ID)
	b, _ := e.release(t, "db")
	tokA := func() string { return a.Token }
	tokB := func() string { return b.Token }
	forged := func() string { return a.Token[:len(a.Token)-2] + "AA" }
	const vol, other = "default/data-web-0", "default/logs"
	e.runVolumeCalls(t, []volumeCall{
		{name: "first begin", token: tokA, volume: vol, committed: 0, pending: 1},
		{name: "begin again, same pending", token: tokA, volume: vol, committed: 0, pending: 1},
		{name: "commit ahead of pending", token: tokA, volume: vol, gen: 2, status: http.StatusConflict, reason: api.ReasonVolumeConflict, inMsg: "generation 2 is not the pending generation 1"},
		{name: "commit pending", token: tokA, volume: vol, gen: 1, committed: 1},
		{name: "commit replayed", token: tokA, volume: vol, gen: 1, committed: 1},
		{name: "next begin", token: tokA, volume: vol, committed: 1, pending: 2},
		{name: "commit of the old generation", token: tokA, volume: vol, gen: 1, status: http.StatusConflict, reason: api.ReasonVolumeConflict, inMsg: "generation 1 is not the pending generation 2"},
		{name: "commit without begin", token: tokA, volume: other, gen: 1, status: http.StatusConflict, reason: api.ReasonVolumeConflict, inMsg: "nothing is pending (call begin first)"},
		{name: "other workload, same identity, own generations", token: tokB, volume: vol, committed: 0, pending: 1},
		{name: "other workload commits its own", token: tokB, volume: vol, gen: 1, committed: 1},
		{name: "other workload cannot commit ours", token: tokB, volume: vol, gen: 2, status: http.StatusConflict, reason: api.ReasonVolumeConflict, inMsg: "workload db volume default/data-web-0"},
		{name: "ours untouched", token: tokA, volume: vol, committed: 1, pending: 2},
		{name: "forged token", token: forged, volume: vol, status: http.StatusUnauthorized, reason: api.ReasonToken, inMsg: "token"},
		{name: "no token", token: func() string { return "" }, volume: vol, status: http.StatusUnauthorized, reason: api.ReasonToken, inMsg: "token"},
	})
	t.Run("expired token", func(t *testing.T) {
		e.clock.advance(DefaultTokenTTL + time.Second)
		defer e.clock.advance(-DefaultTokenTTL - time.Second)
		_, _, err := e.client.VolumeBegin(context.Background(), a.Token, vol)
		wantAPIError(t, err, http.StatusUnauthorized, api.ReasonTokenExpired, "")
	})

	e.restart(t)
	e.runVolumeCalls(t, []volumeCall{
		{name: "after restart: pending kept", token: tokA, volume: vol, committed: 1, pending: 2},
		{name: "after restart: commit", token: tokA, volume: vol, gen: 2, committed: 2},
		{name: "after restart: next begin", token: tokA, volume: vol, committed: 2, pending: 3},
		{name: "after restart: other workload kept", token: tokB, volume: vol, committed: 1, pending: 2},
	})

	// The audit log names each call with its volume and generations; refusals say why.
	events, err := e.audit.List(context.Background(), time.Time{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	has := func(result, workload, reason string) bool {
		return slices.ContainsFunc(events, func(ev audit.Event) bool {
			return ev.Kind == audit.KindVolume && ev.Result == result && ev.Workload == workload && strings.Contains(ev.Reason, reason)
		})
	}
	for _, w := range []struct{ result, workload, reason string }{
		{audit.ResultOK, e.workload.ID, "begin default/data-web-0: committed 0, pending 1"},
		{audit.ResultOK, e.workload.ID, "commit default/data-web-0: committed 2"},
		{audit.ResultOK, "db", "commit default/data-web-0: committed 1"},
		{audit.ResultDenied, e.workload.ID, "generation 1 is not the pending generation 2"},
	} {
		if !has(w.result, w.workload, w.reason) {
			t.Errorf("no audit event volume/%s/%s saying %q", w.result, w.workload, w.reason)
		}
	}
	resp, err := e.httpClient(t).Get(e.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// Counted by the server started at the restart: three begins and one commit.
	if !strings.Contains(string(m), `sealpod_kbs_volume_calls_total{op="begin",result="ok"} 3`) || !strings.Contains(string(m), `sealpod_kbs_volume_calls_total{op="commit",result="ok"} 1`) {
		t.Errorf("metrics after the restart lack the volume call counts (3 begins, 1 commit):\n%s", grepLines(string(m), "sealpod_kbs_volume"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestVolumeLimit: at most api.MaxVolumesPerWorkload volumes per workload; the known ones
// still work at the limit.
func TestVolumeLimit(t *testing.T) {
	e := newEnv(t, envOptions{})
	s, _ := e.release(t, e.workload.ID)
	ctx := context.Background()
	for i := range api.MaxVolumesPerWorkload {
		if _, _, err := e.client.VolumeBegin(ctx, s.Token, fmt.Sprintf("ns/claim-%d", i)); err != nil {
			t.Fatalf("volume %d: %v", i, err)
		}
	}
	_, _, err := e.client.VolumeBegin(ctx, s.Token, "ns/one-too-many")
	wantAPIError(t, err, http.StatusConflict, api.ReasonVolumeLimit, "")
	if !strings.Contains(err.Error(), "at most 64") {
		t.Fatalf("limit error %q does not name the limit", err)
	}
	if c, p, err := e.client.VolumeBegin(ctx, s.Token, "ns/claim-0"); err != nil || c != 0 || p != 1 {
		t.Fatalf("known volume at the limit: %d %d %v", c, p, err)
	}
}

// TestVolumeRegistration: the volume secret is the broker's, made at the first registration
// and kept (with the generations) across updates; an update invalidates earlier tokens; a
// removal deletes secret and generations, so a new registration of the id starts afresh; a
// workload registered before volume support gets no secret (and no generations) until its
// next update.
func TestVolumeRegistration(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	const vol = "prod/data"
	s, keys := e.release(t, e.workload.ID)
	secret := keys.VolumeSecret
	if len(secret) != api.VolumeSecretSize {
		t.Fatalf("volume secret of %d bytes", len(secret))
	}
	if _, _, err := e.client.VolumeBegin(ctx, s.Token, vol); err != nil {
		t.Fatal(err)
	}
	if err := e.client.VolumeCommit(ctx, s.Token, vol, 1); err != nil {
		t.Fatal(err)
	}
	_, dbKeys := e.release(t, e.register(t, "db").ID)
	if bytes.Equal(dbKeys.VolumeSecret, secret) {
		t.Fatal("two workloads got the same volume secret")
	}

	upd := e.workload.Clone()
	upd.DataKey = make([]byte, api.DataKeySize)
	rand.Read(upd.DataKey)
	upd.SANs = []string{"web2.default.svc.cluster.local"}
	if _, err := e.reg.Put(ctx, upd, "admin:test"); err != nil {
		t.Fatal(err)
	}
	_, _, err := e.client.VolumeBegin(ctx, s.Token, vol)
	wantAPIError(t, err, http.StatusUnauthorized, api.ReasonToken, "")
	if !strings.Contains(err.Error(), "changed since attestation") {
		t.Fatalf("stale token error %q", err)
	}
	s2, keys2 := e.release(t, e.workload.ID)
	if !bytes.Equal(keys2.VolumeSecret, secret) || !bytes.Equal(keys2.DataKey, upd.DataKey) {
		t.Fatal("an update changed the volume secret (or did not release the new data key)")
	}
	if c, p, err := e.client.VolumeBegin(ctx, s2.Token, vol); err != nil || c != 1 || p != 2 {
		t.Fatalf("generations after an update: %d %d %v, want 1 2", c, p, err)
	}

	if _, err := e.reg.Remove(ctx, e.workload.ID, "admin:test"); err != nil {
		t.Fatal(err)
	}
	_, _, err = e.client.VolumeBegin(ctx, s2.Token, vol)
	wantAPIError(t, err, http.StatusNotFound, api.ReasonNotFound, "")
	if _, err := e.reg.Put(ctx, upd, "admin:test"); err != nil {
		t.Fatal(err)
	}
	s3, keys3 := e.release(t, e.workload.ID)
	if len(keys3.VolumeSecret) != api.VolumeSecretSize || bytes.Equal(keys3.VolumeSecret, secret) {
		t.Fatal("a registration after a removal did not get a new volume secret")
	}
	if c, p, err := e.client.VolumeBegin(ctx, s3.Token, vol); err != nil || c != 0 || p != 1 {
		t.Fatalf("generations after removal and new registration: %d %d %v, want 0 1", c, p, err)
	}

	// A record written before volume support: no volumeSecret field.
	e.register(t, "legacy")
	stripSecret(t, e.store, "legacy")
	sl, kl := e.release(t, "legacy")
	if kl.VolumeSecret != nil {
		t.Fatal("a workload without a volume secret released one")
	}
	_, _, err = e.client.VolumeBegin(ctx, sl.Token, vol)
	wantAPIError(t, err, http.StatusForbidden, api.ReasonPolicy, "")
	if !strings.Contains(err.Error(), "no volume secret") {
		t.Fatalf("error %q", err)
	}
	legacy := e.workload.Clone()
	legacy.ID = "legacy"
	if _, err := e.reg.Put(ctx, legacy, "admin:test"); err != nil { // keeps the data key
		t.Fatal(err)
	}
	if _, kl := e.release(t, "legacy"); len(kl.VolumeSecret) != api.VolumeSecretSize {
		t.Fatal("an update of a workload without a volume secret did not make one")
	}
}

// stripSecret rewrites a workload record as a broker before volume support wrote it.
func stripSecret(t *testing.T, st store.Store, id string) {
	t.Helper()
	err := st.Update(context.Background(), func(tx store.Tx) error {
		b, err := tx.Get(registry.BucketWorkloads, id)
		if err != nil {
			return err
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		if _, ok := m["volumeSecret"]; !ok {
			return fmt.Errorf("record of %s has no volumeSecret field", id)
		}
		delete(m, "volumeSecret")
		if b, err = json.Marshal(m); err != nil {
			return err
		}
		return tx.Put(registry.BucketWorkloads, id, b)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestVolumeRecordTampering: a generations record put back into the store (an older copy)
// while the broker runs, or one of another registration, is refused, not used.
func TestVolumeRecordTampering(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	s, _ := e.release(t, e.workload.ID)
	const vol = "prod/data"
	read := func() []byte {
		var out []byte
		if err := e.store.View(ctx, func(tx store.Tx) error {
			var err error
			out, err = tx.Get(registry.BucketVolumes, e.workload.ID)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	write := func(b []byte) {
		if err := e.store.Update(ctx, func(tx store.Tx) error { return tx.Put(registry.BucketVolumes, e.workload.ID, b) }); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := e.client.VolumeBegin(ctx, s.Token, vol); err != nil {
		t.Fatal(err)
	}
	old := read()
	if err := e.client.VolumeCommit(ctx, s.Token, vol, 1); err != nil {
		t.Fatal(err)
	}
	good := read()
	write(old)
	_, _, err := e.client.VolumeBegin(ctx, s.Token, vol)
	wantAPIError(t, err, http.StatusInternalServerError, api.ReasonInternal, "")
	if !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("put-back record: %v", err)
	}
	var other map[string]any
	json.Unmarshal(good, &other)
	other["epoch"] = strings.Repeat("0", 32)
	b, _ := json.Marshal(other)
	write(b)
	_, _, err = e.client.VolumeBegin(ctx, s.Token, vol)
	wantAPIError(t, err, http.StatusInternalServerError, api.ReasonInternal, "")
	if !strings.Contains(err.Error(), "another registration") {
		t.Fatalf("record of another registration: %v", err)
	}
	write(good)
	if c, p, err := e.client.VolumeBegin(ctx, s.Token, vol); err != nil || c != 1 || p != 2 {
		t.Fatalf("restored record: %d %d %v", c, p, err)
	}
}

// TestVolumeRawRequests: bodies are decoded strictly and identities checked by their syntax.
func TestVolumeRawRequests(t *testing.T) {
	e := newEnv(t, envOptions{})
	s, _ := e.release(t, e.workload.ID)
	hc := e.httpClient(t)
	for _, tc := range []struct {
		name, path, body string
		status           int
		inMsg            string
	}{
		{"begin ok", api.PathVolumeBegin, `{"volume":"default/data-0"}`, 200, ""},
		{"unknown field", api.PathVolumeBegin, `{"volume":"default/data-0","x":1}`, 400, "unknown field"},
		{"trailing data", api.PathVolumeBegin, `{"volume":"default/data-0"} {}`, 400, "trailing"},
		{"no slash", api.PathVolumeBegin, `{"volume":"data-0"}`, 400, "not <namespace>/<claim>"},
		{"upper-case namespace", api.PathVolumeBegin, `{"volume":"Default/data-0"}`, 400, "not a DNS-1123 label"},
		{"dotted namespace", api.PathVolumeBegin, `{"volume":"a.b/data-0"}`, 400, "not a DNS-1123 label"},
		{"claim with a slash", api.PathVolumeBegin, `{"volume":"default/a/b"}`, 400, "not a DNS-1123 subdomain"},
		{"path traversal", api.PathVolumeBegin, `{"volume":"default/.."}`, 400, "not a DNS-1123 subdomain"},
		{"namespace of 64", api.PathVolumeBegin, `{"volume":"` + strings.Repeat("a", 64) + `/c"}`, 400, "not a DNS-1123 label"},
		{"too long", api.PathVolumeBegin, `{"volume":"a/` + strings.Repeat("a", 400) + `"}`, 400, "longer than"},
		{"oversized body", api.PathVolumeBegin, `{"volume":"` + strings.Repeat("a", 5000) + `"}`, 413, "larger than"},
		{"commit generation 0", api.PathVolumeCommit, `{"volume":"default/data-0","generation":0}`, 400, "0 is never pending"},
		{"commit negative", api.PathVolumeCommit, `{"volume":"default/data-0","generation":-1}`, 400, "cannot unmarshal"},
		{"commit ok", api.PathVolumeCommit, `{"volume":"default/data-0","generation":1}`, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, out := e.postRaw(t, hc, tc.path, []byte(tc.body), map[string]string{"Authorization": "Bearer " + s.Token})
			if status != tc.status || !strings.Contains(out.Error, tc.inMsg) {
				t.Fatalf("HTTP %d %q, want %d saying %q", status, out.Error, tc.status, tc.inMsg)
			}
		})
	}
}

// TestVolumeSecretNeverLeaks (canary): after registrations, attestations, volume calls and
// refusals, the volume secret appears in none of the manifest, the history, the admin API's
// answers, the audit log, the broker's log, nor in clear in the store file.
func TestVolumeSecretNeverLeaks(t *testing.T) {
	var logs lockedBuffer
	e := newEnv(t, envOptions{logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	ctx := context.Background()
	s, keys := e.release(t, e.workload.ID)
	secret := keys.VolumeSecret
	if len(secret) != api.VolumeSecretSize {
		t.Fatalf("volume secret of %d bytes", len(secret))
	}
	if _, _, err := e.client.VolumeBegin(ctx, s.Token, "default/data-0"); err != nil {
		t.Fatal(err)
	}
	e.client.VolumeCommit(ctx, s.Token, "default/data-0", 7) // refused: logged and audited
	upd := e.workload.Clone()
	upd.DataKey = nil
	upd.SANs = []string{"other.default.svc"}
	if _, err := e.reg.Put(ctx, upd, "admin:test"); err != nil {
		t.Fatal(err)
	}
	if _, again := e.release(t, e.workload.ID); !bytes.Equal(again.VolumeSecret, secret) {
		t.Fatal("volume secret changed across an update")
	}

	outputs := map[string][]byte{}
	resp, err := e.httpClient(t).Get(e.url + api.PathManifest)
	if err != nil {
		t.Fatal(err)
	}
	outputs["manifest"], _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	ac := e.adminClient(t)
	for name, get := range map[string]func() (any, error){
		"admin GET workloads":      func() (any, error) { return ac.ListWorkloads(ctx) },
		"admin GET workloads/{id}": func() (any, error) { return ac.GetWorkload(ctx, e.workload.ID) },
		"admin GET history":        func() (any, error) { return ac.History(ctx) },
		"admin GET audit":          func() (any, error) { return ac.Audit(ctx, time.Time{}, 1000) },
		"admin GET status":         func() (any, error) { return ac.Status(ctx) },
	} {
		v, err := get()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		outputs[name], _ = json.Marshal(v)
	}
	if !bytes.Contains(outputs["admin GET audit"], []byte("begin default/data-0")) {
		t.Fatal("the audit log read back has no volume event: the canary would check nothing")
	}
	e.stop(t)
	e.audit.Flush(ctx)
	outputs["log"] = []byte(logs.String())
	if !strings.Contains(logs.String(), "not the pending generation") {
		t.Fatal("the log has no refused volume call: the canary would check nothing")
	}
	if outputs["store file"], err = os.ReadFile(filepath.Join(e.dir, "kbs.db")); err != nil {
		t.Fatal(err)
	}
	for name, out := range outputs {
		for enc, form := range secretForms(secret) {
			if bytes.Contains(out, form) {
				t.Errorf("%s holds the volume secret (%s)", name, enc)
			}
		}
	}
}

// secretForms are the spellings a leaked secret could take.
func secretForms(b []byte) map[string][]byte {
	return map[string][]byte{
		"raw":          b,
		"hex":          []byte(hex.EncodeToString(b)),
		"HEX":          []byte(strings.ToUpper(hex.EncodeToString(b))),
		"base64":       []byte(base64.RawStdEncoding.EncodeToString(b)),
		"base64url":    []byte(base64.RawURLEncoding.EncodeToString(b)),
		"Go byte list": []byte(strings.Trim(fmt.Sprint(b), "[]")),
	}
}

// adminClient is an admin API client with the state's admin certificate.
func (e *env) adminClient(t *testing.T) *adminclient.Client {
	t.Helper()
	cfg, err := adminclient.ReadClientConfig(filepath.Join(e.dir, setup.AdminClientConfig))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.state.TLSCAPEM)
	c, err := adminclient.NewClient(e.url, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
