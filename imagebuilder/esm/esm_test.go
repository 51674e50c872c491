package esm

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"errors"
	"strings"
	"testing"
)

func TestWriteOpenRoundTrip(t *testing.T) {
	spec := sealpodSpec(t)
	blob, err := Write(spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ key, lockbox string }{
		{"host1", "lockbox-1"}, {"host2", "lockbox-2"}, {"owner", "origin-lockbox"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			c, err := Open(blob, privKey(t, tc.key))
			if err != nil {
				t.Fatal(err)
			}
			if c.Lockbox != tc.lockbox {
				t.Errorf("opened %s, want %s", c.Lockbox, tc.lockbox)
			}
			if c.Digests != spec.Digests {
				t.Errorf("digests %+v, want %+v", c.Digests, spec.Digests)
			}
			if len(c.Attachments) != len(spec.Attachments) {
				t.Fatalf("%d attachments, want %d", len(c.Attachments), len(spec.Attachments))
			}
			for _, a := range spec.Attachments {
				got, ok := c.Attachment(a.Name)
				if !ok || !bytes.Equal(got, a.Data) {
					t.Errorf("attachment %s = %x, want %x", a.Name, got, a.Data)
				}
			}
		})
	}
	// The layout svm-tools' validator and the ultravisor expect.
	b, err := Parse(blob)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range b.Lockboxes {
		names = append(names, l.Name)
	}
	if got := strings.Join(names, ","); got != "origin-lockbox,lockbox-1,lockbox-2" {
		t.Errorf("lockboxes %s", got)
	}
	if got := strings.Join(b.AttachmentNames(), ","); got != AttachDataKey+","+AttachBrokerCredential {
		t.Errorf("attachments %s", got)
	}
	if len(b.digests.iv) != 16 || len(b.digests.mac) != 16 {
		t.Errorf("iv %d bytes, mac %d bytes: svm-tools writes 16 and 16", len(b.digests.iv), len(b.digests.mac))
	}
}

func TestWriteThrowAwayOrigin(t *testing.T) {
	spec := sealpodSpec(t)
	spec.Origin = nil
	blob, err := Write(spec)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Open(blob, privKey(t, "host1"))
	if err != nil || c.Lockbox != "lockbox-1" {
		t.Fatalf("host1: %v, %+v", err, c)
	}
	_, err = Open(blob, privKey(t, "owner"))
	wantErr(t, err, ErrNoLockbox, "/lockboxes")
}

func TestWriteRejectsBadSpec(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Spec)
		kind  error
		field string
	}{
		{"no hosts", func(s *Spec) { s.Hosts = nil }, ErrSpec, "/lockboxes"},
		{"too many hosts", func(s *Spec) { s.Hosts = make([]HostKey, maxLockboxes) }, ErrSpec, "at most 63"},
		{"small key", func(s *Spec) { s.Hosts[1].Public = &small.PublicKey }, ErrSpec, "/lockboxes/lockbox-2"},
		{"nil key", func(s *Spec) { s.Hosts[0].Public = nil }, ErrSpec, "/lockboxes/lockbox-1"},
		{"duplicate host", func(s *Spec) { s.Hosts[1] = s.Hosts[0] }, ErrSpec, "/lockboxes/lockbox-2"},
		{"comment newline", func(s *Spec) { s.Hosts[0].Comment = "a\nb" }, ErrSpec, "/lockboxes/lockbox-1/untrusted-comment"},
		{"zero kernel digest", func(s *Spec) { s.Digests.Kernel = [64]byte{} }, ErrSpec, "/digests/kernel"},
		{"zero kernel size", func(s *Spec) { s.Digests.KernelSize = 0 }, ErrSpec, "/digests/kernel-size"},
		{"bad attachment name", func(s *Spec) { s.Attachments[0].Name = "data/key" }, ErrSpec, "/file/files-fdt:/files[0]"},
		{"long attachment name", func(s *Spec) { s.Attachments[0].Name = strings.Repeat("k", 32) }, ErrSpec, "/file/files-fdt:/files[0]"},
		{"duplicate attachment", func(s *Spec) { s.Attachments[1].Name = s.Attachments[0].Name }, ErrSpec, "/file/files-fdt:/files/" + AttachDataKey},
		{"attachment over a page", func(s *Spec) { s.Attachments[0].Data = make([]byte, 64<<10) }, ErrTooLarge, "/file/files-fdt:/files/" + AttachDataKey},
		{"attachments over a page", func(s *Spec) {
			s.Attachments[0].Data = make([]byte, 40<<10)
			s.Attachments[1].Data = make([]byte, 40<<10)
		}, ErrTooLarge, "/file/files-fdt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := sealpodSpec(t)
			tc.edit(&spec)
			_, err := Write(spec)
			wantErr(t, err, tc.kind, tc.field)
		})
	}
}

// TestOpenBadBlobs: each alteration gives the typed error naming the altered field.
func TestOpenBadBlobs(t *testing.T) {
	blob, err := Write(sealpodSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	host1 := privKey(t, "host1")
	for _, tc := range []struct {
		name  string
		blob  func() []byte
		key   *rsa.PrivateKey
		kind  error
		field string
	}{
		{"truncated", func() []byte { return blob[:len(blob)-1] }, host1, ErrMalformed, "truncated"},
		{"truncated header", func() []byte { return blob[:20] }, host1, ErrMalformed, "truncated header"},
		{"trailing bytes", func() []byte { return append(bytes.Clone(blob), 0) }, host1, ErrMalformed, "trailing"},
		{"oversize", func() []byte { return append(bytes.Clone(blob), make([]byte, MaxBlobSize)...) }, host1, ErrTooLarge, "at most"},
		{"empty", func() []byte { return nil }, host1, ErrMalformed, "truncated header"},
		{"key not authorised", func() []byte { return blob }, privKey(t, "host3"), ErrNoLockbox, "/lockboxes"},
		{"altered lockbox", func() []byte {
			return mutate(t, blob, "/lockboxes/lockbox-1/encrypted-symkey", flipLast)
		}, host1, ErrWrongKey, "/lockboxes/lockbox-1/encrypted-symkey"},
		{"altered fingerprint", func() []byte {
			return mutate(t, blob, "/lockboxes/lockbox-1/pubkey-fingerprint/hash", flipLast)
		}, host1, ErrNoLockbox, "/lockboxes"},
		{"altered digest", func() []byte {
			return mutate(t, blob, "/digest/digests-fdt/ciphertext", func(b []byte) []byte {
				c := bytes.Clone(b)
				c[len(c)/2] ^= 0x80
				return c
			})
		}, host1, ErrDecrypt, "/digest/digests-fdt"},
		{"altered digest tag", func() []byte { return mutate(t, blob, "/digest/digests-fdt/mac", flipLast) }, host1, ErrDecrypt, "/digest/digests-fdt"},
		{"altered digest iv", func() []byte { return mutate(t, blob, "/digest/digests-fdt/iv", flipLast) }, host1, ErrDecrypt, "/digest/digests-fdt"},
		{"altered attachment", func() []byte {
			return mutate(t, blob, "/file/files-fdt:/files/"+AttachDataKey+"/ciphertext", flipLast)
		}, host1, ErrDecrypt, "/file/files-fdt:/files/" + AttachDataKey},
		{"altered attachment tag", func() []byte {
			return mutate(t, blob, "/file/files-fdt:/files/"+AttachBrokerCredential+"/mac", flipLast)
		}, host1, ErrDecrypt, "/file/files-fdt:/files/" + AttachBrokerCredential},
		{"short tag", func() []byte {
			return mutate(t, blob, "/digest/digests-fdt/mac", func(b []byte) []byte { return b[:12] })
		}, host1, ErrMalformed, "/digest/digests-fdt/mac"},
		{"wrong algorithm", func() []byte {
			return mutate(t, blob, "/digest/digests-fdt/algorithm", func([]byte) []byte { return []byte("AES128-GCM\x00") })
		}, host1, ErrMalformed, "/digest/digests-fdt/algorithm"},
		{"wrong compatible", func() []byte {
			return mutate(t, blob, "/compatible", func([]byte) []byte { return []byte("ibm,esmx\x00") })
		}, host1, ErrMalformed, "/compatible"},
		{"unterminated string", func() []byte {
			return mutate(t, blob, "/lockboxes/origin-lockbox/pubkey-fingerprint/algorithm", func([]byte) []byte { return []byte("SHA256") })
		}, host1, ErrMalformed, "/lockboxes/origin-lockbox/pubkey-fingerprint/algorithm"},
		{"fingerprint algorithm", func() []byte {
			return mutate(t, blob, "/lockboxes/lockbox-1/pubkey-fingerprint/algorithm", func([]byte) []byte { return []byte("SHA1\x00") })
		}, host1, ErrMalformed, "/lockboxes/lockbox-1/pubkey-fingerprint/algorithm"},
		{"short fingerprint", func() []byte {
			return mutate(t, blob, "/lockboxes/lockbox-1/pubkey-fingerprint/hash", func(b []byte) []byte { return b[:20] })
		}, host1, ErrMalformed, "/lockboxes/lockbox-1/pubkey-fingerprint/hash"},
		{"short lockbox", func() []byte {
			return mutate(t, blob, "/lockboxes/lockbox-1/encrypted-symkey", func(b []byte) []byte { return b[:100] })
		}, host1, ErrMalformed, "/lockboxes/lockbox-1/encrypted-symkey"},
		{"nested tree truncated", func() []byte {
			return mutate(t, blob, "/file/files-fdt", func(b []byte) []byte { return b[:len(b)-4] })
		}, host1, ErrMalformed, "/file/files-fdt"},
		{"missing origin", func() []byte {
			root, _ := decodeFDT(blob)
			lb := root.child("lockboxes")
			lb.children[0].name = "lockbox-9"
			return encodeFDT(root)
		}, host1, ErrMalformed, "/lockboxes/origin-lockbox"},
		{"bad lockbox name", func() []byte {
			root, _ := decodeFDT(blob)
			root.child("lockboxes").children[1].name = "lockbox-0"
			return encodeFDT(root)
		}, host1, ErrMalformed, "/lockboxes/lockbox-0"},
		{"missing digest", func() []byte {
			root, _ := decodeFDT(blob)
			root.child("digest").children = nil
			return encodeFDT(root)
		}, host1, ErrMalformed, "/digest/digests-fdt"},
		{"extra root node", func() []byte {
			root, _ := decodeFDT(blob)
			root.addChild("extra")
			return encodeFDT(root)
		}, host1, ErrMalformed, "/extra"},
		{"extra property", func() []byte {
			root, _ := decodeFDT(blob)
			root.child("lockboxes").child("lockbox-1").addProp("x", nil)
			return encodeFDT(root)
		}, host1, ErrMalformed, "/lockboxes/lockbox-1/x"},
		{"comment with newline", func() []byte {
			return mutate(t, blob, "/lockboxes/lockbox-1/untrusted-comment", func([]byte) []byte { return []byte("a\nb\x00") })
		}, host1, ErrMalformed, "/lockboxes/lockbox-1/untrusted-comment"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(tc.blob(), tc.key)
			wantErr(t, err, tc.kind, tc.field)
		})
	}
}

// TestOpenDigestsFDTChecked: a blob whose decrypted digests tree is wrong (written by a
// writer holding the key) is refused, naming the field.
func TestOpenDigestsFDTChecked(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*node)
		field string
	}{
		{"short kernel digest", func(r *node) { r.child("digests").props[2].value = make([]byte, 32) }, "/digests/kernel"},
		{"kernel-size width", func(r *node) { r.child("digests").props[3].value = []byte{0, 0, 0, 0, 1} }, "/digests/kernel-size"},
		{"algorithm", func(r *node) { r.child("digests").props[0].value = []byte("SHA256\x00") }, "/digests/algorithm"},
		{"missing initrd", func(r *node) {
			d := r.child("digests")
			d.props = append(d.props[:4], d.props[5:]...)
		}, "/digests/initrd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := sealpodSpec(t)
			tree := spec.Digests.tree()
			tc.edit(tree)
			_, err := parseDigests(encodeFDT(tree))
			wantErr(t, err, ErrMalformed, tc.field)
		})
	}
}

func TestDigestsVerify(t *testing.T) {
	boot := fixtureBoot(t)
	d := fixtureDigests(t)
	d.RTAS = sha512.Sum512(boot.RTAS)
	if err := d.Verify(boot); err != nil {
		t.Fatalf("unchanged boot: %v", err)
	}
	for _, tc := range []struct {
		name   string
		edit   func(*Boot)
		fields []string
	}{
		{"kernel", func(b *Boot) { b.Kernel = flipLast(b.Kernel) }, []string{"/digests/kernel"}},
		{"kernel size", func(b *Boot) { b.Kernel = append(bytes.Clone(b.Kernel), 0) }, []string{"/digests/kernel-size"}},
		{"initrd", func(b *Boot) { b.Initrd = flipLast(b.Initrd) }, []string{"/digests/initrd"}},
		{"bootargs", func(b *Boot) { b.Bootargs += " " }, []string{"/digests/bootargs"}},
		{"rtas and bootargs", func(b *Boot) { b.RTAS = nil; b.Bootargs = "init=/bin/sh" }, []string{"/digests/rtas", "/digests/bootargs"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := boot
			tc.edit(&b)
			err := d.Verify(b)
			for _, f := range tc.fields {
				wantErr(t, err, ErrDigest, f)
			}
		})
	}
}

func TestFieldErrorMessage(t *testing.T) {
	err := fieldErr("/digest/digests-fdt", ErrDecrypt, "detail")
	if got := err.Error(); got != "esm /digest/digests-fdt: ESM ciphertext fails authentication: detail" {
		t.Errorf("message %q", got)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "/digest/digests-fdt" {
		t.Errorf("not a FieldError: %v", err)
	}
}
