// Package snp computes the AMD SEV-SNP launch digest (the MEASUREMENT field of an attestation
// report) from the artifacts QEMU loads into a guest: the firmware image, its SEV metadata
// pages, the SEV kernel-hashes table page (SHA-256 of kernel, initrd and command line) and one
// VMSA page per vCPU. See docs/measurements.md for the algorithm and its sources.
package snp

import (
	"crypto/sha512"
	"encoding/binary"
	"hash"
)

// DigestSize is the size of the SNP launch digest (SHA-384).
const DigestSize = 48

// Page types of the PAGE_INFO structure (SEV-SNP firmware ABI, SNP_LAUNCH_UPDATE).
const (
	pageTypeNormal     = 0x01
	pageTypeVMSA       = 0x02
	pageTypeZero       = 0x03
	pageTypeUnmeasured = 0x04
	pageTypeSecrets    = 0x05
	pageTypeCPUID      = 0x06
)

const (
	pageSize     = 4096
	pageInfoSize = 0x70
	// vmsaGPA is the GPA the SNP firmware records for VMSA pages: (u64)-1, page aligned, with
	// the bits above 51 cleared.
	vmsaGPA = 0xFFFFFFFFF000
)

// launchContext is the guest context's running launch digest: every SNP_LAUNCH_UPDATE replaces
// it with SHA-384(PAGE_INFO), where PAGE_INFO chains the previous digest.
type launchContext struct {
	ld       [DigestSize]byte
	h        hash.Hash
	pageInfo [pageInfoSize]byte
	contents [DigestSize]byte
}

func newLaunchContext(seed *[DigestSize]byte) *launchContext {
	c := &launchContext{h: sha512.New384()}
	if seed != nil {
		c.ld = *seed
	}
	return c
}

// update absorbs one page given the digest of its contents (zero for zero/secrets/CPUID pages).
func (c *launchContext) update(pageType byte, gpa uint64, contents *[DigestSize]byte) {
	p := &c.pageInfo
	copy(p[0:48], c.ld[:])
	copy(p[48:96], contents[:])
	binary.LittleEndian.PutUint16(p[96:], pageInfoSize)
	p[98] = pageType
	p[99] = 0                        // IS_IMI
	p[100], p[101], p[102] = 0, 0, 0 // VMPL3/2/1 permissions
	p[103] = 0
	binary.LittleEndian.PutUint64(p[104:], gpa)
	c.h.Reset()
	c.h.Write(p[:])
	c.h.Sum(c.ld[:0])
}

// normalPages measures data (a multiple of the page size) loaded at gpa.
func (c *launchContext) normalPages(gpa uint64, data []byte) {
	for off := 0; off < len(data); off += pageSize {
		c.h.Reset()
		c.h.Write(data[off : off+pageSize])
		c.h.Sum(c.contents[:0])
		c.update(pageTypeNormal, gpa+uint64(off), &c.contents)
	}
}

func (c *launchContext) vmsaPage(page []byte) {
	c.h.Reset()
	c.h.Write(page)
	c.h.Sum(c.contents[:0])
	c.update(pageTypeVMSA, vmsaGPA, &c.contents)
}

var zeroDigest [DigestSize]byte

func (c *launchContext) typedPages(pageType byte, gpa uint64, size uint64) {
	for off := uint64(0); off < size; off += pageSize {
		c.update(pageType, gpa+off, &zeroDigest)
	}
}
