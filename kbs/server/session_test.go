package server

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/api"
)

// authFrom posts an auth request for the env's workload as if from remote.
func authFrom(t *testing.T, h http.Handler, workload, remote string) *httptest.ResponseRecorder {
	t.Helper()
	body, _ := json.Marshal(api.AuthRequest{TEE: api.TEESim, Workload: workload})
	req := httptest.NewRequest(http.MethodPost, api.PathAuth, bytes.NewReader(body))
	req.RemoteAddr = remote
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestSessionShareBySource: one source cannot fill the session table; once it holds its share
// it gets 429 with Retry-After while another source still gets a nonce; its sessions free up
// when they expire.
func TestSessionShareBySource(t *testing.T) {
	e := newEnv(t, envOptions{})
	clk := &clock{}
	const maxSessions = 1000
	srv, err := New(Config{Registry: e.reg, Audit: e.audit, MeshCA: e.state.MeshCA, TokenSigner: e.state.Signer,
		Verifiers: e.srv.cfg.Verifiers, MaxSessions: maxSessions, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	attacker := []string{"192.0.2.1:40000", "192.0.2.1:40001", "[2001:db8:1:2::1]:5", "[2001:db8:1:2::ffff]:6"}
	for _, tc := range []struct{ name, flood, other string }{
		{"ipv4", attacker[0], "198.51.100.7:443"},
		{"ipv6 same /64", attacker[2], "[2001:db8:1:3::1]:5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opened := 0
			var last *httptest.ResponseRecorder
			for range maxSessions + 1 {
				last = authFrom(t, h, e.workload.ID, tc.flood)
				if last.Code != http.StatusOK {
					break
				}
				opened++
			}
			if last.Code != http.StatusTooManyRequests {
				t.Fatalf("flooding source: after %d sessions got %d %s, want 429 before the table (%d) is full", opened, last.Code, last.Body.String(), maxSessions)
			}
			if opened >= maxSessions/2 {
				t.Fatalf("flooding source opened %d of %d sessions", opened, maxSessions)
			}
			ra, err := strconv.Atoi(last.Header().Get("Retry-After"))
			if err != nil || ra <= 0 {
				t.Errorf("429 Retry-After = %q, want a positive number of seconds", last.Header().Get("Retry-After"))
			}
			// Same source, other port (or other address in the same IPv6 /64): still limited.
			alias := attacker[1]
			if tc.name != "ipv4" {
				alias = attacker[3]
			}
			if rec := authFrom(t, h, e.workload.ID, alias); rec.Code != http.StatusTooManyRequests {
				t.Errorf("same source from %s: %d, want 429", alias, rec.Code)
			}
			rec := authFrom(t, h, e.workload.ID, tc.other)
			var ar api.AuthResponse
			if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &ar) != nil || len(ar.Nonce) != 32 {
				t.Fatalf("other source %s: %d %s, want a nonce", tc.other, rec.Code, rec.Body.String())
			}
		})
	}
	// Sessions expire: after the nonce TTL the flooding source gets nonces again.
	clk.advance(DefaultNonceTTL + time.Minute)
	if rec := authFrom(t, h, e.workload.ID, attacker[0]); rec.Code != http.StatusOK {
		t.Fatalf("after expiry: %d %s, want 200", rec.Code, rec.Body.String())
	}
}

func TestSourceOf(t *testing.T) {
	for _, tc := range []struct{ remote, want string }{
		{"192.0.2.1:443", "192.0.2.1"},
		{"[::ffff:192.0.2.1]:443", "192.0.2.1"},
		{"[2001:db8:1:2:aaaa::1]:443", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:443", "fe80::/64"},
		{"garbage", "garbage"},
	} {
		if got := sourceOf(tc.remote); got != tc.want {
			t.Errorf("sourceOf(%q) = %q, want %q", tc.remote, got, tc.want)
		}
	}
}

// BenchmarkSessionOpenTake: the session table's cost per auth+attest pair, with the per-source
// share, from 64 sources.
func BenchmarkSessionOpenTake(b *testing.B) {
	s := newSessions(DefaultNonceTTL, DefaultMaxSessions, DefaultMaxSessions/SourceShareDivisor)
	now := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			sess, err := s.open("sim", "w", sourceOf("192.0.2."+strconv.Itoa(i%64)+":1"), now)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.take(sess.id, now); err != nil {
				b.Fatal(err)
			}
		}
	})
}
