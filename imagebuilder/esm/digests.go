package esm

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
)

// Digests are what the ultravisor checks before it lets a VM enter secure mode; svm-tools
// (esm_digest.py) defines them and the ultravisor (svm/svm-esmb.c) checks them:
//   - RTAS: SHA-512 of the RTAS blob the firmware instantiates;
//   - Kernel: SHA-512 of the first KernelSize bytes at the kernel base, i.e. of
//     `objcopy -O binary -S vmlinux` (KernelSize is that file's size);
//   - Initrd: SHA-512 of the initramfs without the ESM blob: the ultravisor finds the blob in a
//     cpio archive prepended to the initrd (first file under opt/ibm/pef/) and hashes what
//     follows that archive's trailer, rounded up to 512 bytes;
//   - Bootargs: SHA-512 of the kernel command line's bytes, without a terminating NUL.
type Digests struct {
	RTAS       [sha512.Size]byte
	Kernel     [sha512.Size]byte
	KernelSize uint32
	Initrd     [sha512.Size]byte
	Bootargs   [sha512.Size]byte
}

// SVMToolsRTASDigest is the RTAS digest svm-tools at ac4e8b6 builds into every blob
// (svm_tool/esm_digest/rtas_sha512.py): SHA-512 of the RTAS of the firmware it targets.
const SVMToolsRTASDigest = "189698638580422ea58a0968ecce2436daeb2c91a339c14b0ab2bc623c1649fe274074a4a92679dc61e5528d68778ba3c82f1b1f7e9a5958238b80497fc37f48"

// RTASDigestSVMTools returns SVMToolsRTASDigest as bytes.
func RTASDigestSVMTools() [sha512.Size]byte {
	var d [sha512.Size]byte
	b, err := hex.DecodeString(SVMToolsRTASDigest)
	if err != nil || len(b) != len(d) {
		panic("esm: bad SVMToolsRTASDigest")
	}
	copy(d[:], b)
	return d
}

// BootargsDigest is the digest of a kernel command line as svm-tools computes it.
func BootargsDigest(bootargs string) [sha512.Size]byte { return sha512.Sum512([]byte(bootargs)) }

// KernelDigest hashes a kernel image already converted with `objcopy -O binary -S`.
func KernelDigest(image []byte) ([sha512.Size]byte, uint32, error) {
	if len(image) == 0 || uint64(len(image)) > math.MaxUint32 {
		return [sha512.Size]byte{}, 0, fmt.Errorf("esm: kernel image of %d bytes", len(image))
	}
	return sha512.Sum512(image), uint32(len(image)), nil // #nosec G115 -- checked above
}

// Boot is what a VM is about to boot, for Verify.
type Boot struct {
	RTAS     []byte
	Kernel   []byte // the objcopy'd kernel image
	Initrd   []byte
	Bootargs string
}

// Verify checks b against the digests like the ultravisor does, and names every component
// that differs (errors wrap ErrDigest).
func (d Digests) Verify(b Boot) error {
	var errs []error
	check := func(field string, want [sha512.Size]byte, data []byte) {
		if sha512.Sum512(data) != want {
			errs = append(errs, fieldErr("/digests/"+field, ErrDigest, "SHA-512 of the %d bytes booted differs from the sealed digest", len(data)))
		}
	}
	check("rtas", d.RTAS, b.RTAS)
	if uint64(len(b.Kernel)) != uint64(d.KernelSize) {
		errs = append(errs, fieldErr("/digests/kernel-size", ErrDigest, "kernel image is %d bytes, sealed size is %d", len(b.Kernel), d.KernelSize))
	} else {
		check("kernel", d.Kernel, b.Kernel)
	}
	check("initrd", d.Initrd, b.Initrd)
	check("bootargs", d.Bootargs, []byte(b.Bootargs))
	return errors.Join(errs...)
}

func (d Digests) check() error {
	var zero [sha512.Size]byte
	for _, f := range []struct {
		name string
		v    [sha512.Size]byte
	}{{"rtas", d.RTAS}, {"kernel", d.Kernel}, {"initrd", d.Initrd}, {"bootargs", d.Bootargs}} {
		if f.v == zero {
			return fieldErr("/digests/"+f.name, ErrSpec, "digest is all zeros (not computed?)")
		}
	}
	if d.KernelSize == 0 {
		return fieldErr("/digests/kernel-size", ErrSpec, "kernel size is zero")
	}
	return nil
}

// tree is the digests DTB of esm_digest.py: / { compatible = "ibm,esm"; digests {…}; }.
func (d Digests) tree() *node {
	root := &node{}
	root.addString("compatible", "ibm,esm")
	n := root.addChild("digests")
	n.addString("algorithm", "SHA512")
	n.addProp("rtas", bytes.Clone(d.RTAS[:]))
	n.addProp("kernel", bytes.Clone(d.Kernel[:]))
	n.addProp("kernel-size", binary.BigEndian.AppendUint32(nil, d.KernelSize))
	n.addProp("initrd", bytes.Clone(d.Initrd[:]))
	n.addProp("bootargs", bytes.Clone(d.Bootargs[:]))
	return root
}

// parseDigests reads the decrypted digests DTB strictly.
func parseDigests(data []byte) (Digests, error) {
	const at = "/digest/digests-fdt:"
	var d Digests
	root, err := decodeFDT(data)
	if err != nil {
		return d, fieldErr(at+"/", ErrMalformed, "%v", err)
	}
	if err := onlyProps(at+"/", root, "compatible"); err != nil {
		return d, err
	}
	if err := wantString(at+"/compatible", root, "compatible", "ibm,esm"); err != nil {
		return d, err
	}
	if err := onlyChildren(at+"/", root, "digests"); err != nil {
		return d, err
	}
	n := root.child("digests")
	p := at + "/digests"
	if err := onlyProps(p, n, "algorithm", "rtas", "kernel", "kernel-size", "initrd", "bootargs"); err != nil {
		return d, err
	}
	if err := onlyChildren(p, n); err != nil {
		return d, err
	}
	if err := wantString(p+"/algorithm", n, "algorithm", "SHA512"); err != nil {
		return d, err
	}
	for _, f := range []struct {
		name string
		dst  *[sha512.Size]byte
	}{{"rtas", &d.RTAS}, {"kernel", &d.Kernel}, {"initrd", &d.Initrd}, {"bootargs", &d.Bootargs}} {
		v, _ := n.prop(f.name)
		if len(v) != sha512.Size {
			return d, fieldErr(p+"/"+f.name, ErrMalformed, "%d bytes, want a %d-byte SHA-512", len(v), sha512.Size)
		}
		copy(f.dst[:], v)
	}
	ks, _ := n.prop("kernel-size")
	if len(ks) != 4 {
		return d, fieldErr(p+"/kernel-size", ErrMalformed, "%d bytes, want a 32-bit cell", len(ks))
	}
	d.KernelSize = binary.BigEndian.Uint32(ks)
	return d, nil
}
