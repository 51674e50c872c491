package registry_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/store"
	"github.com/sealpod/sealpod/kbs/store/bolt"
)

var (
	hex96 = strings.Repeat("ab", 48)
	hex64 = strings.Repeat("cd", 32)
)

func validWorkload(id string) registry.Workload {
	return registry.Workload{
		ID:             id,
		TEEs:           []string{"snp", "sim"},
		Measurements:   map[string][]string{"snp": {hex96}, "sim": {strings.Repeat("01", 48)}},
		EnvelopeDigest: hex64,
		MinTCB:         registry.TCB{SNP: &registry.SNPTCB{Bootloader: 3, TEE: 0, SNP: 8, Microcode: 115}},
		SANs:           []string{id + ".default.svc", "10.0.0.1", "spiffe://sealpod/" + id},
		DataKey:        bytes.Repeat([]byte{0x42}, 32),
	}
}

func newSigner(t testing.TB) crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func openBolt(t testing.TB) store.Store {
	s, err := bolt.Open(filepath.Join(t.TempDir(), "kbs.db"), bytes.Repeat([]byte{1}, store.KeySize), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestValidateNamesField(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(w *registry.Workload)
		field  string
	}{
		{"empty id", func(w *registry.Workload) { w.ID = "" }, "id"},
		{"uppercase id", func(w *registry.Workload) { w.ID = "App" }, "id"},
		{"id too long", func(w *registry.Workload) { w.ID = strings.Repeat("a", 254) }, "id"},
		{"no tees", func(w *registry.Workload) { w.TEEs = nil }, "tees"},
		{"unknown tee", func(w *registry.Workload) { w.TEEs = []string{"snp", "sgx"} }, "tees[1]"},
		{"duplicate tee", func(w *registry.Workload) { w.TEEs = []string{"snp", "snp"} }, "tees[1]"},
		{"measurement for unlisted tee", func(w *registry.Workload) { w.Measurements["tdx"] = []string{hex96} }, "measurements[tdx]"},
		{"missing measurement", func(w *registry.Workload) { delete(w.Measurements, "sim") }, "measurements[sim]"},
		{"uppercase measurement", func(w *registry.Workload) { w.Measurements["snp"] = []string{strings.ToUpper(hex96)} }, "measurements[snp][0]"},
		{"short measurement", func(w *registry.Workload) { w.Measurements["snp"] = []string{hex96, "abcd"} }, "measurements[snp][1]"},
		{"bad tdx rtmr", func(w *registry.Workload) {
			w.TEEs = append(w.TEEs, "tdx")
			w.Measurements["tdx"] = []string{hex96 + "::zz::"}
		}, "measurements[tdx][0]"},
		{"bad envelope digest", func(w *registry.Workload) { w.EnvelopeDigest = "xyz" }, "envelopeDigest"},
		{"bad tdx tcb", func(w *registry.Workload) { w.MinTCB.TDXTeeTCBSVN = "00" }, "minTcb.tdxTeeTcbSvn"},
		{"wildcard san", func(w *registry.Workload) { w.SANs = []string{"*.example.com"} }, "sans[0]"},
		{"duplicate san", func(w *registry.Workload) { w.SANs = []string{"a.example", "a.example"} }, "sans[1]"},
		{"short data key", func(w *registry.Workload) { w.DataKey = []byte{1, 2, 3} }, "dataKey"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := validWorkload("app")
			tc.mutate(&w)
			err := w.Validate()
			var fe *registry.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate = %v, want a FieldError", err)
			}
			if fe.Field != tc.field || !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Validate = %v (field %q), want field %q", err, fe.Field, tc.field)
			}
		})
	}
	w := validWorkload("app.v1-x")
	w.TEEs = append(w.TEEs, "tdx", "pef")
	w.PEFCredential = strings.Repeat("ef", 32) // an Ed25519 public key (any 32 bytes pass Validate)
	w.Measurements["tdx"] = []string{tdxPinned, hex96 + "::" + hex96 + ":" + hex96 + ":" + hex96}
	if err := w.Validate(); err != nil {
		t.Fatalf("valid workload: %v", err)
	}
}

func TestPutGetListRemoveAndHistory(t *testing.T) {
	ctx := context.Background()
	signer := newSigner(t)
	reg := registry.New(openBolt(t), signer)
	e1, err := reg.Put(ctx, validWorkload("a"), "admin:test")
	if err != nil {
		t.Fatal(err)
	}
	if e1.Seq != 1 || e1.Prev != registry.ZeroHash || e1.Workload.Generation != 1 || e1.Workload.DataKey != nil {
		t.Fatalf("first entry = %+v", e1)
	}
	upd := validWorkload("a")
	upd.DataKey = nil // keep the stored key
	upd.SANs = []string{"a.example"}
	e2, err := reg.Put(ctx, upd, "admin:test")
	if err != nil {
		t.Fatal(err)
	}
	if e2.Seq != 2 || e2.Prev != e1.Hash || e2.Workload.Generation != 2 {
		t.Fatalf("second entry = %+v", e2)
	}
	got, err := reg.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.DataKey, validWorkload("a").DataKey) || got.SANs[0] != "a.example" || got.Generation != 2 {
		t.Fatalf("Get = %+v", got)
	}
	if _, err := reg.Put(ctx, validWorkload("b"), "admin:test"); err != nil {
		t.Fatal(err)
	}
	nokey := validWorkload("c")
	nokey.DataKey = nil
	if _, err := reg.Put(ctx, nokey, "x"); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("new workload without key: %v", err)
	}
	ws, err := reg.List(ctx)
	if err != nil || len(ws) != 2 || ws[0].ID != "a" || ws[1].ID != "b" {
		t.Fatalf("List = %v, %v", ws, err)
	}
	if _, err := reg.Remove(ctx, "a", "admin:test"); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Get(ctx, "a"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get removed: %v", err)
	}
	if _, err := reg.Remove(ctx, "a", "admin:test"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Remove twice: %v", err)
	}
	hist, err := reg.History(ctx)
	if err != nil || len(hist) != 4 {
		t.Fatalf("History = %d entries, %v", len(hist), err)
	}
	head, err := registry.VerifyHistory(hist, signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := reg.Head(ctx); h != head {
		t.Fatalf("Head %v != verified head %v", h, head)
	}
}

func TestManifestVerifiesAndDetectsTampering(t *testing.T) {
	ctx := context.Background()
	for _, alg := range []string{"ecdsa", "ed25519"} {
		t.Run(alg, func(t *testing.T) {
			var signer crypto.Signer = newSigner(t)
			if alg == "ed25519" {
				_, k, _ := ed25519.GenerateKey(rand.Reader)
				signer = k
			}
			reg := registry.New(openBolt(t), signer)
			for _, id := range []string{"a", "b", "c"} {
				if _, err := reg.Put(ctx, validWorkload(id), "admin:t"); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := reg.Remove(ctx, "b", "admin:t"); err != nil {
				t.Fatal(err)
			}
			m, err := reg.Manifest(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := registry.VerifyManifest(m, signer.Public()); err != nil {
				t.Fatalf("VerifyManifest: %v", err)
			}
			raw, _ := json.Marshal(m)
			if bytes.Contains(raw, []byte("dataKey")) {
				t.Fatal("manifest contains a data key")
			}
			// The manifest survives a JSON round trip (what sealctl verify will download).
			var back registry.SignedManifest
			if err := json.Unmarshal(raw, &back); err != nil {
				t.Fatal(err)
			}
			if err := registry.VerifyManifest(&back, signer.Public()); err != nil {
				t.Fatalf("VerifyManifest after JSON round trip: %v", err)
			}
			tampers := map[string]func(m *registry.SignedManifest){
				"workload measurement": func(m *registry.SignedManifest) {
					m.Manifest.Workloads[0].Measurements["snp"][0] = strings.Repeat("00", 48)
				},
				"history actor":         func(m *registry.SignedManifest) { m.Manifest.History[1].Actor = "mallory" },
				"history workload sans": func(m *registry.SignedManifest) { m.Manifest.History[0].Workload.SANs = []string{"evil.example"} },
				"history time":          func(m *registry.SignedManifest) { m.Manifest.History[2].Time = m.Manifest.History[2].Time.Add(1) },
				"history dropped":       func(m *registry.SignedManifest) { m.Manifest.History = m.Manifest.History[:3] },
				"history reordered": func(m *registry.SignedManifest) {
					h := m.Manifest.History
					h[0], h[1] = h[1], h[0]
				},
				"workload added": func(m *registry.SignedManifest) {
					m.Manifest.Workloads = append(m.Manifest.Workloads, publicOf(validWorkload("z")))
				},
				"workload dropped": func(m *registry.SignedManifest) { m.Manifest.Workloads = m.Manifest.Workloads[:1] },
				"head":             func(m *registry.SignedManifest) { m.Manifest.Head.Seq++ },
				"signature":        func(m *registry.SignedManifest) { m.Signature[len(m.Signature)-1] ^= 1 },
				"entry signature":  func(m *registry.SignedManifest) { m.Manifest.History[3].Signature[5] ^= 1 },
				"public key":       func(m *registry.SignedManifest) { m.PublicKey[len(m.PublicKey)-1] ^= 1 },
				"version":          func(m *registry.SignedManifest) { m.Manifest.Version = 2 },
				"issuedAt":         func(m *registry.SignedManifest) { m.Manifest.IssuedAt = m.Manifest.IssuedAt.Add(1) },
			}
			for name, tamper := range tampers {
				var c registry.SignedManifest
				_ = json.Unmarshal(raw, &c)
				tamper(&c)
				if err := registry.VerifyManifest(&c, signer.Public()); !errors.Is(err, registry.ErrVerify) {
					t.Errorf("tamper %s: VerifyManifest = %v, want ErrVerify", name, err)
				}
			}
			// A manifest re-signed by another key fails against the broker key.
			other := registry.New(openBolt(t), newSigner(t))
			om, _ := other.Manifest(ctx)
			if err := registry.VerifyManifest(om, signer.Public()); !errors.Is(err, registry.ErrVerify) {
				t.Errorf("foreign manifest: %v", err)
			}
		})
	}
}

// TestHistoryTamperingInStore re-signs nothing but rewrites one stored history entry through
// the store (as a store-level attacker with the store key could): verification detects it.
func TestHistoryTamperingInStore(t *testing.T) {
	ctx := context.Background()
	signer := newSigner(t)
	st := openBolt(t)
	reg := registry.New(st, signer)
	for _, id := range []string{"a", "b"} {
		if _, err := reg.Put(ctx, validWorkload(id), "admin:t"); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Update(ctx, func(tx store.Tx) error {
		v, err := tx.Get(registry.BucketHistory, "00000000000000000001")
		if err != nil {
			return err
		}
		var e registry.HistoryEntry
		_ = json.Unmarshal(v, &e)
		e.Workload.Measurements["snp"] = []string{strings.Repeat("ee", 48)}
		e.Hash, _ = e.ComputeHash() // even with a recomputed hash the signature and link break
		b, _ := json.Marshal(e)
		return tx.Put(registry.BucketHistory, "00000000000000000001", b)
	}); err != nil {
		t.Fatal(err)
	}
	hist, _ := reg.History(ctx)
	if _, err := registry.VerifyHistory(hist, signer.Public()); !errors.Is(err, registry.ErrVerify) {
		t.Fatalf("VerifyHistory after tampering: %v", err)
	}
}

func publicOf(w registry.Workload) registry.Workload { return w.Public() }

func TestInvalidIDIsNotFound(t *testing.T) {
	reg := registry.New(openBolt(t), newSigner(t))
	for _, id := range []string{"", "UPPER", "../x", strings.Repeat("a", 300)} {
		_, err := reg.Get(context.Background(), id)
		if !errors.Is(err, registry.ErrNotFound) || !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("Get(%q) = %v, want ErrNotFound and ErrInvalid", id, err)
		}
		_, err = reg.Remove(context.Background(), id, "t")
		if !errors.Is(err, registry.ErrNotFound) || !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("Remove(%q) = %v, want ErrNotFound and ErrInvalid", id, err)
		}
	}
}

// TestGetReturnsFreshIndependentCopies: Get decodes a stored value once and then reuses it,
// but every caller gets its own copy, and an update (also by another registry on the same
// store, as a second replica) is visible at the next Get.
func TestGetReturnsFreshIndependentCopies(t *testing.T) {
	st, signer := openBolt(t), newSigner(t)
	r := registry.New(st, signer)
	other := registry.New(st, signer) // replicas share the state's signing key
	ctx := context.Background()
	w := validWorkload("cache-me")
	if _, err := r.Put(ctx, w, "test"); err != nil {
		t.Fatal(err)
	}
	a, err := r.Get(ctx, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	a.SANs[0] = "mutated.example"
	a.Measurements["snp"][0] = "mutated"
	a.DataKey[0] ^= 0xff
	b, err := r.Get(ctx, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	if b.SANs[0] != w.SANs[0] || b.Measurements["snp"][0] != w.Measurements["snp"][0] || !bytes.Equal(b.DataKey, w.DataKey) {
		t.Fatalf("a caller's change leaked into the next Get: %+v", b)
	}
	w2 := w
	w2.SANs = []string{"updated.example"}
	if _, err := other.Put(ctx, w2, "test"); err != nil {
		t.Fatal(err)
	}
	c, err := r.Get(ctx, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c.Generation != b.Generation+1 || len(c.SANs) != 1 || c.SANs[0] != "updated.example" {
		t.Fatalf("update by another registry not visible: generation %d (was %d), SANs %v", c.Generation, b.Generation, c.SANs)
	}
	if _, err := other.Remove(ctx, w.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, w.ID); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get after removal: %v", err)
	}
}

// tdxPinned pins MRTD, RTMR[1] and RTMR[2] (RTMR[0] and RTMR[3] unpinned).
var tdxPinned = hex96 + "::" + hex96 + ":" + hex96 + ":"

// TestTDXPolicyMustPinKernel: a TDX reference value that leaves RTMR[1] (kernel) or RTMR[2]
// (initrd, command line) open lets a TD booted with a host-chosen kernel get the key, so the
// registry refuses it with a reason that says so.
func TestTDXPolicyMustPinKernel(t *testing.T) {
	ctx := context.Background()
	reg := registry.New(openBolt(t), newSigner(t))
	tests := []struct {
		name, value string
		ok          bool
	}{
		{"mrtd only", hex96, false},
		{"empty rtmrs", hex96 + "::::", false},
		{"rtmr1 open", hex96 + ":" + hex96 + "::" + hex96 + ":", false},
		{"rtmr2 open", hex96 + "::" + hex96 + "::" + hex96, false},
		{"mrtd, rtmr1, rtmr2", tdxPinned, true},
		{"all pinned", strings.Join([]string{hex96, hex96, hex96, hex96, hex96}, ":"), true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := validWorkload(fmt.Sprintf("tdx-%d", i))
			w.TEEs = []string{"tdx"}
			w.Measurements = map[string][]string{"tdx": {tc.value}}
			_, err := reg.Put(ctx, w, "admin:t")
			if tc.ok {
				if err != nil {
					t.Fatalf("Put(%s) = %v, want ok", tc.name, err)
				}
				return
			}
			var fe *registry.FieldError
			if !errors.As(err, &fe) || fe.Field != "measurements[tdx][0]" || !strings.Contains(fe.Reason, "RTMR[1]") || !strings.Contains(fe.Reason, "RTMR[2]") {
				t.Fatalf("Put(%s) = %v, want a measurements[tdx][0] error naming RTMR[1] and RTMR[2]", tc.name, err)
			}
		})
	}
}

// TestGenerationSurvivesRemoval: registering an id again after its removal never reuses a
// generation, so a token bound to (workload, generation) cannot serve the new registration.
func TestGenerationSurvivesRemoval(t *testing.T) {
	ctx := context.Background()
	st, signer := openBolt(t), newSigner(t)
	reg := registry.New(st, signer)
	seen := map[uint64]bool{}
	for round := range 3 {
		for range 2 {
			e, err := reg.Put(ctx, validWorkload("again"), "admin:t")
			if err != nil {
				t.Fatal(err)
			}
			g := e.Workload.Generation
			if seen[g] {
				t.Fatalf("round %d: generation %d used twice for workload again", round, g)
			}
			seen[g] = true
			if w, err := reg.Get(ctx, "again"); err != nil || w.Generation != g {
				t.Fatalf("Get after put: %+v, %v; want generation %d", w, err, g)
			}
		}
		if _, err := reg.Remove(ctx, "again", "admin:t"); err != nil {
			t.Fatal(err)
		}
	}
	// A new registry (restart) continues from the history, not from 1.
	e, err := registry.New(st, signer).Put(ctx, validWorkload("again"), "admin:t")
	if err != nil || seen[e.Workload.Generation] {
		t.Fatalf("after restart: generation %d reused (%v)", e.Workload.Generation, err)
	}
}
