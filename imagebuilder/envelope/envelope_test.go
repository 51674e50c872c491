package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func testHeader() Header {
	return Header{
		Workload: "default.web",
		TEEs:     []string{"snp", "sim"},
		KBS:      KBS{URL: "https://kbs.example:8443", CASHA256: strings.Repeat("ab", 32)},
	}
}

func mustKey(t testing.TB) []byte {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustSeal(t testing.TB, plain, key []byte) []byte {
	t.Helper()
	env, err := Seal(plain, key, testHeader())
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func TestRoundTrip(t *testing.T) {
	key := mustKey(t)
	for _, plain := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("sealed spec "), 10000)} {
		env := mustSeal(t, plain, key)
		h, got, err := Open(env, key)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("plaintext differs: got %d bytes, want %d", len(got), len(plain))
		}
		if h.Workload != "default.web" || h.Version != Version || h.KeyID != KeyID(key) {
			t.Fatalf("header = %+v", h)
		}
		if bytes.Contains(env, []byte("sealed spec")) {
			t.Fatal("plaintext visible in envelope")
		}
	}
}

func TestFreshNonceEverySeal(t *testing.T) {
	key := mustKey(t)
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		h, err := ParseHeader(mustSeal(t, []byte("same"), key))
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(h.Nonce)] {
			t.Fatal("nonce reused")
		}
		seen[string(h.Nonce)] = true
	}
}

// Flipping any single byte (each bit pattern 0x01 and 0x20, which turns key case and
// white space into valid-looking JSON) anywhere in the envelope must fail to open.
func TestEveryByteFlipFails(t *testing.T) {
	key := mustKey(t)
	env := mustSeal(t, []byte(`{"containers":[{"name":"web"}]}`), key)
	for _, mask := range []byte{0x01, 0x20, 0x80} {
		for i := range env {
			mut := bytes.Clone(env)
			mut[i] ^= mask
			if _, _, err := Open(mut, key); err == nil {
				t.Fatalf("flip 0x%02x at byte %d (%q) still opens", mask, i, env[max(0, i-10):min(len(env), i+10)])
			}
		}
	}
}

func TestWrongKey(t *testing.T) {
	env := mustSeal(t, []byte("x"), mustKey(t))
	_, _, err := Open(env, mustKey(t))
	if !errors.Is(err, ErrAuthentication) {
		t.Fatalf("err = %v, want ErrAuthentication", err)
	}
}

// A header swapped from another envelope under the same key must not open: the header is
// bound into the key derivation.
func TestHeaderBoundToBody(t *testing.T) {
	key := mustKey(t)
	var a, b wire
	if err := json.Unmarshal(mustSeal(t, []byte("a"), key), &a); err != nil {
		t.Fatal(err)
	}
	h2 := testHeader()
	h2.Workload = "default.other"
	env2, err := Seal([]byte("b"), key, h2)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(env2, &b); err != nil {
		t.Fatal(err)
	}
	b.Header.Nonce = a.Header.Nonce // same nonce, different workload
	mixed, _ := json.Marshal(wire{Header: b.Header, Body: a.Body})
	if _, _, err := Open(mixed, key); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("err = %v, want ErrAuthentication", err)
	}
}

func TestRejects(t *testing.T) {
	key := mustKey(t)
	env := mustSeal(t, []byte("x"), key)
	var w wire
	if err := json.Unmarshal(env, &w); err != nil {
		t.Fatal(err)
	}
	reencode := func(f func(*wire)) []byte {
		c := w
		c.Header.TEEs = append([]string(nil), w.Header.TEEs...)
		f(&c)
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	tests := []struct {
		name    string
		env     []byte
		wantErr error
		wantMsg string
	}{
		{"unknown version", reencode(func(c *wire) { c.Header.Version = 2 }), ErrUnsupportedVersion, "version 2"},
		{"version zero", reencode(func(c *wire) { c.Header.Version = 0 }), ErrUnsupportedVersion, "version 0"},
		{"missing version", []byte(`{"header":{},"body":""}`), ErrMalformed, "header.version: missing"},
		{"truncated", env[:len(env)/2], ErrMalformed, "truncated"},
		{"truncated by one", env[:len(env)-1], ErrMalformed, "truncated"},
		{"empty", nil, ErrMalformed, "truncated"},
		{"not json", []byte("hello"), ErrMalformed, "invalid JSON"},
		{"trailing data", append(bytes.Clone(env), []byte(" {}")...), ErrMalformed, "after top-level value"},
		{"trailing newline", append(bytes.Clone(env), '\n'), ErrMalformed, "canonical"},
		{"unknown field", bytes.Replace(env, []byte(`"body"`), []byte(`"extra":1,"body"`), 1), ErrMalformed, "unknown field"},
		{"bad workload", reencode(func(c *wire) { c.Header.Workload = "UPPER" }), ErrMalformed, "header.workload"},
		{"no tees", reencode(func(c *wire) { c.Header.TEEs = nil }), ErrMalformed, "header.tees"},
		{"unknown tee", reencode(func(c *wire) { c.Header.TEEs = []string{"sgx"} }), ErrMalformed, "header.tees[0]"},
		{"http kbs", reencode(func(c *wire) { c.Header.KBS.URL = "http://kbs" }), ErrMalformed, "header.kbs.url"},
		{"bad ca", reencode(func(c *wire) { c.Header.KBS.CASHA256 = "zz" }), ErrMalformed, "header.kbs.caSHA256"},
		{"bad cipher", reencode(func(c *wire) { c.Header.Cipher = "aes" }), ErrMalformed, "header.cipher"},
		{"short nonce", reencode(func(c *wire) { c.Header.Nonce = c.Header.Nonce[:12] }), ErrMalformed, "header.nonce"},
		{"short body", reencode(func(c *wire) { c.Body = c.Body[:8] }), ErrMalformed, "body"},
		{"oversized", bytes.Repeat([]byte(" "), MaxSize+1), ErrMalformed, "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Open(tt.env, key)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %q, want it to mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestSealValidatesHeader(t *testing.T) {
	h := testHeader()
	h.KBS.URL = "ftp://x"
	if _, err := Seal([]byte("x"), mustKey(t), h); err == nil || !strings.Contains(err.Error(), "header.kbs.url") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Seal([]byte("x"), []byte("short"), testHeader()); err == nil || !strings.Contains(err.Error(), "data key") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	key := bytes.Repeat([]byte{7}, KeySize)
	env, err := Seal([]byte(`{"containers":[]}`), key, testHeader())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(env)
	f.Add(env[:40])
	f.Add([]byte(`{"header":{"version":1},"body":"AA=="}`))
	f.Add([]byte(`{"header":{"version":2}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, plain, err := Open(data, key)
		if err != nil {
			if h != nil || plain != nil {
				t.Fatal("error with results")
			}
			return
		}
		// Anything that opens must be canonical and round-trip through ParseHeader.
		h2, err := ParseHeader(data)
		if err != nil || h2.Workload != h.Workload {
			t.Fatalf("opened but header does not parse: %v", err)
		}
	})
}

func BenchmarkSealEnvelope(b *testing.B) {
	key := mustKey(b)
	plain := bytes.Repeat([]byte("x"), 2048)
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		if _, err := Seal(plain, key, testHeader()); err != nil {
			b.Fatal(err)
		}
	}
}
