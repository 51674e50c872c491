#!/usr/bin/python3
"""Opens an ESM blob with open-power/svm-tools' own code and prints what it finds as JSON.

  svmtools_open.py <svm-tools checkout> <blob> <host private key PEM>

Used by imagebuilder/esm's opt-in test (SVM_TOOL=<checkout>). Steps, all svm-tools code:
esm.validate_esm (its structure check), esm.extract_symkey (fingerprint lookup and RSA-OAEP
unwrap), esm.file_fdt_get (the nested files-fdt), and the AES-GCM decrypt-and-verify of
esm_extract. Text attachments are also read through esm.esm_extract itself, from a copy of the
blob with the attachment moved to /file/NAME, the only place esm_extract at HEAD looks.
"""
import argparse
import contextlib
import io
import json
import os
import sys
import tempfile

sys.path.insert(0, sys.argv[1])

import libfdt  # noqa: E402
from Cryptodome.Cipher import AES  # noqa: E402
from svm_tool.esm import esm  # noqa: E402

esm.read_passphrase = lambda prompt: ""
blob_path, key_path = sys.argv[2], sys.argv[3]


def decrypt(fdt, offset, symkey):
    # As esm_extract: only AES256-GCM; decrypt, then verify the mac.
    algorithm = fdt.getprop(offset, "algorithm").as_str()
    if algorithm != "AES256-GCM":
        raise SystemExit(f"unsupported algorithm: {algorithm}")
    ciphertext = fdt.getprop(offset, "ciphertext")
    iv = fdt.getprop(offset, "iv")
    mac = fdt.getprop(offset, "mac")
    cipher = AES.new(symkey, AES.MODE_GCM, nonce=iv)
    plaintext = cipher.decrypt(ciphertext)
    cipher.verify(mac)
    return plaintext


fdt = libfdt.Fdt(esm.file_read(blob_path))
esm.validate_esm(fdt, blob_path)
symkey = esm.extract_symkey(fdt, key_path, "")

out = {"validated": True, "digests": {}, "attachments": {}, "extracted_by_esm_extract": {}}

dg = decrypt(fdt, fdt.path_offset("/digest/digests-fdt"), symkey)
dfdt = libfdt.Fdt(dg)
doff = dfdt.path_offset("/digests")
out["digests"]["algorithm"] = dfdt.getprop(doff, "algorithm").as_str()
for name in ("rtas", "kernel", "initrd", "bootargs"):
    out["digests"][name] = bytes(dfdt.getprop(doff, name)).hex()
out["digests"]["kernel-size"] = dfdt.getprop(doff, "kernel-size").as_uint32()

files = esm.file_fdt_get(fdt)
parent = files.path_offset("/files")
off = files.first_subnode(parent, libfdt.QUIET_NOTFOUND)
while off >= 0:
    name = files.get_name(off)
    data = decrypt(files, off, symkey)
    out["attachments"][name] = data.hex()
    if all(32 <= b < 127 or b == 10 for b in data):
        # Through esm_extract itself: copy the node to /file/NAME in a scratch blob.
        legacy = libfdt.Fdt(esm.file_read(blob_path))
        legacy.resize(legacy.totalsize() + len(data) + 8192)
        node = legacy.add_subnode(legacy.path_offset("/file"), name)
        for prop in ("algorithm", "untrusted-comment", "ciphertext", "iv", "mac"):
            legacy.setprop(node, prop, bytes(files.getprop(off, prop)))
        legacy.pack()
        with tempfile.NamedTemporaryFile(suffix=".esm", delete=False) as tmp:
            tmp.write(legacy.as_bytearray())
        try:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                esm.esm_extract(argparse.Namespace(blob=tmp.name, file=name, seckey=key_path))
            out["extracted_by_esm_extract"][name] = buf.getvalue().encode().hex()
        finally:
            os.unlink(tmp.name)
    off = files.next_subnode(off, libfdt.QUIET_NOTFOUND)

json.dump(out, sys.stdout)
