package envelope

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/internal/tee"
)

func TestSum(t *testing.T) {
	key := mustKey(t)
	a, b := mustSeal(t, []byte("x"), key), mustSeal(t, []byte("x"), key)
	if Sum(a) == Sum(b) {
		t.Fatal("two seals share a digest")
	}
	if want := sha256.Sum256(a); Sum(a) != want || Sum(a) != Sum(bytes.Clone(a)) {
		t.Fatal("digest is not the SHA-256 of the envelope bytes")
	}
	if d := Sum(a); d.String() != hex.EncodeToString(d[:]) || strings.ToLower(d.String()) != d.String() {
		t.Fatalf("String() = %q, want lowercase hex", Sum(a))
	}
}

func TestParseDigest(t *testing.T) {
	good := Sum([]byte("sealpod envelope"))
	tests := []struct {
		name string
		in   string
		want Digest
		ok   bool
	}{
		{name: "String round trip", in: good.String(), want: good, ok: true},
		{name: "zero", in: strings.Repeat("0", 64), ok: true},
		{name: "empty", in: ""},
		{name: "short", in: good.String()[:62]},
		{name: "odd length", in: good.String()[:63]},
		{name: "long", in: good.String() + "00"},
		{name: "upper case", in: strings.ToUpper(good.String())},
		{name: "not hex", in: "g" + good.String()[1:]},
		{name: "space", in: " " + good.String()[1:]},
		{name: "sha384 length", in: strings.Repeat("ab", 48)},
		{name: "multibyte", in: "é" + good.String()[2:]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDigest(tc.in)
			if !tc.ok {
				if !errors.Is(err, ErrDigest) || got != (Digest{}) {
					t.Fatalf("ParseDigest(%q) = %s, %v; want ErrDigest", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseDigest(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestDigestHostData(t *testing.T) {
	d := Sum([]byte("sealpod envelope"))
	tests := []struct {
		tee  tee.TEE
		want []byte
	}{
		{tee.SNP, d[:]},
		{tee.Sim, d[:]},
		{tee.TDX, append(bytes.Clone(d[:]), make([]byte, 16)...)},
		{tee.PEF, nil},
		{tee.TEE("sev"), nil},
	}
	for _, tc := range tests {
		t.Run(string(tc.tee), func(t *testing.T) {
			got := d.HostData(tc.tee)
			if !bytes.Equal(got, tc.want) || len(got) != tc.tee.HostDataSize() {
				t.Fatalf("HostData(%s) = %x (%d bytes), want %x", tc.tee, got, len(got), tc.want)
			}
			if got != nil {
				got[0] ^= 1 // a copy: callers may keep and change it
				if d.HostData(tc.tee)[0] == got[0] {
					t.Fatal("HostData returned shared memory")
				}
			}
		})
	}
}

func TestDigestJSON(t *testing.T) {
	d := Sum([]byte("sealpod envelope"))
	b, err := json.Marshal(struct{ D Digest }{d})
	if err != nil || string(b) != `{"D":"`+d.String()+`"}` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	var back struct{ D Digest }
	if err := json.Unmarshal(b, &back); err != nil || back.D != d {
		t.Fatalf("Unmarshal = %s, %v", back.D, err)
	}
	if err := json.Unmarshal([]byte(`{"D":"`+strings.ToUpper(d.String())+`"}`), &back); !errors.Is(err, ErrDigest) {
		t.Fatalf("Unmarshal of upper-case hex: %v, want ErrDigest", err)
	}
}

// FuzzParseDigest: ParseDigest accepts exactly the strings String produces.
func FuzzParseDigest(f *testing.F) {
	for _, s := range []string{"", Sum(nil).String(), strings.ToUpper(Sum(nil).String()), strings.Repeat("0", 63), "zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			if !errors.Is(err, ErrDigest) {
				t.Fatalf("error %v does not wrap ErrDigest", err)
			}
			return
		}
		if d.String() != s {
			t.Fatalf("ParseDigest(%q) accepted a non-canonical form (String %q)", s, d.String())
		}
	})
}
