package api_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/api"
)

// goldenManifest builds a fixed manifest (one put, one remove) signed with the Ed25519 key of
// the all-zero seed; Ed25519 signatures are deterministic, so the bytes are too.
//
// testdata/manifest.golden.json, manifest.canonical.golden and workload.golden.json were
// written by this same construction run against the types when they still lived in
// kbs/registry (before the wire types moved to kbs/api): the encoding must not change.
func goldenManifest(t testing.TB) (*api.SignedManifest, ed25519.PublicKey, api.Workload) {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	w := api.Workload{
		ID: "app.example", TEEs: []string{api.TEESNP, api.TEETDX},
		Measurements: map[string][]string{
			api.TEESNP: {strings.Repeat("ab", 48)},
			api.TEETDX: {strings.Repeat("01", 48) + "::" + strings.Repeat("02", 48) + ":" + strings.Repeat("03", 48) + ":"},
		},
		EnvelopeDigest: strings.Repeat("cd", 32),
		MinTCB:         api.TCB{SNP: &api.SNPTCB{Bootloader: 1, TEE: 2, SNP: 3, Microcode: 4}, TDXTeeTCBSVN: strings.Repeat("05", 16)},
		SANs:           []string{"app.example", "10.0.0.1", "spiffe://x/y"},
		Generation:     1, UpdatedAt: t0,
	}
	sign := func(e *api.HistoryEntry) {
		var err error
		if e.Hash, err = e.ComputeHash(); err != nil {
			t.Fatal(err)
		}
		h, _ := hex.DecodeString(e.Hash)
		e.Signature = ed25519.Sign(priv, h)
	}
	e1 := api.HistoryEntry{Seq: 1, Time: t0, Actor: "admin<&>", Op: api.OpPut, WorkloadID: w.ID, Workload: &w, Prev: api.ZeroHash}
	sign(&e1)
	e2 := api.HistoryEntry{Seq: 2, Time: t0.Add(time.Second), Actor: "ops", Op: api.OpRemove, WorkloadID: "old", Prev: e1.Hash}
	sign(&e2)
	m := api.Manifest{Version: api.ManifestVersion, IssuedAt: t0, Workloads: []api.Workload{w}, History: []api.HistoryEntry{e1, e2}, Head: api.ChainHead{Seq: 2, Hash: e2.Hash}}
	d, err := m.Digest()
	if err != nil {
		t.Fatal(err)
	}
	der, err := api.MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return &api.SignedManifest{Manifest: m, Algorithm: api.AlgEd25519, PublicKey: der, Signature: ed25519.Sign(priv, d)}, pub, w
}

func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestManifestGolden(t *testing.T) {
	sm, pub, w := goldenManifest(t)
	indented, err := json.MarshalIndent(sm, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	canon, err := api.CanonicalJSON(sm)
	if err != nil {
		t.Fatal(err)
	}
	w.DataKey = make([]byte, api.DataKeySize)
	wb, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		golden string
		got    []byte
	}{
		{"manifest.golden.json", append(indented, '\n')},
		{"manifest.canonical.golden", canon},
		{"workload.golden.json", append(wb, '\n')},
	} {
		if want := readGolden(t, tc.golden); !bytes.Equal(tc.got, want) {
			t.Errorf("%s: encoding changed:\ngot  %s\nwant %s", tc.golden, tc.got, want)
		}
	}
	// The golden manifest verifies, and decoding it gives back the same manifest.
	var dec api.SignedManifest
	if err := api.DecodeJSON(bytes.NewReader(readGolden(t, "manifest.golden.json")), &dec); err != nil {
		t.Fatalf("decode golden manifest: %v", err)
	}
	if err := api.VerifyManifest(&dec, pub); err != nil {
		t.Fatalf("golden manifest does not verify: %v", err)
	}
}

func TestVerifyManifestRefuses(t *testing.T) {
	otherPub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize)).Public()
	for _, tc := range []struct {
		name   string
		mutate func(sm *api.SignedManifest)
		want   string
	}{
		{"workload altered", func(sm *api.SignedManifest) { sm.Manifest.Workloads[0].SANs = []string{"evil.example"} }, "manifest signature does not verify"},
		{"history entry altered", func(sm *api.SignedManifest) { sm.Manifest.History[1].Actor = "someone" }, "manifest signature does not verify"},
		{"wrong version", func(sm *api.SignedManifest) { sm.Manifest.Version = 2 }, "manifest version 2"},
		{"wrong algorithm", func(sm *api.SignedManifest) { sm.Algorithm = api.AlgECDSASHA256 }, "manifest algorithm"},
		{"other key", func(sm *api.SignedManifest) { sm.PublicKey, _ = api.MarshalPublicKey(otherPub) }, "not the expected broker key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sm, pub, _ := goldenManifest(t)
			if err := api.VerifyManifest(sm, pub); err != nil {
				t.Fatalf("unaltered manifest: %v", err)
			}
			tc.mutate(sm)
			err := api.VerifyManifest(sm, pub)
			if !errors.Is(err, api.ErrVerify) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("VerifyManifest = %v, want ErrVerify containing %q", err, tc.want)
			}
		})
	}
}

func TestVerifyHistoryLink(t *testing.T) {
	sm, pub, _ := goldenManifest(t)
	h := sm.Manifest.History
	if err := api.VerifyHistoryLink(&h[0], api.ChainHead{Hash: api.ZeroHash}, pub); err != nil {
		t.Fatalf("entry 1: %v", err)
	}
	if err := api.VerifyHistoryLink(&h[1], api.ChainHead{Seq: 1, Hash: h[0].Hash}, pub); err != nil {
		t.Fatalf("entry 2: %v", err)
	}
	for _, tc := range []struct {
		name string
		e    api.HistoryEntry
		prev api.ChainHead
	}{
		{"skips an entry", h[1], api.ChainHead{Hash: api.ZeroHash}},
		{"remove with a workload", func() api.HistoryEntry { e := h[1]; e.Workload = h[0].Workload; return e }(), api.ChainHead{Seq: 1, Hash: h[0].Hash}},
		{"altered actor", func() api.HistoryEntry { e := h[0]; e.Actor = "x"; return e }(), api.ChainHead{Hash: api.ZeroHash}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := api.VerifyHistoryLink(&tc.e, tc.prev, pub); !errors.Is(err, api.ErrVerify) {
				t.Fatalf("VerifyHistoryLink = %v, want ErrVerify", err)
			}
		})
	}
}

// FuzzVerifyManifest feeds arbitrary JSON to the offline manifest check (what `sealctl verify`
// reads from a possibly hostile network): no panics, and only the genuine manifest's content
// verifies. (kbs/registry fuzzes the same check with manifests its store produced.)
func FuzzVerifyManifest(f *testing.F) {
	sm, pub, _ := goldenManifest(f)
	good, err := json.Marshal(sm)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"manifest":{"version":1,"history":[{"seq":1,"op":"remove"}]}}`))
	f.Add([]byte(`{}`))
	want, _ := api.CanonicalJSON(sm.Manifest)
	f.Fuzz(func(t *testing.T, data []byte) {
		var got api.SignedManifest
		if api.DecodeJSON(bytes.NewReader(data), &got) != nil {
			return
		}
		if api.VerifyManifest(&got, pub) != nil {
			return
		}
		if b, _ := api.CanonicalJSON(got.Manifest); !bytes.Equal(b, want) {
			t.Fatalf("a different manifest verified:\n%s", b)
		}
	})
}
