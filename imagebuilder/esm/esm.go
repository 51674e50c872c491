// Package esm writes and reads ESM blobs ("Enter Secure Mode"), the sealed secrets of an IBM
// PEF secure VM, in the format of open-power/svm-tools (docs/README.ESM and svm_tool/esm there).
//
// An ESM blob is a flattened devicetree:
//
//	/ { compatible = "ibm,esm";
//	    lockboxes { origin-lockbox {…}; lockbox-1 {…}; … lockbox-N {…}; };
//	    digest { digests-fdt { algorithm = "AES256-GCM"; untrusted-comment; iv; mac; ciphertext; }; };
//	    file { files-fdt = <nested DTB: / { compatible = "ibm,esm-file"; files { NAME {…}; }; }>; };
//	};
//
// A random 256-bit AES key (the "symkey") is wrapped with RSA-OAEP (SHA-256, MGF1-SHA-256,
// empty label) to each authorised public key; each lockbox names its key by the SHA-256 of the
// key's PEM SubjectPublicKeyInfo text. The digests (a nested DTB with SHA-512 of RTAS, kernel,
// initrd and boot arguments) and each attached file are AES-256-GCM ciphertexts under the symkey.
// The ultravisor opens lockbox-1 with the host's TPM key, checks the digests of what it boots,
// and serves the attachments to the guest through the UV_ESMB_GET_FILE ultracall.
//
// Sealpod writes the authorised hosts' keys as lockbox-1…N (the ultravisor reads lockbox-1)
// and the owner's key, or a throw-away key, as origin-lockbox (svm-tools requires one).
// See docs/pef.md "ESM blob format".
package esm

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"regexp"

	"github.com/sealpod/sealpod/internal/tee"
)

// Attachment names Sealpod puts in its blobs: internal/tee's, which the guest reads.
const (
	AttachDataKey          = tee.PEFAttachDataKey
	AttachBrokerCredential = tee.PEFAttachBrokerCredential
)

// Limits. The ultravisor copies files-fdt into one 64 KiB page and decrypts the digests into a
// 4 KiB buffer, each ciphertext length is a 16-bit value, and UV_ESMB_GET_FILE names a file in
// at most 64 bytes; the writer keeps within those, the reader within MaxBlobSize.
const (
	MaxBlobSize       = 1 << 20
	MaxFilesFDTSize   = 64 << 10
	MaxDigestsFDTSize = 4 << 10
	MaxAttachments    = 32
	MaxCommentLen     = 256
	MinRSABits        = 2048
	MaxRSABits        = 4096
	symKeySize        = 32
	gcmTagSize        = 16
	gcmNonceSize      = 16 // what svm-tools (PyCryptodome's default) writes; the reader takes 12–16
)

// Errors callers branch on; every error returned wraps one of these and names the field.
var (
	// ErrMalformed: the blob is not a well-formed ESM blob (bad devicetree, missing or
	// unexpected node or property, wrong length or algorithm).
	ErrMalformed = errors.New("malformed ESM blob")
	// ErrTooLarge: the blob, or a part of it, exceeds a size limit.
	ErrTooLarge = errors.New("ESM blob too large")
	// ErrNoLockbox: no lockbox is addressed to the given key.
	ErrNoLockbox = errors.New("no lockbox for this key")
	// ErrWrongKey: the lockbox that names the key does not open with it (wrong key or
	// altered lockbox).
	ErrWrongKey = errors.New("lockbox does not open with this key")
	// ErrDecrypt: an AES-GCM ciphertext (digests or attachment) fails authentication:
	// altered ciphertext, iv or tag.
	ErrDecrypt = errors.New("ESM ciphertext fails authentication")
	// ErrDigest: a measured component differs from the digest sealed in the blob.
	ErrDigest = errors.New("digest mismatch")
	// ErrSpec: the writer was handed an invalid Spec.
	ErrSpec = errors.New("invalid ESM spec")
)

// FieldError says which part of the blob is at fault. Path is a devicetree path such as
// "/lockboxes/lockbox-1/encrypted-symkey" (nested trees: "/file/files-fdt:/files/NAME/mac").
type FieldError struct {
	Path   string
	Kind   error // one of the Err* values
	Detail string
}

func (e *FieldError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("esm %s: %v", e.Path, e.Kind)
	}
	return fmt.Sprintf("esm %s: %v: %s", e.Path, e.Kind, e.Detail)
}

func (e *FieldError) Unwrap() error { return e.Kind }

func fieldErr(path string, kind error, format string, args ...any) error {
	return &FieldError{Path: path, Kind: kind, Detail: fmt.Sprintf(format, args...)}
}

// HostKey is a key authorised to open the blob: on real hardware, a host TPM's RSA key.
type HostKey struct {
	Public  *rsa.PublicKey
	Comment string // stored in clear as untrusted-comment: no secrets
}

// Attachment is a file sealed in the blob.
type Attachment struct {
	Name    string // devicetree node name: [A-Za-z][0-9A-Za-z,._+-]{0,30}
	Data    []byte
	Comment string // stored in clear: no secrets
}

// Spec is what Write seals.
type Spec struct {
	// Hosts become lockbox-1…N in order. On current ultravisor firmware only lockbox-1 is
	// tried, so a blob boots on real hardware only on Hosts[0] (docs/pef.md).
	Hosts []HostKey
	// Origin is the owner's key for origin-lockbox. When nil, a fresh RSA-2048 key is used
	// and thrown away: nobody can open origin-lockbox.
	Origin        *HostKey
	Digests       Digests
	DigestComment string
	Attachments   []Attachment
}

var nodeNameRE = regexp.MustCompile(`^[A-Za-z][0-9A-Za-z,._+-]{0,30}$`)

// KeyFingerprint is the lockbox's pubkey-fingerprint hash: SHA-256 of the PEM
// "PUBLIC KEY" (PKIX) text with 64-column lines and a final newline — what svm-tools
// hashes when it opens a lockbox with a private key.
func KeyFingerprint(pub *rsa.PublicKey) ([32]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

func checkKey(path string, pub *rsa.PublicKey) error {
	if pub == nil || pub.N == nil {
		return fieldErr(path, ErrSpec, "missing RSA public key")
	}
	if b := pub.N.BitLen(); b < MinRSABits || b > MaxRSABits {
		return fieldErr(path, ErrSpec, "RSA key of %d bits, need %d to %d", b, MinRSABits, MaxRSABits)
	}
	return nil
}

func checkComment(path, c string) error {
	if len(c) > MaxCommentLen {
		return fieldErr(path, ErrSpec, "untrusted-comment longer than %d bytes", MaxCommentLen)
	}
	for i := 0; i < len(c); i++ {
		if c[i] < 0x20 || c[i] > 0x7e {
			return fieldErr(path, ErrSpec, "untrusted-comment must be printable ASCII without newlines")
		}
	}
	return nil
}

// Write seals spec into a new ESM blob.
func Write(spec Spec) ([]byte, error) {
	rnd := rand.Reader
	if len(spec.Hosts) == 0 {
		return nil, fieldErr("/lockboxes", ErrSpec, "no host key: at least one host must be authorised")
	}
	if len(spec.Hosts) >= maxLockboxes {
		return nil, fieldErr("/lockboxes", ErrSpec, "%d host keys, at most %d", len(spec.Hosts), maxLockboxes-1)
	}
	if len(spec.Attachments) > MaxAttachments {
		return nil, fieldErr("/file", ErrSpec, "%d attachments, at most %d", len(spec.Attachments), MaxAttachments)
	}
	if err := spec.Digests.check(); err != nil {
		return nil, err
	}
	if err := checkComment("/digest/digests-fdt", spec.DigestComment); err != nil {
		return nil, err
	}
	origin := spec.Origin
	if origin == nil {
		throwAway, err := rsa.GenerateKey(rnd, 2048)
		if err != nil {
			return nil, fmt.Errorf("esm: origin key: %w", err)
		}
		origin = &HostKey{Public: &throwAway.PublicKey, Comment: "sealpod: no origin key"}
	}
	symkey := make([]byte, symKeySize)
	if _, err := io.ReadFull(rnd, symkey); err != nil {
		return nil, fmt.Errorf("esm: symmetric key: %w", err)
	}

	root := &node{}
	root.addString("compatible", "ibm,esm")
	lockboxes := root.addChild("lockboxes")
	seen := map[[32]byte]string{}
	addLockbox := func(name string, k HostKey) error {
		path := "/lockboxes/" + name
		if err := checkKey(path, k.Public); err != nil {
			return err
		}
		if err := checkComment(path+"/untrusted-comment", k.Comment); err != nil {
			return err
		}
		fp, err := KeyFingerprint(k.Public)
		if err != nil {
			return fieldErr(path, ErrSpec, "public key: %v", err)
		}
		if other, dup := seen[fp]; dup {
			return fieldErr(path, ErrSpec, "same key as %s", other)
		}
		seen[fp] = name
		wrapped, err := rsa.EncryptOAEP(sha256.New(), rnd, k.Public, symkey, nil)
		if err != nil {
			return fieldErr(path, ErrSpec, "wrap symmetric key: %v", err)
		}
		lb := lockboxes.addChild(name)
		lb.addString("untrusted-comment", k.Comment)
		lb.addProp("encrypted-symkey", wrapped)
		fpn := lb.addChild("pubkey-fingerprint")
		fpn.addString("algorithm", "SHA256")
		fpn.addProp("hash", fp[:])
		return nil
	}
	if err := addLockbox("origin-lockbox", *origin); err != nil {
		return nil, err
	}
	for i, h := range spec.Hosts {
		if err := addLockbox(fmt.Sprintf("lockbox-%d", i+1), h); err != nil {
			return nil, err
		}
	}

	gcm, err := newGCM(symkey, gcmNonceSize)
	if err != nil {
		return nil, err
	}
	digestsFDT := encodeFDT(spec.Digests.tree())
	if len(digestsFDT) > MaxDigestsFDTSize {
		return nil, fieldErr("/digest/digests-fdt", ErrTooLarge, "%d bytes, the ultravisor takes %d", len(digestsFDT), MaxDigestsFDTSize)
	}
	dn := root.addChild("digest").addChild("digests-fdt")
	if err := sealInto(dn, gcm, rnd, digestsFDT, spec.DigestComment); err != nil {
		return nil, err
	}

	filesRoot := &node{}
	filesRoot.addString("compatible", "ibm,esm-file")
	files := filesRoot.addChild("files")
	for i, a := range spec.Attachments {
		path := "/file/files-fdt:/files/" + a.Name
		if !nodeNameRE.MatchString(a.Name) {
			return nil, fieldErr(fmt.Sprintf("/file/files-fdt:/files[%d]", i), ErrSpec, "attachment name %q must match %s", a.Name, nodeNameRE)
		}
		if files.child(a.Name) != nil {
			return nil, fieldErr(path, ErrSpec, "duplicate attachment name")
		}
		if err := checkComment(path+"/untrusted-comment", a.Comment); err != nil {
			return nil, err
		}
		if len(a.Data) >= MaxFilesFDTSize {
			return nil, fieldErr(path, ErrTooLarge, "%d bytes, the ultravisor takes less than %d", len(a.Data), MaxFilesFDTSize)
		}
		if err := sealInto(files.addChild(a.Name), gcm, rnd, a.Data, a.Comment); err != nil {
			return nil, err
		}
	}
	filesFDT := encodeFDT(filesRoot)
	if len(filesFDT) > MaxFilesFDTSize {
		return nil, fieldErr("/file/files-fdt", ErrTooLarge, "%d bytes of attachments, the ultravisor takes %d", len(filesFDT), MaxFilesFDTSize)
	}
	root.addChild("file").addProp("files-fdt", filesFDT)
	blob := encodeFDT(root)
	if len(blob) > MaxBlobSize {
		return nil, fieldErr("/", ErrTooLarge, "%d bytes, at most %d", len(blob), MaxBlobSize)
	}
	return blob, nil
}

func newGCM(key []byte, nonceSize int) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithNonceSize(block, nonceSize)
}

// sealInto fills an svm-tools "encrypted file" node: algorithm, untrusted-comment,
// ciphertext, iv, mac (no additional data).
func sealInto(n *node, gcm cipher.AEAD, rnd io.Reader, plain []byte, comment string) error {
	iv := make([]byte, gcm.NonceSize())
	if _, err := io.ReadFull(rnd, iv); err != nil {
		return fmt.Errorf("esm: iv: %w", err)
	}
	sealed := gcm.Seal(nil, iv, plain, nil)
	n.addString("algorithm", "AES256-GCM")
	n.addString("untrusted-comment", comment)
	n.addProp("ciphertext", sealed[:len(plain)])
	n.addProp("iv", iv)
	n.addProp("mac", sealed[len(plain):])
	return nil
}
