	.text
	.globl _start
_start:
	li 3, 0
	b .
	.data
banner:	.asciz "sealpod esm interop test kernel"
