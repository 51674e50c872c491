#!/usr/bin/env bash
# Makes the svm-tools interop fixtures of imagebuilder/esm/testdata/svmtools ONCE (they are
# committed; CI does not run this). Needs Debian's python3 with python3-pycryptodome,
# python3-libfdt, python3-yaml, openssl, cpio and binutils-powerpc64le-linux-gnu.
#   hack/svmtools/mkblobs.sh <svm-tools checkout> <out dir>
set -euo pipefail
svm=$(cd "$1" && pwd)
out=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
cd "$out"

# Keys: the owner's (origin lockbox) and three host "TPM" keys; host3 is never authorised.
for k in owner:2048 host1:2048 host2:3072 host3:2048; do
	name=${k%%:*} bits=${k##*:}
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:"$bits" -out "$name.key" 2>/dev/null
	openssl pkey -in "$name.key" -pubout -out "$name.pub.pem"
done

# A tiny ppc64le ELF standing in for vmlinux: svm-tools hashes `objcopy -O binary -S` of it.
cat > kernel.S <<'ASM'
	.text
	.globl _start
_start:
	li 3, 0
	b .
	.data
banner:	.asciz "sealpod esm interop test kernel"
ASM
powerpc64le-linux-gnu-as -o kernel.o kernel.S
powerpc64le-linux-gnu-ld -N -Ttext=0 --build-id=none -o vmlinux kernel.o
powerpc64le-linux-gnu-objcopy -O binary -S vmlinux kernel.bin
rm -f kernel.o

# An initramfs (newc cpio) and the attachments.
mkdir -p initrd-root && printf '#!/bin/sh\necho sealpod\n' > initrd-root/init
(cd initrd-root && find . -print0 | LC_ALL=C sort -z | cpio --null --create --quiet --format=newc --reproducible) > initrd.cpio
rm -rf initrd-root
head -c 32 /dev/urandom > data-key.bin
printf 'sealpod-broker-credential-v0 test %s\n' "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" > broker-cred.txt
printf 'console=hvc0 root=/dev/ram0 svm=on' > bootargs.txt

/usr/bin/python3 "$here/mkblobs.py" "$svm"
git -C "$svm" rev-parse HEAD 2>/dev/null > svm-tools-commit.txt || echo "(not a git checkout: see README)" > svm-tools-commit.txt
