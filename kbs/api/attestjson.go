package api

import (
	"bytes"
	"encoding/base64"
)

// DecodeAttestRequest decodes an attest request body exactly as DecodeJSON would. The body is
// the largest the broker parses per attestation (report, certificate table, CSR: ~4 KiB of
// base64), and encoding/json scans it twice and reflects over it; the canonical encoding (as
// encoding/json and the Go client write it: known field names in any order, each once,
// base64 strings without escapes, insignificant whitespace) is parsed here directly in one
// pass. Anything else — escapes, null, other case, duplicates, unknown fields — goes to
// DecodeJSON, which gives the answer (FuzzDecodeAttestRequest checks that both agree).
func DecodeAttestRequest(body []byte, r *AttestRequest) error {
	var fast AttestRequest
	if p := (attestParser{b: body}); p.request(&fast) {
		*r = fast
		return nil
	}
	return DecodeJSON(bytes.NewReader(body), r)
}

// attestParser is a recursive-descent parser of the canonical subset; every method returns
// false as soon as the input leaves it (the caller then falls back to encoding/json).
type attestParser struct {
	b []byte
	i int
}

func (p *attestParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *attestParser) byte(c byte) bool {
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str returns the raw content of a string without escapes or control characters.
func (p *attestParser) str() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// b64 decodes a base64 string value as encoding/json does for []byte (StdEncoding).
func (p *attestParser) b64() ([]byte, bool) {
	s, ok := p.str()
	if !ok {
		return nil, false
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(out, s)
	if err != nil {
		return nil, false
	}
	return out[:n], true
}

// object parses {"k": v, ...}, calling member for each key (which parses the value); keys
// must be distinct.
func (p *attestParser) object(member func(key string) bool) bool {
	if !p.byte('{') {
		return false
	}
	if p.byte('}') {
		return true
	}
	var seen []string
	for {
		k, ok := p.str()
		if !ok || !p.byte(':') {
			return false
		}
		for _, s := range seen {
			if s == string(k) {
				return false
			}
		}
		seen = append(seen, string(k))
		if !member(string(k)) {
			return false
		}
		if p.byte('}') {
			return true
		}
		if !p.byte(',') {
			return false
		}
	}
}

func (p *attestParser) request(r *AttestRequest) bool {
	ok := p.object(func(k string) bool {
		var ok bool
		switch k {
		case "teePubKey":
			r.TEEPubKey, ok = p.b64()
		case "csr":
			r.CSR, ok = p.b64()
		case "evidence":
			ok = p.evidence(&r.Evidence)
		}
		return ok
	})
	p.ws()
	return ok && p.i == len(p.b)
}

func (p *attestParser) evidence(e *Evidence) bool {
	return p.object(func(k string) bool {
		var ok bool
		switch k {
		case "snp":
			e.SNP = new(SNPEvidence)
			ok = p.object(func(k string) bool {
				var ok bool
				switch k {
				case "report":
					e.SNP.Report, ok = p.b64()
				case "certTable":
					e.SNP.CertTable, ok = p.b64()
				case "vcek":
					e.SNP.VCEK, ok = p.b64()
				}
				return ok
			})
		case "tdx":
			e.TDX = new(TDXEvidence)
			ok = p.object(func(k string) bool {
				if k != "quote" {
					return false
				}
				var ok bool
				e.TDX.Quote, ok = p.b64()
				return ok
			})
		}
		return ok
	})
}
