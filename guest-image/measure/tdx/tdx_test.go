package tdx

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/sealpod/sealpod/guest-image/measure/internal/testkernel"
	"github.com/sealpod/sealpod/guest-image/measure/internal/testtdvf"
	"github.com/sealpod/sealpod/guest-image/measure/ovmf"
	"github.com/sealpod/sealpod/internal/testdeps"
)

// TestMRTDDebianOVMF checks MRTD of Debian's OVMF against the value an independent open
// implementation (td-shim's MRTD calculator) computes for the same image; see testdata.
func TestMRTDDebianOVMF(t *testing.T) {
	raw, err := os.ReadFile("testdata/mrtd-debian-ovmf.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Files         map[string]string `json:"files"`
		UnifiedSHA256 string            `json:"unified_sha256"`
		MRTDPerPage   string            `json:"mrtd_per_page"`
	}
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	vars, err1 := os.ReadFile("/usr/share/OVMF/OVMF_VARS.fd")
	code, err2 := os.ReadFile("/usr/share/OVMF/OVMF_CODE.fd")
	if err1 != nil || err2 != nil {
		testdeps.Missing(t, "Debian ovmf package not installed (apt-get install -y ovmf): %v %v", err1, err2)
	}
	img := append(append([]byte{}, vars...), code...)
	if sum := sha256.Sum256(img); hex.EncodeToString(sum[:]) != ref.UnifiedSHA256 {
		testdeps.Missing(t, "installed OVMF is not the build the reference value is for (sha256 %x)", sum)
	}
	fw, err := ovmf.Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	got, err := MRTD(fw, OrderPerPage)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(got[:]) != ref.MRTDPerPage {
		t.Fatalf("MRTD %x\nwant %s", got, ref.MRTDPerPage)
	}
	other, err := MRTD(fw, OrderAddsFirst)
	if err != nil || other == got {
		t.Errorf("adds-first order gives %x (%v); want a different value", other, err)
	}
	// The split CODE file alone cannot be measured: its TDX metadata describes the unified image.
	codeFW, err := ovmf.Parse(code)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := MRTD(codeFW, OrderPerPage); !errors.Is(err, ovmf.ErrMalformed) {
		t.Errorf("MRTD(OVMF_CODE.fd) = %v, want ErrMalformed", err)
	}
}

// synthetic parses a TDVF image (testtdvf.Image): 2 pages of BFV (measured), 1 page TD_HOB,
// and a PAGE.AUG section whose size is given.
func synthetic(t *testing.T, bfv []byte, augPages uint64) *ovmf.Firmware {
	t.Helper()
	fw, err := ovmf.Parse(testtdvf.Image(bfv, augPages))
	if err != nil {
		t.Fatal(err)
	}
	return fw
}

// TestMRTDRecords checks the record layout and order against a transcript written out here
// operation by operation (TDX module spec: 128-byte records "MEM.PAGE.ADD"/"MR.EXTEND" + GPA).
func TestMRTDRecords(t *testing.T) {
	bfv := testtdvf.BFV()
	fw := synthetic(t, bfv, 16)
	rec := func(op string, gpa uint64) []byte {
		b := make([]byte, 128)
		copy(b, op)
		binary.LittleEndian.PutUint64(b[16:], gpa)
		return b
	}
	var perPage, addsFirst []byte
	for p := uint64(0); p < 2; p++ {
		gpa := 0xffffe000 + p*0x1000
		perPage = append(perPage, rec("MEM.PAGE.ADD", gpa)...)
		addsFirst = append(addsFirst, rec("MEM.PAGE.ADD", gpa)...)
		for c := uint64(0); c < 16; c++ {
			perPage = append(perPage, rec("MR.EXTEND", gpa+c*256)...)
			perPage = append(perPage, bfv[p*0x1000+c*256:p*0x1000+(c+1)*256]...)
		}
	}
	for p := uint64(0); p < 2; p++ {
		gpa := 0xffffe000 + p*0x1000
		for c := uint64(0); c < 16; c++ {
			addsFirst = append(addsFirst, rec("MR.EXTEND", gpa+c*256)...)
			addsFirst = append(addsFirst, bfv[p*0x1000+c*256:p*0x1000+(c+1)*256]...)
		}
	}
	perPage = append(perPage, rec("MEM.PAGE.ADD", 0x800000)...)
	addsFirst = append(addsFirst, rec("MEM.PAGE.ADD", 0x800000)...)
	for name, tc := range map[string]struct {
		order      Order
		transcript []byte
	}{"per-page": {OrderPerPage, perPage}, "adds-first": {OrderAddsFirst, addsFirst}} {
		got, err := MRTD(fw, tc.order)
		if err != nil {
			t.Fatal(err)
		}
		if want := sha512.Sum384(tc.transcript); got != want {
			t.Errorf("%s: MRTD %x, want %x", name, got, want)
		}
	}
	// PAGE.AUG sections are not measured: their size does not matter.
	a, _ := MRTD(synthetic(t, bfv, 1), OrderPerPage)
	b, _ := MRTD(synthetic(t, bfv, 100), OrderPerPage)
	if a != b {
		t.Error("a PAGE.AUG section changed MRTD")
	}
	bfv[5] ^= 1
	if c, _ := MRTD(synthetic(t, bfv, 1), OrderPerPage); c == a {
		t.Error("a changed measured byte did not change MRTD")
	}
}

func TestMRTDErrors(t *testing.T) {
	if _, err := MRTD(nil, OrderPerPage); err == nil {
		t.Error("nil firmware accepted")
	}
	fw, err := ovmf.Parse(make([]byte, 4096))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := MRTD(fw, OrderPerPage); !errors.Is(err, ovmf.ErrNotFound) {
		t.Errorf("firmware without TDX metadata: %v, want ErrNotFound", err)
	}
	if _, err := ParseOrder("random"); err == nil {
		t.Error("unknown order accepted")
	}
}

// bzImage returns a minimal bzImage (not a PE) carrying version.
func bzImage(version string) []byte { return testkernel.BzImage(version, 0, false) }

func TestKernelVersion(t *testing.T) {
	tests := []struct {
		version string
		cc      bool
	}{
		{"6.1.0-27-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1", false},
		{"6.8.12", false},
		{"6.9.0-rc1 (builder) #1", true},
		{"6.12.38+deb13-amd64 (debian-kernel@lists.debian.org) #1", true},
		{"7.0.1", true},
	}
	for _, tc := range tests {
		v, err := KernelVersion(bzImage(tc.version))
		if err != nil || v != tc.version {
			t.Fatalf("KernelVersion = %q, %v; want %q", v, err, tc.version)
		}
		cc, err := StubMeasuresCC(v)
		if err != nil || cc != tc.cc {
			t.Errorf("StubMeasuresCC(%q) = %v, %v; want %v", v, cc, err, tc.cc)
		}
	}
	for name, k := range map[string][]byte{"empty": nil, "no magic": make([]byte, 0x400), "pointer outside": func() []byte {
		k := bzImage("6.9")
		binary.LittleEndian.PutUint16(k[0x20e:], 0xfff0)
		return k
	}()} {
		if _, err := KernelVersion(k); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := StubMeasuresCC("linux"); err == nil {
		t.Error("StubMeasuresCC accepted a version without major.minor")
	}
}

func TestRTMR2(t *testing.T) {
	initrd := []byte("initrd contents")
	got := RTMR2Value("console=hvc0", initrd)
	// Written out: LoadOptions = UCS-2("initrd=initrd console=hvc0") + NUL, then the initrd.
	var want [DigestSize]byte
	opts := []byte{}
	for _, c := range []byte("initrd=initrd console=hvc0") {
		opts = append(opts, c, 0)
	}
	opts = append(opts, 0, 0)
	step := func(d [DigestSize]byte) {
		want = sha512.Sum384(append(want[:], d[:]...))
	}
	step(sha512.Sum384(opts))
	step(sha512.Sum384(initrd))
	if got != want {
		t.Fatalf("RTMR2 %x, want %x", got, want)
	}
	noInitrd := RTMR2Value("console=hvc0", nil)
	if noInitrd == got {
		t.Error("RTMR2 without initrd not distinct")
	}
	changed := RTMR2Value("console=hvc1", initrd)
	changedInitrd := RTMR2Value("console=hvc0", []byte("initrd contentz"))
	if changed == got || changedInitrd == got {
		t.Error("RTMR2 ignores a changed byte")
	}
	// No LoadOptions and no initrd: the stub measures nothing, RTMR[2] stays zero.
	if z := RTMR2Value("", nil); z != ([DigestSize]byte{}) {
		t.Errorf("empty boot: RTMR2 %x, want zero", z)
	}
	if RTMR2Value("", initrd) == ([DigestSize]byte{}) {
		t.Error("initrd alone not measured")
	}
}

// FuzzKernelVersion: hostile kernel images must not panic the setup-header reader.
func FuzzKernelVersion(f *testing.F) {
	f.Add(bzImage("6.9.0"))
	f.Add([]byte{})
	f.Add(make([]byte, 0x210))
	f.Fuzz(func(t *testing.T, k []byte) {
		if v, err := KernelVersion(k); err == nil {
			_, _ = StubMeasuresCC(v)
		}
	})
}

// BenchmarkMRTD measures MRTD of Debian's 2 MiB unified OVMF (1.9 MiB measured BFV).
func BenchmarkMRTD(b *testing.B) {
	vars, err1 := os.ReadFile("/usr/share/OVMF/OVMF_VARS.fd")
	code, err2 := os.ReadFile("/usr/share/OVMF/OVMF_CODE.fd")
	if err1 != nil || err2 != nil {
		testdeps.Missing(b, "Debian ovmf package not installed (apt-get install -y ovmf): %v %v", err1, err2)
	}
	fw, err := ovmf.Parse(append(vars, code...))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(vars) + len(code)))
	for b.Loop() {
		if _, err := MRTD(fw, OrderPerPage); err != nil {
			b.Fatal(err)
		}
	}
}
