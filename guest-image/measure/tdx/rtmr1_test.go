package tdx

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"os"
	"testing"

	"github.com/sealpod/sealpod/guest-image/kernel/kerneltest"
	"github.com/sealpod/sealpod/guest-image/measure/authenticode"
	"github.com/sealpod/sealpod/guest-image/measure/internal/testkernel"
)

// TestQEMUKernel checks the header fields QEMU's x86_load_linux writes, written out here field
// by field (Linux boot protocol: type_of_loader 0x210, loadflags 0x211, heap_end_ptr 0x224,
// cmd_line_ptr 0x228), and that nothing else changes.
func TestQEMUKernel(t *testing.T) {
	k := testkernel.BzImage("6.1.0", 0x1000, true)
	orig := bytes.Clone(k)
	got, err := QEMUKernel(k, "console=hvc0", false)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k, orig) {
		t.Fatal("QEMUKernel modified its input")
	}
	want := bytes.Clone(orig)
	want[0x210] = 0xb0
	want[0x211] = 0x81
	want[0x224], want[0x225] = 0x00, 0xfe
	want[0x228], want[0x229], want[0x22a], want[0x22b] = 0x00, 0x00, 0x02, 0x00
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("byte %#x: %#x, want %#x", i, got[i], want[i])
			}
		}
	}
	oldProto := bytes.Clone(orig)
	binary.LittleEndian.PutUint16(oldProto[0x206:], 0x201)
	for name, tc := range map[string]struct {
		k         []byte
		cmdline   string
		initrd    bool
		predictab bool // error wraps ErrNotPredictable
	}{
		"initrd":         {orig, "", true, true},
		"vga":            {orig, "quiet vga=791", false, true},
		"old protocol":   {oldProto, "", false, false},
		"not a bzImage":  {make([]byte, 0x1000), "", false, false},
		"short":          {orig[:0x220], "", false, false},
		"not loaded hi.": {func() []byte { c := bytes.Clone(orig); c[0x211] = 0; return c }(), "", false, false},
	} {
		_, err := QEMUKernel(tc.k, tc.cmdline, tc.initrd)
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if errors.Is(err, ErrNotPredictable) != tc.predictab {
			t.Errorf("%s: %v (ErrNotPredictable = %v)", name, err, !tc.predictab)
		}
	}
}

// TestRTMR1Transcript checks RTMR[1] against the event sequence written out by hand: the
// kernel's Authenticode digest, then SHA-384 of each TDVF event in order.
func TestRTMR1Transcript(t *testing.T) {
	k := testkernel.BzImage("6.1.0", 0x4000, true)
	kd, err := KernelDigest(k, "", false, HeaderUnmodified)
	if err != nil {
		t.Fatal(err)
	}
	ad, err := authenticode.Digest(k, sha512.New384())
	if err != nil || !bytes.Equal(ad, kd[:]) {
		t.Fatalf("unmodified header: digest %x, want the file's Authenticode SHA-384 %x (%v)", kd, ad, err)
	}
	var want [DigestSize]byte
	ext := func(d []byte) { want = sha512.Sum384(append(want[:], d...)) }
	ext(kd[:])
	for _, ev := range []string{"Calling EFI Application from Boot Option", "\x00\x00\x00\x00",
		"Exit Boot Services Invocation", "Exit Boot Services Returned with Success"} {
		d := sha512.Sum384([]byte(ev))
		ext(d[:])
	}
	if got := RTMR1Value(kd); got != want {
		t.Fatalf("RTMR1 %x, want %x", got, want)
	}
	// The QEMU-patched header is a different image, so a different digest.
	qd, err := KernelDigest(k, "", false, HeaderQEMU)
	if err != nil || qd == kd {
		t.Errorf("qemu header digest %x (%v), want one distinct from the unmodified %x", qd, err, kd)
	}
	// Every kernel byte counts: a different kernel is a different RTMR[1].
	other := bytes.Clone(k)
	other[0x3000] ^= 1
	od, err := KernelDigest(other, "", false, HeaderQEMU)
	if err != nil || RTMR1Value(od) == RTMR1Value(qd) {
		t.Errorf("a changed kernel byte kept RTMR1 (%v)", err)
	}
	// A kernel without the EFI stub cannot be measured by TDVF's PE loader.
	if _, err := KernelDigest(testkernel.BzImage("6.1.0", 0x4000, false), "", false, HeaderQEMU); !errors.Is(err, authenticode.ErrMalformed) {
		t.Errorf("non-PE kernel: %v, want authenticode.ErrMalformed", err)
	}
	if _, err := ParseKernelHeader("grub"); err == nil {
		t.Error("unknown kernel header accepted")
	}
	for _, s := range []string{"", "qemu", "unmodified"} {
		h, err := ParseKernelHeader(s)
		if err != nil || (s != "" && h.String() != s) {
			t.Errorf("ParseKernelHeader(%q) = %v, %v", s, h, err)
		}
	}
}

// TestRTMR1DebianKernel measures Debian's signed EFI-stub kernel both ways (the SHA-256 of the
// same Authenticode code is checked against pesign in package authenticode).
func TestRTMR1DebianKernel(t *testing.T) {
	k, err := os.ReadFile(kerneltest.Tree(t).KernelPath())
	if err != nil {
		t.Fatal(err)
	}
	q, err := KernelDigest(k, "console=hvc0", false, HeaderQEMU)
	if err != nil {
		t.Fatal(err)
	}
	u, err := KernelDigest(k, "console=hvc0", false, HeaderUnmodified)
	if err != nil || q == u || q == ([DigestSize]byte{}) {
		t.Errorf("qemu %x, unmodified %x (%v)", q, u, err)
	}
}

// FuzzKernelDigest: hostile kernel images must not panic the header patcher or the PE parser.
func FuzzKernelDigest(f *testing.F) {
	f.Add(testkernel.BzImage("6.1.0", 0x1000, true), false)
	f.Add([]byte("MZ"), true)
	f.Fuzz(func(t *testing.T, k []byte, unmodified bool) {
		hdr := HeaderQEMU
		if unmodified {
			hdr = HeaderUnmodified
		}
		_, _ = KernelDigest(k, "", false, hdr)
	})
}
