package authenticode

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/guest-image/kernel"
	"github.com/sealpod/sealpod/guest-image/kernel/kerneltest"
	"github.com/sealpod/sealpod/internal/testdeps"
)

var pesignHashRE = regexp.MustCompile(`(?m)^hash: ([0-9a-f]+)$`)

// pesignHash runs Debian's pesign (an independent Authenticode implementation, built on NSS)
// on file: `pesign --hash --digest_type=<alg> --in=<file>`.
func pesignHash(t *testing.T, pesign, file, alg string) string {
	t.Helper()
	out, err := exec.Command(pesign, "--hash", "--digest_type="+alg, "--in="+file).CombinedOutput()
	if err != nil {
		t.Fatalf("pesign --hash %s: %v\n%s", file, err, out)
	}
	m := pesignHashRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("pesign --hash %s: no hash in %q", file, out)
	}
	return string(m[1])
}

// realKernels returns EFI-stub kernels to check: Debian's signed kernel (with a certificate
// table), the same kernel with its signature removed by pesign, and the minimal kernel of
// guest-image/kernel when one has been built (it is not built here: that takes minutes).
func realKernels(t *testing.T, pesign string) map[string]string {
	t.Helper()
	tree := kerneltest.Tree(t)
	files := map[string]string{"debian-signed": tree.KernelPath()}
	unsigned := filepath.Join(t.TempDir(), "vmlinuz-unsigned")
	if out, err := exec.Command(pesign, "--remove-signature", "--signature-number=0", "--in="+tree.KernelPath(), "--out="+unsigned).CombinedOutput(); err != nil {
		t.Fatalf("pesign --remove-signature: %v\n%s", err, out)
	}
	files["debian-unsigned"] = unsigned
	if dir, err := kernel.DefaultKernelCacheDir(); err == nil {
		built, _ := filepath.Glob(filepath.Join(dir, "*", "bzImage"))
		for _, b := range built {
			files["minimal-"+filepath.Base(filepath.Dir(b))] = b
		}
		if len(built) == 0 {
			t.Logf("no minimal kernel in %s yet (make guest builds it); checking Debian's only", dir)
		}
	}
	return files
}

// TestDigestMatchesPesign checks our Authenticode hash against pesign's on real EFI-stub
// kernels, with SHA-256 and SHA-1 (the digests Debian 12's pesign offers; SHA-384, which TDVF
// uses, runs through the same code with another hash.Hash).
func TestDigestMatchesPesign(t *testing.T) {
	pesign := testdeps.Binary(t, "pesign", "Debian package pesign")
	for name, file := range realKernels(t, pesign) {
		t.Run(name, func(t *testing.T) {
			img, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				alg string
				h   hash.Hash
			}{{"sha256", sha256.New()}, {"sha1", sha1.New()}} {
				got, err := Digest(img, tc.h)
				if err != nil {
					t.Fatalf("%s: %v", tc.alg, err)
				}
				if want := pesignHash(t, pesign, file, tc.alg); hex.EncodeToString(got) != want {
					t.Errorf("%s %s: ours %x, pesign %s", file, tc.alg, got, want)
				}
			}
			// The whole-file hash is not the Authenticode hash (headers, checksum, certificates
			// differ), so a Digest that fell back to hashing the file would be caught above.
			if sum := sha256.Sum256(img); bytes.Equal(sum[:], mustDigest(t, img, sha256.New())) {
				t.Error("Authenticode hash equals the plain file hash")
			}
		})
	}
}

func mustDigest(t *testing.T, img []byte, h hash.Hash) []byte {
	t.Helper()
	d, err := Digest(img, h)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// pe is a synthetic PE32+ image description.
type pe struct {
	sections  [][2]uint32 // {PointerToRawData, SizeOfRawData}, in section-table order
	size      int         // file size
	certOff   uint32      // certificate table (0 = none)
	certSize  uint32
	numDirs   uint32
	optMagic  uint16
	headerEnd uint32 // SizeOfHeaders
}

const (
	synPEOff = 0x80
	synOpt   = synPEOff + 24
	synOpt64 = 240
)

func (p pe) build() []byte {
	img := make([]byte, p.size)
	for i := range img {
		img[i] = byte(i*31 + i>>8)
	}
	copy(img, "MZ")
	binary.LittleEndian.PutUint32(img[0x3c:], synPEOff)
	copy(img[synPEOff:], "PE\x00\x00")
	binary.LittleEndian.PutUint16(img[synPEOff+4+2:], uint16(len(p.sections)))
	binary.LittleEndian.PutUint16(img[synPEOff+4+16:], synOpt64)
	magic := p.optMagic
	if magic == 0 {
		magic = peMagic32Plus
	}
	binary.LittleEndian.PutUint16(img[synOpt:], magic)
	binary.LittleEndian.PutUint32(img[synOpt+sizeOfHeadersOff:], p.headerEnd)
	binary.LittleEndian.PutUint32(img[synOpt+numDirsOff32Plus:], p.numDirs)
	cert := synOpt + dirOff32Plus + certDirIndex*dirEntrySize
	binary.LittleEndian.PutUint32(img[cert:], p.certOff)
	binary.LittleEndian.PutUint32(img[cert+4:], p.certSize)
	for i, s := range p.sections {
		h := synOpt + synOpt64 + i*sectionHeaderSize
		copy(img[h:], ".sec")
		binary.LittleEndian.PutUint32(img[h+16:], s[1])
		binary.LittleEndian.PutUint32(img[h+20:], s[0])
	}
	return img
}

// base: two sections listed out of file order, trailing data, then a certificate table.
var base = pe{
	sections:  [][2]uint32{{0x600, 0x100}, {0x400, 0x200}, {0x700, 0}},
	size:      0x900,
	certOff:   0x880,
	certSize:  0x80,
	numDirs:   16,
	headerEnd: 0x400,
}

// TestDigestTranscript checks the hashed ranges against the algorithm written out by hand.
func TestDigestTranscript(t *testing.T) {
	img := base.build()
	checksum := synOpt + checksumOff
	cert := synOpt + dirOff32Plus + certDirIndex*dirEntrySize
	var want []byte
	want = append(want, img[:checksum]...)
	want = append(want, img[checksum+4:cert]...)
	want = append(want, img[cert+8:0x400]...)
	want = append(want, img[0x400:0x600]...) // sorted by PointerToRawData
	want = append(want, img[0x600:0x700]...)
	want = append(want, img[0x700:0x880]...) // trailing data up to the certificate table
	for name, h := range map[string]struct {
		h   hash.Hash
		sum func([]byte) []byte
	}{
		"sha256": {sha256.New(), func(b []byte) []byte { s := sha256.Sum256(b); return s[:] }},
		"sha384": {sha512.New384(), func(b []byte) []byte { s := sha512.Sum384(b); return s[:] }},
	} {
		if got := mustDigest(t, img, h.h); !bytes.Equal(got, h.sum(want)) {
			t.Errorf("%s: %x, want %x", name, got, h.sum(want))
		}
	}
}

// TestDigestExclusions: what Authenticode leaves out does not change the hash; every byte it
// covers does.
func TestDigestExclusions(t *testing.T) {
	ref := mustDigest(t, base.build(), sha256.New())
	checksum := synOpt + checksumOff
	cert := synOpt + dirOff32Plus + certDirIndex*dirEntrySize
	for _, tc := range []struct {
		name    string
		off     int
		val     byte // new value; 0 = flip bits
		changes bool
	}{
		{"checksum", checksum, 0, false},
		{"cert dir entry", cert, 0x70, false}, // table moved to 0x870, still inside the file
		{"certificate table", 0x8a0, 0, false},
		{"header byte", 0x10, 0, true},
		{"first section", 0x450, 0, true},
		{"second section", 0x650, 0, true},
		{"trailing data", 0x800, 0, true},
		{"section table", synOpt + synOpt64 + 2, 0, true},
	} {
		img := base.build()
		if tc.val != 0 {
			img[tc.off] = tc.val
		} else {
			img[tc.off] ^= 0x5a
		}
		got := mustDigest(t, img, sha256.New())
		if changed := !bytes.Equal(got, ref); changed != tc.changes {
			t.Errorf("%s (offset %#x): hash changed = %v, want %v", tc.name, tc.off, changed, tc.changes)
		}
	}
	// Without a Certificate Table entry (4 data directories) the entry's bytes are hashed.
	p := base
	p.numDirs, p.certOff, p.certSize = 4, 0, 0
	a := mustDigest(t, p.build(), sha256.New())
	img := p.build()
	img[cert+1] ^= 1
	if bytes.Equal(a, mustDigest(t, img, sha256.New())) {
		t.Error("with 4 data directories the would-be certificate entry is not hashed")
	}
}

func TestDigestMalformed(t *testing.T) {
	mod := func(f func(p *pe)) []byte {
		p := base
		p.sections = append([][2]uint32{}, base.sections...)
		f(&p)
		return p.build()
	}
	for name, img := range map[string][]byte{
		"empty":             nil,
		"no MZ":             append([]byte("ZM"), base.build()[2:]...),
		"PE32 magic wrong":  mod(func(p *pe) { p.optMagic = 0x107 }),
		"section outside":   mod(func(p *pe) { p.sections[0] = [2]uint32{0x800, 0x200} }),
		"cert outside":      mod(func(p *pe) { p.certSize = 0x100 }),
		"headers too large": mod(func(p *pe) { p.headerEnd = 0x1000 }),
		"headers too small": mod(func(p *pe) { p.headerEnd = 0x100 }),
		"too many dirs":     mod(func(p *pe) { p.numDirs = 1000 }),
		"cert overlaps":     mod(func(p *pe) { p.certOff, p.certSize = 0x500, 0x400 }),
	} {
		if _, err := Digest(img, sha256.New()); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	// e_lfanew pointing past the end.
	img := base.build()
	binary.LittleEndian.PutUint32(img[0x3c:], 0xffffff00)
	if _, err := Digest(img, sha256.New()); err == nil || !strings.Contains(err.Error(), "PE signature") {
		t.Errorf("e_lfanew outside: %v", err)
	}
}

// FuzzDigest: a hostile image must not panic or hash outside its bytes.
func FuzzDigest(f *testing.F) {
	f.Add(base.build())
	f.Add([]byte("MZ"))
	f.Fuzz(func(t *testing.T, img []byte) {
		_, _ = Digest(img, sha256.New())
	})
}

// BenchmarkDigestSHA384 hashes an 8 MiB synthetic image.
func BenchmarkDigestSHA384(b *testing.B) {
	p := base
	p.size = 8 << 20
	p.certOff, p.certSize = 0, 0
	p.sections = [][2]uint32{{0x400, 8<<20 - 0x400}}
	img := p.build()
	b.SetBytes(int64(len(img)))
	h := sha512.New384()
	for b.Loop() {
		if _, err := Digest(img, h); err != nil {
			b.Fatal(err)
		}
	}
}
