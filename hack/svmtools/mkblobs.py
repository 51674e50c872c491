#!/usr/bin/python3
"""Writes ESM blobs with open-power/svm-tools' own Python functions (no TTY, no CLI).

Run by mkblobs.sh in the output directory:  mkblobs.py <svm-tools checkout>
  make.esm   esm.make() from make.yml: origin = owner, lockbox-1 = host1, lockbox-2 = host2,
             the digests, attachments sealpod-data-key and sealpod-broker-cred.
  steps.esm  esm.create / authorize / digest / attach called one by one: origin = owner,
             lockbox-1 = host2 (RSA-3072), with comments.
read_passphrase is replaced (the keys have no passphrase; svm-tools would ask on a TTY) and
CROSS_COMPILE names the ppc64le objcopy that svm-tools runs on the kernel.
"""
import os
import sys

sys.path.insert(0, sys.argv[1])
os.environ["CROSS_COMPILE"] = "powerpc64le-linux-gnu-"

from svm_tool.esm import esm  # noqa: E402

esm.read_passphrase = lambda prompt: ""

bootargs = open("bootargs.txt").read()

with open("make.yml", "w") as y:
    y.write(f"""---
- origin:
    pubkey: "owner.pub.pem"
    seckey: "owner.key"
- recipient:
    comment: "host1 tpm"
    pubkey: "host1.pub.pem"
- recipient:
    pubkey: "host2.pub.pem"
- digest:
    args: "{bootargs}"
    initramfs: "initrd.cpio"
    kernel: "vmlinux"
- file:
    name: "sealpod-data-key"
    path: "data-key.bin"
- file:
    name: "sealpod-broker-cred"
    path: "broker-cred.txt"
""")
esm.make("make.esm", "make.yml")

esm.create("steps.esm", "owner.pub.pem", "owner of the steps blob")
esm.authorize("steps.esm", "host2.pub.pem", "host2 rsa-3072", "owner.key", "")
esm.digest("steps.esm", "digests by esm.digest", bootargs, "initrd.cpio", "vmlinux", "owner.key", "")
esm.attach("steps.esm", "broker-cred.txt", "a credential", "sealpod-broker-cred", "owner.key", "")
esm.attach("steps.esm", "data-key.bin", "", "sealpod-data-key", "owner.key", "")
