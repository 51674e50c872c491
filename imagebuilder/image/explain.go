package image

import (
	"bytes"
	"encoding/binary"
)

// ExplainMessage is what the secure image prints when a plain runtime (runc, Docker) runs it.
const ExplainMessage = "This is a Sealpod secure image: it holds a measured guest and sealed pod specs, not a program.\n" +
	"It runs only under the sealpod runtime class (runtimeClassName: sealpod-snp | sealpod-tdx | sealpod-pef | sealpod-sim),\n" +
	"which boots it in a confidential VM. See https://github.com/sealpod/sealpod.\n"

// explainELF returns a minimal static x86-64 Linux executable (no libc, a few hundred bytes)
// that writes ExplainMessage to stderr and exits with status 1. It is generated rather than
// compiled so that the secure image is byte-for-byte reproducible without a toolchain.
func explainELF() []byte {
	const (
		base     = 0x400000
		ehSize   = 64
		phSize   = 56
		codeOff  = ehSize + phSize
		codeSize = 36
	)
	msg := []byte(ExplainMessage)
	var code bytes.Buffer
	le := binary.LittleEndian
	u32 := func(v uint32) []byte { b := make([]byte, 4); le.PutUint32(b, v); return b }
	code.Write([]byte{0xb8}) // mov eax, 1 (write)
	code.Write(u32(1))
	code.Write([]byte{0xbf}) // mov edi, 2 (stderr)
	code.Write(u32(2))
	code.Write([]byte{0x48, 0x8d, 0x35}) // lea rsi, [rip+disp32]
	code.Write(u32(uint32(codeSize - code.Len() - 4)))
	code.Write([]byte{0xba}) // mov edx, len
	code.Write(u32(uint32(len(msg))))
	code.Write([]byte{0x0f, 0x05}) // syscall
	code.Write([]byte{0xb8})       // mov eax, 60 (exit)
	code.Write(u32(60))
	code.Write([]byte{0xbf}) // mov edi, 1
	code.Write(u32(1))
	code.Write([]byte{0x0f, 0x05}) // syscall
	if code.Len() != codeSize {
		panic("explainELF: code size changed")
	}
	code.Write(msg)
	total := uint64(codeOff + code.Len())

	var f bytes.Buffer
	w := func(v any) { _ = binary.Write(&f, le, v) }
	f.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	w(uint16(2))              // e_type: EXEC
	w(uint16(0x3e))           // e_machine: x86-64
	w(uint32(1))              // e_version
	w(uint64(base + codeOff)) // e_entry
	w(uint64(ehSize))         // e_phoff
	w(uint64(0))              // e_shoff
	w(uint32(0))              // e_flags
	w(uint16(ehSize))         // e_ehsize
	w(uint16(phSize))         // e_phentsize
	w(uint16(1))              // e_phnum
	w(uint16(0))              // e_shentsize
	w(uint16(0))              // e_shnum
	w(uint16(0))              // e_shstrndx
	// PT_LOAD, R+X, the whole file at base.
	w(uint32(1))
	w(uint32(5))
	w(uint64(0))
	w(uint64(base))
	w(uint64(base))
	w(total)
	w(total)
	w(uint64(0x1000))
	f.Write(code.Bytes())
	return f.Bytes()
}
