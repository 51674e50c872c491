package esm

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKernelImageMatchesObjcopy: the references were made by GNU objcopy -O binary -S
// (testdata/objcopy/README.md, testdata/svmtools/README.md).
func TestKernelImageMatchesObjcopy(t *testing.T) {
	for _, tc := range []struct{ elf, bin string }{
		{"svmtools/vmlinux", "svmtools/kernel.bin"},  // LMA = VMA = 0
		{"objcopy/layout.elf", "objcopy/layout.bin"}, // VMA 0xc000…, LMA 0; .data at LMA 0x400; .bss, .comment
	} {
		t.Run(tc.elf, func(t *testing.T) {
			elfData, err := os.ReadFile(filepath.Join("testdata", tc.elf))
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join("testdata", tc.bin))
			if err != nil {
				t.Fatal(err)
			}
			got, err := KernelImage(elfData)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("image of %d bytes differs from objcopy's %d bytes", len(got), len(want))
			}
		})
	}
	// And the digest svm-tools sealed for that vmlinux.
	c, err := Open(readFixture(t, "make.esm"), privKey(t, "host1"))
	if err != nil {
		t.Fatal(err)
	}
	d, size, err := KernelDigestELF(readFixture(t, "vmlinux"))
	if err != nil || d != c.Digests.Kernel || size != c.Digests.KernelSize {
		t.Fatalf("KernelDigestELF = %x, %d, %v; svm-tools sealed %x, %d", d, size, err, c.Digests.Kernel, c.Digests.KernelSize)
	}
}

func TestKernelImageRejects(t *testing.T) {
	layout, err := os.ReadFile("testdata/objcopy/layout.elf")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, want string
		data       []byte
	}{
		{"not ELF", "kernel ELF", []byte("MZ not an elf file at all, clearly")},
		{"empty", "kernel ELF", nil},
		{"truncated", "kernel ELF", layout[:len(layout)/2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := KernelImage(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func FuzzKernelImage(f *testing.F) {
	for _, p := range []string{"testdata/objcopy/layout.elf", "testdata/svmtools/vmlinux"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := KernelImage(data)
		if err == nil && (len(img) == 0 || len(img) > MaxKernelImage) {
			t.Fatalf("image of %d bytes", len(img))
		}
	})
}
