package esm

import (
	"bytes"
	"crypto/sha512"
	"debug/elf"
	"fmt"
)

// MaxKernelImage bounds the image KernelImage makes.
const MaxKernelImage = 512 << 20

// KernelImage converts a vmlinux ELF the way `objcopy -O binary -S` does, which is what
// svm-tools hashes for the kernel digest: the file contents of every allocated section
// (not NOBITS, not empty) placed at its load address — the physical address of the PT_LOAD
// segment that holds it, else its own address — relative to the lowest one, gaps zero-filled.
// Sealpod computes the digest without a ppc64 objcopy this way.
func KernelImage(vmlinux []byte) ([]byte, error) {
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		return nil, fmt.Errorf("esm: kernel ELF: %w", err)
	}
	type piece struct {
		name string
		lma  uint64
		data []byte
	}
	var pieces []piece
	lo, hi := ^uint64(0), uint64(0)
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Type == elf.SHT_NOBITS || s.Size == 0 {
			continue
		}
		if s.Flags&elf.SHF_COMPRESSED != 0 {
			return nil, fmt.Errorf("esm: kernel ELF section %q: compressed", s.Name)
		}
		if s.Offset > uint64(len(vmlinux)) || s.Size > uint64(len(vmlinux))-s.Offset {
			return nil, fmt.Errorf("esm: kernel ELF section %q: [%#x,+%#x) outside the %d-byte file", s.Name, s.Offset, s.Size, len(vmlinux))
		}
		lma := s.Addr
		for _, p := range f.Progs {
			if p.Type == elf.PT_LOAD && s.Offset >= p.Off && s.Offset-p.Off <= p.Filesz && s.Size <= p.Filesz-(s.Offset-p.Off) &&
				s.Addr >= p.Vaddr && s.Addr-p.Vaddr == s.Offset-p.Off {
				lma = p.Paddr + (s.Offset - p.Off)
				break
			}
		}
		if lma+s.Size < lma {
			return nil, fmt.Errorf("esm: kernel ELF section %q: load address %#x overflows", s.Name, lma)
		}
		pieces = append(pieces, piece{s.Name, lma, vmlinux[s.Offset : s.Offset+s.Size]})
		lo, hi = min(lo, lma), max(hi, lma+s.Size)
	}
	if len(pieces) == 0 {
		return nil, fmt.Errorf("esm: kernel ELF has no loadable section")
	}
	if hi-lo > MaxKernelImage {
		return nil, fmt.Errorf("esm: kernel image spans %d bytes, at most %d", hi-lo, MaxKernelImage)
	}
	img := make([]byte, hi-lo)
	for _, p := range pieces {
		copy(img[p.lma-lo:], p.data)
	}
	return img, nil
}

// KernelDigestELF is KernelDigest(KernelImage(vmlinux)): the kernel digest and kernel-size
// svm-tools seals for a vmlinux.
func KernelDigestELF(vmlinux []byte) ([sha512.Size]byte, uint32, error) {
	img, err := KernelImage(vmlinux)
	if err != nil {
		return [sha512.Size]byte{}, 0, err
	}
	return KernelDigest(img)
}
