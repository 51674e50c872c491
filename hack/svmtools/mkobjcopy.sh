#!/usr/bin/env bash
# Makes imagebuilder/esm/testdata/objcopy ONCE (committed): small ppc64le ELF files and what
# GNU objcopy -O binary -S makes of them, the reference for esm.KernelImage.
#   hack/svmtools/mkobjcopy.sh <out dir>      (needs binutils-powerpc64le-linux-gnu)
set -euo pipefail
out=$1
mkdir -p "$out"
cd "$out"
p=powerpc64le-linux-gnu-
cat > layout.S <<'ASM'
	.text
	.globl _start
_start:	li 3, 1
	b .
	.section .rodata
	.asciz "read-only data"
	.data
	.quad 0x1122334455667788
	.asciz "data after a gap"
	.bss
	.space 4096
	.section .comment
	.asciz "not allocated: not in the image"
ASM
cat > layout.lds <<'LDS'
SECTIONS {
	. = 0xc000000000000000;
	.text : AT(0) { *(.text) }
	.rodata : { *(.rodata) }
	. = ALIGN(0x100) + 0x40;
	.data : AT(0x400) { *(.data) }
	.bss : { *(.bss) }
	.comment 0 : { *(.comment) }
}
LDS
${p}as -o layout.o layout.S
${p}ld -T layout.lds --build-id=none -z max-page-size=0x1000 -o layout.elf layout.o 2>/dev/null
${p}objcopy -O binary -S layout.elf layout.bin
rm -f layout.o; chmod 644 ./*
${p}readelf -lS layout.elf > layout.readelf.txt
