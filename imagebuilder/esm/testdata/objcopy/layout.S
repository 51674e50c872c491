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
