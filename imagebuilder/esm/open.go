package esm

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Reader-side bounds, beyond MaxBlobSize.
const (
	maxLockboxes       = 64
	maxReadCommentLen  = 1024
	minGCMNonce        = 12
	maxGCMNonce        = 16
	minWrappedKeyBytes = MinRSABits / 8
	maxWrappedKeyBytes = MaxRSABits / 8
)

// Lockbox is the clear part of one lockbox.
type Lockbox struct {
	Name        string // "origin-lockbox" or "lockbox-N"
	Comment     string // untrusted: print with %q
	Fingerprint [sha256.Size]byte
	wrapped     []byte
}

// sealedFile is one svm-tools encrypted-file node (digests or attachment).
type sealedFile struct {
	path, name, comment string
	iv, mac, ciphertext []byte
}

// Blob is a structurally valid ESM blob, still sealed.
type Blob struct {
	Lockboxes []Lockbox
	digests   sealedFile
	files     []sealedFile
}

// Contents is what a key opens.
type Contents struct {
	Lockbox     string // the lockbox the key opened
	Digests     Digests
	Attachments []Attachment
}

// Attachment returns the data of the named attachment.
func (c *Contents) Attachment(name string) ([]byte, bool) {
	for _, a := range c.Attachments {
		if a.Name == name {
			return a.Data, true
		}
	}
	return nil, false
}

// AttachmentNames lists the attachments in blob order.
func (b *Blob) AttachmentNames() []string {
	names := make([]string, len(b.files))
	for i, f := range b.files {
		names[i] = f.name
	}
	return names
}

// Open parses blob and opens it with priv, the private key of one authorised host.
func Open(blob []byte, priv *rsa.PrivateKey) (*Contents, error) {
	b, err := Parse(blob)
	if err != nil {
		return nil, err
	}
	return b.Open(priv)
}

// Parse checks the structure of an ESM blob as svm-tools' validator does (and stricter:
// every length and algorithm), without any key. It accepts attachments both in the nested
// files-fdt (what `svm-tool esm attach` writes) and directly under /file (the older layout
// `esm extract` reads).
func Parse(blob []byte) (*Blob, error) {
	if len(blob) > MaxBlobSize {
		return nil, fieldErr("/", ErrTooLarge, "%d bytes, at most %d", len(blob), MaxBlobSize)
	}
	root, err := decodeFDT(bytes.Clone(blob)) // the Blob keeps slices of its own copy
	if err != nil {
		return nil, fieldErr("/", ErrMalformed, "%v", err)
	}
	if err := onlyProps("/", root, "compatible"); err != nil {
		return nil, err
	}
	if err := wantString("/compatible", root, "compatible", "ibm,esm"); err != nil {
		return nil, err
	}
	if err := onlyChildren("/", root, "lockboxes", "digest", "file"); err != nil {
		return nil, err
	}
	b := &Blob{}
	if b.Lockboxes, err = parseLockboxes(root.child("lockboxes")); err != nil {
		return nil, err
	}
	dg := root.child("digest")
	if err := onlyProps("/digest", dg); err != nil {
		return nil, err
	}
	if err := onlyChildren("/digest", dg, "digests-fdt"); err != nil {
		return nil, err
	}
	if b.digests, err = parseSealedFile("/digest/digests-fdt", dg.child("digests-fdt")); err != nil {
		return nil, err
	}
	if len(b.digests.ciphertext) > MaxDigestsFDTSize {
		return nil, fieldErr("/digest/digests-fdt/ciphertext", ErrTooLarge, "%d bytes, at most %d", len(b.digests.ciphertext), MaxDigestsFDTSize)
	}
	if b.files, err = parseFiles(root.child("file")); err != nil {
		return nil, err
	}
	return b, nil
}

func parseLockboxes(n *node) ([]Lockbox, error) {
	if err := onlyProps("/lockboxes", n); err != nil {
		return nil, err
	}
	if len(n.children) > maxLockboxes {
		return nil, fieldErr("/lockboxes", ErrTooLarge, "%d lockboxes, at most %d", len(n.children), maxLockboxes)
	}
	if n.child("origin-lockbox") == nil {
		return nil, fieldErr("/lockboxes/origin-lockbox", ErrMalformed, "missing")
	}
	var out []Lockbox
	for _, c := range n.children {
		p := "/lockboxes/" + c.name
		if c.name != "origin-lockbox" && !validLockboxName(c.name) {
			return nil, fieldErr(p, ErrMalformed, "lockbox name must be origin-lockbox or lockbox-N (N ≥ 1)")
		}
		if err := onlyProps(p, c, "untrusted-comment", "encrypted-symkey"); err != nil {
			return nil, err
		}
		if err := onlyChildren(p, c, "pubkey-fingerprint"); err != nil {
			return nil, err
		}
		comment, err := readComment(p+"/untrusted-comment", c)
		if err != nil {
			return nil, err
		}
		wrapped, _ := c.prop("encrypted-symkey")
		if len(wrapped) < minWrappedKeyBytes || len(wrapped) > maxWrappedKeyBytes {
			return nil, fieldErr(p+"/encrypted-symkey", ErrMalformed, "%d bytes, want an RSA-%d…%d ciphertext", len(wrapped), MinRSABits, MaxRSABits)
		}
		fp := c.child("pubkey-fingerprint")
		fpp := p + "/pubkey-fingerprint"
		if err := onlyProps(fpp, fp, "algorithm", "hash"); err != nil {
			return nil, err
		}
		if err := onlyChildren(fpp, fp); err != nil {
			return nil, err
		}
		if err := wantString(fpp+"/algorithm", fp, "algorithm", "SHA256"); err != nil {
			return nil, err
		}
		hash, _ := fp.prop("hash")
		if len(hash) != sha256.Size {
			return nil, fieldErr(fpp+"/hash", ErrMalformed, "%d bytes, want a %d-byte SHA-256", len(hash), sha256.Size)
		}
		lb := Lockbox{Name: c.name, Comment: comment, wrapped: wrapped}
		copy(lb.Fingerprint[:], hash)
		out = append(out, lb)
	}
	return out, nil
}

func validLockboxName(name string) bool {
	num, ok := strings.CutPrefix(name, "lockbox-")
	if !ok || num == "" || len(num) > 9 || strings.Trim(num, "0123456789") != "" {
		return false
	}
	v, err := strconv.Atoi(num)
	return err == nil && v >= 1
}

func parseFiles(n *node) ([]sealedFile, error) {
	for _, p := range n.props { // files-fdt is optional: the older layout has none
		if p.name != "files-fdt" {
			return nil, fieldErr("/file/"+p.name, ErrMalformed, "unexpected property")
		}
	}
	var out []sealedFile
	add := func(parent string, files []*node) error {
		for _, c := range files {
			p := parent + "/" + c.name
			if !nodeNameRE.MatchString(c.name) {
				return fieldErr(p, ErrMalformed, "attachment name must match %s", nodeNameRE)
			}
			if slices.ContainsFunc(out, func(f sealedFile) bool { return f.name == c.name }) {
				return fieldErr(p, ErrMalformed, "attachment attached twice")
			}
			if len(out) >= MaxAttachments {
				return fieldErr(p, ErrTooLarge, "more than %d attachments", MaxAttachments)
			}
			f, err := parseSealedFile(p, c)
			if err != nil {
				return err
			}
			out = append(out, f)
		}
		return nil
	}
	if nested, ok := n.prop("files-fdt"); ok {
		const at = "/file/files-fdt:"
		if len(nested) > MaxFilesFDTSize {
			return nil, fieldErr("/file/files-fdt", ErrTooLarge, "%d bytes, at most %d", len(nested), MaxFilesFDTSize)
		}
		froot, err := decodeFDT(nested)
		if err != nil {
			return nil, fieldErr("/file/files-fdt", ErrMalformed, "%v", err)
		}
		if err := onlyProps(at+"/", froot, "compatible"); err != nil {
			return nil, err
		}
		if err := wantString(at+"/compatible", froot, "compatible", "ibm,esm-file"); err != nil {
			return nil, err
		}
		if err := onlyChildren(at+"/", froot, "files"); err != nil {
			return nil, err
		}
		files := froot.child("files")
		if err := onlyProps(at+"/files", files); err != nil {
			return nil, err
		}
		if err := add(at+"/files", files.children); err != nil {
			return nil, err
		}
	}
	// The older layout: attachments directly under /file.
	if err := add("/file", n.children); err != nil {
		return nil, err
	}
	return out, nil
}

func parseSealedFile(p string, n *node) (sealedFile, error) {
	f := sealedFile{path: p, name: n.name}
	if err := onlyProps(p, n, "algorithm", "ciphertext", "iv", "mac", "untrusted-comment"); err != nil {
		return f, err
	}
	if err := onlyChildren(p, n); err != nil {
		return f, err
	}
	if err := wantString(p+"/algorithm", n, "algorithm", "AES256-GCM"); err != nil {
		return f, err
	}
	var err error
	if f.comment, err = readComment(p+"/untrusted-comment", n); err != nil {
		return f, err
	}
	f.ciphertext, _ = n.prop("ciphertext")
	f.iv, _ = n.prop("iv")
	f.mac, _ = n.prop("mac")
	if len(f.iv) < minGCMNonce || len(f.iv) > maxGCMNonce {
		return f, fieldErr(p+"/iv", ErrMalformed, "%d bytes, want %d to %d", len(f.iv), minGCMNonce, maxGCMNonce)
	}
	if len(f.mac) != gcmTagSize {
		return f, fieldErr(p+"/mac", ErrMalformed, "%d bytes, want a %d-byte GCM tag", len(f.mac), gcmTagSize)
	}
	return f, nil
}

// Open unwraps the symmetric key from the lockbox addressed to priv and decrypts the
// digests and every attachment.
func (b *Blob) Open(priv *rsa.PrivateKey) (*Contents, error) {
	if priv == nil {
		return nil, fmt.Errorf("esm: open: no private key")
	}
	fp, err := KeyFingerprint(&priv.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("esm: open: key: %w", err)
	}
	i := slices.IndexFunc(b.Lockboxes, func(l Lockbox) bool { return l.Fingerprint == fp })
	if i < 0 {
		return nil, fieldErr("/lockboxes", ErrNoLockbox, "none of the %d lockboxes names key %s", len(b.Lockboxes), hex.EncodeToString(fp[:8]))
	}
	lb := b.Lockboxes[i]
	p := "/lockboxes/" + lb.Name + "/encrypted-symkey"
	if len(lb.wrapped) != priv.Size() {
		return nil, fieldErr(p, ErrWrongKey, "%d-byte ciphertext for a %d-byte key", len(lb.wrapped), priv.Size())
	}
	symkey, err := rsa.DecryptOAEP(sha256.New(), nil, priv, lb.wrapped, nil)
	if err != nil {
		return nil, fieldErr(p, ErrWrongKey, "RSA-OAEP-SHA256 unwrap failed")
	}
	if len(symkey) != symKeySize {
		return nil, fieldErr(p, ErrMalformed, "symmetric key of %d bytes, want %d", len(symkey), symKeySize)
	}
	c := &Contents{Lockbox: lb.Name}
	plain, err := decryptFile(symkey, b.digests)
	if err != nil {
		return nil, err
	}
	if c.Digests, err = parseDigests(plain); err != nil {
		return nil, err
	}
	for _, f := range b.files {
		data, err := decryptFile(symkey, f)
		if err != nil {
			return nil, err
		}
		c.Attachments = append(c.Attachments, Attachment{Name: f.name, Data: data, Comment: f.comment})
	}
	return c, nil
}

func decryptFile(symkey []byte, f sealedFile) ([]byte, error) {
	gcm, err := newGCM(symkey, len(f.iv))
	if err != nil {
		return nil, fieldErr(f.path+"/iv", ErrMalformed, "%v", err)
	}
	sealed := make([]byte, 0, len(f.ciphertext)+len(f.mac))
	sealed = append(append(sealed, f.ciphertext...), f.mac...)
	plain, err := gcm.Open(nil, f.iv, sealed, nil)
	if err != nil {
		return nil, fieldErr(f.path, ErrDecrypt, "AES-256-GCM: altered ciphertext, iv or mac, or a lockbox for another blob")
	}
	return plain, nil
}

// Structure helpers.

func onlyProps(path string, n *node, allowed ...string) error {
	for _, p := range n.props {
		if !slices.Contains(allowed, p.name) {
			return fieldErr(joinPath(path, p.name), ErrMalformed, "unexpected property")
		}
	}
	for _, a := range allowed {
		if _, ok := n.prop(a); !ok {
			return fieldErr(joinPath(path, a), ErrMalformed, "missing property")
		}
	}
	return nil
}

func onlyChildren(path string, n *node, required ...string) error {
	for _, c := range n.children {
		if !slices.Contains(required, c.name) {
			return fieldErr(joinPath(path, c.name), ErrMalformed, "unexpected node")
		}
	}
	for _, r := range required {
		if n.child(r) == nil {
			return fieldErr(joinPath(path, r), ErrMalformed, "missing node")
		}
	}
	return nil
}

func joinPath(parent, name string) string {
	if strings.HasSuffix(parent, "/") {
		return parent + name
	}
	return parent + "/" + name
}

// propString reads a devicetree string: one NUL at the end, none inside.
func propString(path string, n *node, name string) (string, error) {
	v, _ := n.prop(name)
	if len(v) == 0 || v[len(v)-1] != 0 || bytes.IndexByte(v[:len(v)-1], 0) >= 0 {
		return "", fieldErr(path, ErrMalformed, "not a NUL-terminated string")
	}
	return string(v[:len(v)-1]), nil
}

func wantString(path string, n *node, name, want string) error {
	s, err := propString(path, n, name)
	if err != nil {
		return err
	}
	if s != want {
		return fieldErr(path, ErrMalformed, "%q, want %q", s, want)
	}
	return nil
}

// readComment: untrusted text, bounded, UTF-8 without control characters.
func readComment(path string, n *node) (string, error) {
	s, err := propString(path, n, "untrusted-comment")
	if err != nil {
		return "", err
	}
	if len(s) > maxReadCommentLen || !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", fieldErr(path, ErrMalformed, "longer than %d bytes or not printable UTF-8", maxReadCommentLen)
	}
	return s, nil
}
