package registry_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/sealpod/sealpod/kbs/registry"
)

// FuzzVerifyManifest feeds arbitrary JSON to the manifest verifier (what `sealctl verify`
// downloads from a possibly hostile network): no panics, and only the genuine manifest bytes
// (or re-encodings of the same content) verify.
func FuzzVerifyManifest(f *testing.F) {
	ctx := context.Background()
	signer := newSigner(f)
	reg := registry.New(openBolt(f), signer)
	for _, id := range []string{"a", "b"} {
		if _, err := reg.Put(ctx, validWorkload(id), "fuzz"); err != nil {
			f.Fatal(err)
		}
	}
	if _, err := reg.Remove(ctx, "a", "fuzz"); err != nil {
		f.Fatal(err)
	}
	m, err := reg.Manifest(ctx)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := json.Marshal(m)
	f.Add(good)
	f.Add([]byte(`{"manifest":{"version":1,"history":[{"seq":1,"op":"put"}]}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var sm registry.SignedManifest
		if json.Unmarshal(data, &sm) != nil {
			return
		}
		if err := registry.VerifyManifest(&sm, signer.Public()); err != nil {
			return
		}
		// Verified: its content must be the genuine manifest's.
		a, _ := json.Marshal(sm.Manifest)
		b, _ := json.Marshal(m.Manifest)
		if string(a) != string(b) {
			t.Fatalf("a different manifest verified:\n%s", a)
		}
	})
}

func FuzzValidate(f *testing.F) {
	good, _ := json.Marshal(validWorkload("app"))
	f.Add(good)
	f.Add([]byte(`{"id":"x","tees":["tdx"],"measurements":{"tdx":["::::"]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var w registry.Workload
		if json.Unmarshal(data, &w) != nil {
			return
		}
		_ = w.Validate()
	})
}
