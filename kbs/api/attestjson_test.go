package api

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// sampleAttestBody is an attest request as the Go client writes it, with evidence-sized fields.
func sampleAttestBody(tb testing.TB) []byte {
	tb.Helper()
	b, err := json.Marshal(AttestRequest{
		TEEPubKey: bytes.Repeat([]byte{1}, 32),
		Evidence:  Evidence{SNP: &SNPEvidence{Report: bytes.Repeat([]byte{2}, 1184), CertTable: bytes.Repeat([]byte{3}, 1400)}},
		CSR:       bytes.Repeat([]byte{4}, 300),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// decodeBoth decodes body with DecodeAttestRequest and with DecodeJSON and fails the test
// when they disagree (acceptance or value).
func decodeBoth(t *testing.T, body []byte) error {
	t.Helper()
	var got, want AttestRequest
	gotErr := DecodeAttestRequest(body, &got)
	wantErr := DecodeJSON(bytes.NewReader(body), &want)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("DecodeAttestRequest(%q): %v; DecodeJSON: %v", body, gotErr, wantErr)
	}
	if gotErr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeAttestRequest(%q) = %+v; DecodeJSON = %+v", body, got, want)
	}
	return gotErr
}

func TestDecodeAttestRequest(t *testing.T) {
	key := `"` + strings.Repeat("A", 43) + `="`
	tests := []struct {
		name string
		body string
		fast bool // the canonical subset: parsed without encoding/json
		ok   bool
	}{
		{"client encoding", string(sampleAttestBody(t)), true, true},
		{"fields reordered, whitespace", ` { "csr" : "MIIB" ,"evidence":{"tdx":{"quote":"AAAA"}},` + "\n\t" + `"teePubKey":` + key + "}\n", true, true},
		{"empty values", `{"teePubKey":"","evidence":{},"csr":""}`, true, true},
		{"snp with vcek", `{"teePubKey":` + key + `,"evidence":{"snp":{"report":"AAAA","vcek":"AA=="}}}`, true, true},
		{"escaped slash", `{"teePubKey":"AA\/A","evidence":{}}`, false, true},
		{"null csr", `{"teePubKey":` + key + `,"evidence":{},"csr":null}`, false, true},
		{"other case", `{"TEEPUBKEY":` + key + `,"evidence":{}}`, false, true},
		{"duplicate key", `{"csr":"AAAA","csr":"BBBB","evidence":{}}`, false, true},
		{"unknown field", `{"teePubKey":` + key + `,"x":1}`, false, false},
		{"unknown evidence field", `{"evidence":{"sgx":{}}}`, false, false},
		{"unknown snp field", `{"evidence":{"snp":{"x":"AA=="}}}`, false, false},
		{"bad base64", `{"csr":"A"}`, false, false},
		{"trailing data", `{"csr":"AAAA"}{}`, false, false},
		{"trailing comma", `{"csr":"AAAA",}`, false, false},
		{"unterminated", `{"csr":"AAAA"`, false, false},
		{"not an object", `[]`, false, false},
		{"empty", ``, false, false},
		{"non-ASCII in a string", `{"csr":"AAAA` + "\u00e9" + `"}`, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := decodeBoth(t, []byte(tc.body))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			var r AttestRequest
			if p := (attestParser{b: []byte(tc.body)}); p.request(&r) != tc.fast {
				t.Fatalf("fast path took it: %v, want %v", !tc.fast, tc.fast)
			}
		})
	}
}

func FuzzDecodeAttestRequest(f *testing.F) {
	f.Add(sampleAttestBody(f))
	for _, s := range []string{
		`{"teePubKey":"AAAA","evidence":{"snp":{"report":"AAAA","certTable":"AA==","vcek":"AA=="}},"csr":"MIIB"}`,
		`{"evidence":{"tdx":{"quote":"AAAA"}}}`, `{"csr":null}`, `{"Csr":"AAAA"}`, ` {} `, `{"csr":"AA\u003d\u003d"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { decodeBoth(t, body) })
}

func BenchmarkDecodeAttestRequest(b *testing.B) {
	body := sampleAttestBody(b)
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			var r AttestRequest
			if err := DecodeAttestRequest(body, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			var r AttestRequest
			if err := DecodeJSON(bytes.NewReader(body), &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
