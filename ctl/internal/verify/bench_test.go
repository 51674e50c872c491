package verify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/kbstest"
)

// BenchmarkRun verifies a real broker (HTTPS on 127.0.0.1) holding 200 workloads and 400
// history entries: TLS, manifest fetch, signature, the full hash chain (400 ECDSA P-256
// verifies), replay and the mesh root. No --expect (no image pulls).
func BenchmarkRun(b *testing.B) {
	kb := kbstest.Start(b)
	ctx := context.Background()
	for i := range 200 {
		d := make([]byte, 32)
		rand.Read(d)
		w := api.Workload{
			ID: fmt.Sprintf("default.deployment.app-%03d", i), TEEs: []string{"sim"},
			Measurements:   map[string][]string{"sim": {strings.Repeat("ab", 48)}},
			EnvelopeDigest: hex.EncodeToString(d), SANs: []string{fmt.Sprintf("app-%03d.default.svc", i)}, DataKey: d,
		}
		for range 2 {
			if _, err := kb.Registry.Put(ctx, w, "bench"); err != nil {
				b.Fatal(err)
			}
		}
	}
	o := Options{URL: kb.URL, CAPEM: kb.State.TLSCAPEM, SigningKey: kb.State.Signer.Public(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	b.ResetTimer()
	for b.Loop() {
		r, err := Run(ctx, o)
		if err != nil || !r.OK || r.HistoryEntries != 400 {
			b.Fatalf("run: %v ok=%v entries=%d", err, r != nil && r.OK, r.HistoryEntries)
		}
	}
}
