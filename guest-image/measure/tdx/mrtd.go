// Package tdx computes Intel TDX reference measurements: MRTD from the TDVF metadata of a
// firmware image (the TDH.MEM.PAGE.ADD and TDH.MR.EXTEND operations the VMM performs while
// building the TD) and the run-time measurement registers that are predictable from the boot
// artifacts. See docs/measurements.md for which RTMRs depend on the host.
package tdx

import (
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strings"

	"github.com/sealpod/sealpod/guest-image/measure/ovmf"
)

// DigestSize is the size of MRTD and of each RTMR (SHA-384).
const DigestSize = 48

const (
	pageSize       = 4096
	extendChunk    = 256 // TDH.MR.EXTEND measures 256 bytes per call
	mrtdBufferSize = 128
)

// Order is the order in which the VMM issues TDH.MEM.PAGE.ADD and TDH.MR.EXTEND for a
// measured section. It changes MRTD, so it is part of the reference value's inputs.
type Order int

const (
	// OrderPerPage adds each page and then extends that page's 16 chunks before the next page:
	// upstream Linux KVM (tdx_gmem_post_populate, Linux 6.16+) with upstream QEMU (10.1+).
	OrderPerPage Order = iota
	// OrderAddsFirst adds all pages of a section and then extends all of them: some earlier
	// out-of-tree TDX host stacks.
	OrderAddsFirst
)

// ParseOrder parses "per-page" (default) or "adds-first".
func ParseOrder(s string) (Order, error) {
	switch strings.ToLower(s) {
	case "", "per-page":
		return OrderPerPage, nil
	case "adds-first":
		return OrderAddsFirst, nil
	}
	return 0, fmt.Errorf("tdx measurement order %q: want per-page or adds-first", s)
}

func (o Order) String() string {
	if o == OrderAddsFirst {
		return "adds-first"
	}
	return "per-page"
}

// mrtdContext accumulates MRTD as the TDX module does: a single SHA-384 over 128-byte records.
type mrtdContext struct {
	h   hash.Hash
	buf [mrtdBufferSize]byte
}

func (c *mrtdContext) record(op string, gpa uint64) {
	clear(c.buf[:])
	copy(c.buf[:], op)
	binary.LittleEndian.PutUint64(c.buf[16:], gpa)
	c.h.Write(c.buf[:])
}

// pageAdd is TDH.MEM.PAGE.ADD: only the GPA is measured.
func (c *mrtdContext) pageAdd(gpa uint64) { c.record("MEM.PAGE.ADD", gpa) }

// extend is TDH.MR.EXTEND of one page: 16 records, each followed by its 256 content bytes.
func (c *mrtdContext) extendPage(gpa uint64, page []byte) {
	for off := 0; off < pageSize; off += extendChunk {
		c.record("MR.EXTEND", gpa+uint64(off))
		c.h.Write(page[off : off+extendChunk])
	}
}

// MRTD computes the build-time measurement of a TD booted from fw. Sections with the PAGE.AUG
// attribute are not added at build time and so not measured; every other section's pages are
// added (GPA measured) and, with the MR.EXTEND attribute, their contents extended.
func MRTD(fw *ovmf.Firmware, order Order) ([DigestSize]byte, error) {
	var out [DigestSize]byte
	if fw == nil {
		return out, errors.New("firmware: required for MRTD")
	}
	sections, err := fw.TDXSections()
	if err != nil {
		return out, fmt.Errorf("firmware: %w", err)
	}
	c := &mrtdContext{h: sha512.New384()}
	for i, s := range sections {
		if s.Attributes&ovmf.TDXAttrPageAug != 0 {
			continue
		}
		pages := s.MemoryDataSize / pageSize
		var data []byte
		extend := s.Attributes&ovmf.TDXAttrMRExtend != 0
		if extend {
			if data, err = fw.TDXSectionData(s); err != nil {
				return out, fmt.Errorf("firmware: TDX section %d (%s): %w", i, s.Type, err)
			}
		}
		switch order {
		case OrderPerPage:
			for p := range pages {
				gpa := s.MemoryAddress + p*pageSize
				c.pageAdd(gpa)
				if extend {
					c.extendPage(gpa, data[p*pageSize:(p+1)*pageSize])
				}
			}
		case OrderAddsFirst:
			for p := range pages {
				c.pageAdd(s.MemoryAddress + p*pageSize)
			}
			if extend {
				for p := range pages {
					c.extendPage(s.MemoryAddress+p*pageSize, data[p*pageSize:(p+1)*pageSize])
				}
			}
		default:
			return out, fmt.Errorf("tdx measurement order %d: unknown", int(order))
		}
	}
	c.h.Sum(out[:0])
	return out, nil
}
