package meshca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The leaf encoder below writes exactly the DER that x509.CreateCertificate writes for the
// template IssueForKey builds (TestLeafEncoderMatchesX509 compares the TBSCertificate bytes
// field for field), and signs it once. x509.CreateCertificate additionally re-verifies its
// own signature with the CA's public key ("to ensure the crypto.Signer behaved correctly"),
// which costs an ECDSA P-256 verification (~90 µs, half the cost of an issuance) on every
// certificate. The CA key here is an in-process *ecdsa.PrivateKey or ed25519.PrivateKey
// loaded from the state directory, not an external signer, so the broker skips that
// self-check; guests verify the chain anyway. Other key types use x509.CreateCertificate.

var (
	oidSignatureECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidSignatureECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidSignatureECDSAWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidSignatureEd25519         = asn1.ObjectIdentifier{1, 3, 101, 112}

	oidOrganization = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidCommonName   = asn1.ObjectIdentifier{2, 5, 4, 3}

	oidExtKeyUsage        = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtExtKeyUsage     = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidExtBasicConstraint = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtAuthorityKeyID  = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidExtSubjectAltName  = asn1.ObjectIdentifier{2, 5, 29, 17}

	oidServerAuth = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidClientAuth = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
)

// leafSigner is the fast path's view of the CA key: the signature algorithm identifier and
// the hash to apply (0 for Ed25519, which signs the message).
type leafSigner struct {
	oid  asn1.ObjectIdentifier
	hash crypto.Hash
}

// fastSigner returns the encoder's signature parameters for key, or false if the key type is
// left to x509.CreateCertificate.
func fastSigner(key crypto.Signer) (leafSigner, bool) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return leafSigner{oidSignatureECDSAWithSHA256, crypto.SHA256}, true
		case elliptic.P384():
			return leafSigner{oidSignatureECDSAWithSHA384, crypto.SHA384}, true
		case elliptic.P521():
			return leafSigner{oidSignatureECDSAWithSHA512, crypto.SHA512}, true
		}
	case ed25519.PrivateKey:
		return leafSigner{oidSignatureEd25519, 0}, true
	}
	return leafSigner{}, false
}

// isPrintable reports whether s can be a PrintableString (as encoding/asn1 decides for Go
// strings, including its '*' and '&' leniency).
func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' {
			continue
		}
		switch b {
		case ' ', '\'', '(', ')', '+', ',', '-', '.', '/', ':', '=', '?', '*', '&':
			continue
		}
		return false
	}
	return true
}

func isIA5(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func addString(b *cryptobyte.Builder, s string) {
	tag := cbasn1.UTF8String
	if isPrintable(s) {
		tag = cbasn1.PrintableString
	}
	b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
}

func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC()
	if y := t.Year(); y >= 1950 && y < 2050 {
		b.AddASN1(cbasn1.UTCTime, func(b *cryptobyte.Builder) { b.AddBytes([]byte(t.Format("060102150405Z0700"))) })
		return
	}
	b.AddASN1(cbasn1.GeneralizedTime, func(b *cryptobyte.Builder) { b.AddBytes([]byte(t.Format("20060102150405Z0700"))) })
}

func addExtension(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, critical bool, value func(*cryptobyte.Builder)) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if critical {
			b.AddASN1Boolean(true)
		}
		b.AddASN1(cbasn1.OCTET_STRING, value)
	})
}

// keyUsageBits encodes a KeyUsage as x509 does: bit i of the BIT STRING is usage 1<<i,
// trailing zero bits dropped.
func keyUsageBits(ku x509.KeyUsage) (data []byte, unused int) {
	var a [2]byte
	for i := 0; i < 9; i++ {
		if ku&(1<<i) != 0 {
			a[i/8] |= 0x80 >> (i % 8)
		}
	}
	n := 1
	if a[1] != 0 {
		n = 2
	}
	data = a[:n]
	last := data[n-1]
	for unused = 0; unused < 8 && last&(1<<unused) == 0; unused++ {
	}
	if unused == 8 {
		unused = 0
	}
	return data, unused
}

// encodeLeaf builds and signs the leaf certificate for tmpl (as IssueForKey fills it: serial,
// subject O + optional CN, validity, key usage, server+client auth, CA:false, SANs) with the
// subject public key spki (PKIX DER).
func (c *CA) encodeLeaf(ls leafSigner, tmpl *x509.Certificate, spki []byte) ([]byte, error) {
	// SAN strings are IA5String (ASCII), as x509.CreateCertificate requires.
	for _, d := range tmpl.DNSNames {
		if !isIA5(d) {
			return nil, fmt.Errorf("%w: SAN %q is not ASCII", ErrBadRequest, d)
		}
	}
	for _, u := range tmpl.URIs {
		if !isIA5(u.String()) {
			return nil, fmt.Errorf("%w: SAN %q is not ASCII", ErrBadRequest, u.String())
		}
	}
	algo := func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(ls.oid) })
	}
	var tb cryptobyte.Builder
	tb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1Int64(2) })
		b.AddASN1BigInt(tmpl.SerialNumber)
		algo(b)
		b.AddBytes(c.intermediate.RawSubject)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addTime(b, tmpl.NotBefore)
			addTime(b, tmpl.NotAfter)
		})
		// Subject as pkix.Name.ToRDNSequence writes it: O (all values in one RDN), then CN.
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			rdn := func(oid asn1.ObjectIdentifier, vs []string) {
				if len(vs) == 0 {
					return
				}
				// DER: the members of a SET OF sorted by their encodings (as encoding/asn1 does).
				members := make([][]byte, 0, len(vs))
				for _, v := range vs {
					var mb cryptobyte.Builder
					mb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(oid)
						addString(b, v)
					})
					m, err := mb.Bytes()
					if err != nil {
						b.SetError(err)
						return
					}
					members = append(members, m)
				}
				slices.SortFunc(members, bytes.Compare)
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
					for _, m := range members {
						b.AddBytes(m)
					}
				})
			}
			rdn(oidOrganization, tmpl.Subject.Organization)
			if tmpl.Subject.CommonName != "" {
				rdn(oidCommonName, []string{tmpl.Subject.CommonName})
			}
		})
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(3).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				data, unused := keyUsageBits(tmpl.KeyUsage)
				addExtension(b, oidExtKeyUsage, true, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) {
						b.AddUint8(uint8(unused))
						b.AddBytes(data)
					})
				})
				addExtension(b, oidExtExtKeyUsage, false, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(oidServerAuth)
						b.AddASN1ObjectIdentifier(oidClientAuth)
					})
				})
				addExtension(b, oidExtBasicConstraint, true, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {})
				})
				if skid := c.intermediate.SubjectKeyId; len(skid) > 0 {
					addExtension(b, oidExtAuthorityKeyID, false, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(skid) })
						})
					})
				}
				// The subject always has O, so the SAN extension is not critical (RFC 5280 4.2.1.6).
				addExtension(b, oidExtSubjectAltName, false, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						for _, d := range tmpl.DNSNames {
							b.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(d)) })
						}
						for _, ip := range tmpl.IPAddresses {
							if v4 := ip.To4(); v4 != nil {
								ip = v4
							}
							b.AddASN1(cbasn1.Tag(7).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(ip) })
						}
						for _, u := range tmpl.URIs {
							b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(u.String())) })
						}
					})
				})
			})
		})
	})
	tbs, err := tb.Bytes()
	if err != nil {
		return nil, fmt.Errorf("encode leaf: %w", err)
	}
	signed := tbs
	if ls.hash != 0 {
		h := ls.hash.New()
		h.Write(tbs)
		signed = h.Sum(nil)
	}
	sig, err := c.key.Sign(rand.Reader, signed, ls.hash)
	if err != nil {
		return nil, fmt.Errorf("sign leaf: %w", err)
	}
	var cb cryptobyte.Builder
	cb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		algo(b)
		b.AddASN1BitString(sig)
	})
	return cb.Bytes()
}
