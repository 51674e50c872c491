package esm

// A small, bounded flattened-devicetree (FDT, "DTB") encoder and decoder: just what the
// ESM blob needs (Devicetree Specification v0.4 §5). The decoder is strict — the blob comes
// from the host side of the machine — and every count, offset and length is checked
// against the buffer before use.

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

const (
	fdtMagic       = 0xd00dfeed
	fdtHeaderSize  = 40 // version 17 header
	fdtVersion     = 17
	fdtLastComp    = 16
	fdtBeginNode   = 0x1
	fdtEndNode     = 0x2
	fdtProp        = 0x3
	fdtNop         = 0x4
	fdtEnd         = 0x9
	fdtMaxDepth    = 8    // the ESM nests four levels deep
	fdtMaxItems    = 4096 // nodes + properties in one tree
	fdtMaxNameLen  = 31   // Devicetree Specification: node and property names
	fdtMaxRsvEntry = 64
)

// node is one devicetree node; properties and children keep their order.
type node struct {
	name     string
	props    []prop
	children []*node
}

type prop struct {
	name  string
	value []byte
}

func (n *node) prop(name string) ([]byte, bool) {
	for _, p := range n.props {
		if p.name == name {
			return p.value, true
		}
	}
	return nil, false
}

func (n *node) child(name string) *node {
	for _, c := range n.children {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (n *node) addProp(name string, value []byte) { n.props = append(n.props, prop{name, value}) }

func (n *node) addString(name, value string) {
	n.addProp(name, append([]byte(value), 0))
}

func (n *node) addChild(name string) *node {
	c := &node{name: name}
	n.children = append(n.children, c)
	return c
}

// encodeFDT writes the tree as a version-17 DTB with an empty memory reservation map,
// the layout libfdt's fdt_pack produces: header, reservation map, structure, strings.
func encodeFDT(root *node) []byte {
	var structBlk, stringsBlk bytes.Buffer
	strOff := map[string]uint32{}
	u32 := func(v uint32) { _ = binary.Write(&structBlk, binary.BigEndian, v) }
	pad := func() {
		for structBlk.Len()%4 != 0 {
			structBlk.WriteByte(0)
		}
	}
	var walk func(n *node)
	walk = func(n *node) {
		u32(fdtBeginNode)
		structBlk.WriteString(n.name)
		structBlk.WriteByte(0)
		pad()
		for _, p := range n.props {
			off, ok := strOff[p.name]
			if !ok {
				off = uint32(stringsBlk.Len()) // #nosec G115 -- bounded by the writer's size limits
				strOff[p.name] = off
				stringsBlk.WriteString(p.name)
				stringsBlk.WriteByte(0)
			}
			u32(fdtProp)
			u32(uint32(len(p.value))) // #nosec G115 -- bounded by the writer's size limits
			u32(off)
			structBlk.Write(p.value)
			pad()
		}
		for _, c := range n.children {
			walk(c)
		}
		u32(fdtEndNode)
	}
	walk(root)
	u32(fdtEnd)

	const rsvOff = fdtHeaderSize // 40: already 8-aligned
	structOff := rsvOff + 16     // one all-zero terminating entry
	stringsOff := structOff + structBlk.Len()
	total := stringsOff + stringsBlk.Len()
	out := make([]byte, total)
	hdr := []uint32{fdtMagic, uint32(total), uint32(structOff), uint32(stringsOff), rsvOff, // #nosec G115 -- bounded
		fdtVersion, fdtLastComp, 0, uint32(stringsBlk.Len()), uint32(structBlk.Len())} // #nosec G115 -- bounded
	for i, v := range hdr {
		binary.BigEndian.PutUint32(out[4*i:], v)
	}
	copy(out[structOff:], structBlk.Bytes())
	copy(out[stringsOff:], stringsBlk.Bytes())
	return out
}

// fdtError is a structural error at a byte offset of the DTB.
func fdtError(off uint64, format string, args ...any) error {
	return fmt.Errorf("devicetree at byte %d: %s", off, fmt.Sprintf(format, args...))
}

// decodeFDT parses a DTB that must fill data exactly. Values alias data.
func decodeFDT(data []byte) (*node, error) {
	if len(data) < fdtHeaderSize {
		return nil, fdtError(0, "truncated header: %d bytes, need %d", len(data), fdtHeaderSize)
	}
	h := func(i int) uint64 { return uint64(binary.BigEndian.Uint32(data[4*i:])) }
	magic, total, structOff, stringsOff, rsvOff := h(0), h(1), h(2), h(3), h(4)
	version, lastComp, stringsSize, structSize := h(5), h(6), h(8), h(9)
	size := uint64(len(data))
	switch {
	case magic != fdtMagic:
		return nil, fdtError(0, "bad magic %#x (want %#x)", magic, fdtMagic)
	case version < fdtVersion || lastComp > fdtVersion:
		return nil, fdtError(20, "unsupported version %d (last compatible %d); need 17", version, lastComp)
	case total > size:
		return nil, fdtError(4, "truncated: header says %d bytes, have %d", total, size)
	case total < size:
		return nil, fdtError(total, "%d trailing bytes after the %d-byte tree", size-total, total)
	case structOff%4 != 0 || structOff < fdtHeaderSize || structOff+structSize > total:
		return nil, fdtError(8, "structure block [%d,+%d) outside the %d-byte tree or misaligned", structOff, structSize, total)
	case stringsOff < fdtHeaderSize || stringsOff+stringsSize > total:
		return nil, fdtError(12, "strings block [%d,+%d) outside the %d-byte tree", stringsOff, stringsSize, total)
	case rsvOff%8 != 0 || rsvOff < fdtHeaderSize || rsvOff >= total:
		return nil, fdtError(16, "memory reservation map at %d outside the tree or misaligned", rsvOff)
	}
	// The reservation map: (address, size) pairs ending with (0, 0). Sealpod ignores it but
	// demands that it ends inside the tree.
	for i := uint64(0); ; i++ {
		off := rsvOff + 16*i
		if i >= fdtMaxRsvEntry || off+16 > total {
			return nil, fdtError(off, "memory reservation map not terminated")
		}
		if binary.BigEndian.Uint64(data[off:]) == 0 && binary.BigEndian.Uint64(data[off+8:]) == 0 {
			break
		}
	}
	d := &fdtDecoder{s: data[structOff : structOff+structSize], base: structOff,
		strs: data[stringsOff : stringsOff+stringsSize]}
	d.skipNops()
	if tok, err := d.u32(); err != nil {
		return nil, err
	} else if tok != fdtBeginNode {
		return nil, fdtError(d.base, "structure block does not start with the root node (token %#x)", tok)
	}
	root, err := d.node(0)
	if err != nil {
		return nil, err
	}
	if root.name != "" {
		return nil, fdtError(d.base, "root node has a name %q", root.name)
	}
	d.skipNops()
	if tok, err := d.u32(); err != nil {
		return nil, err
	} else if tok != fdtEnd {
		return nil, fdtError(d.base+d.pos-4, "expected end token after the root node, got %#x", tok)
	}
	if d.pos != uint64(len(d.s)) {
		return nil, fdtError(d.base+d.pos, "%d bytes after the end token in the structure block", uint64(len(d.s))-d.pos)
	}
	return root, nil
}

type fdtDecoder struct {
	s     []byte // structure block
	base  uint64 // its offset in the DTB, for messages
	pos   uint64
	strs  []byte
	items int
}

func (d *fdtDecoder) u32() (uint32, error) {
	if d.pos+4 > uint64(len(d.s)) {
		return 0, fdtError(d.base+d.pos, "structure block truncated")
	}
	v := binary.BigEndian.Uint32(d.s[d.pos:])
	d.pos += 4
	return v, nil
}

func (d *fdtDecoder) skipNops() {
	for d.pos+4 <= uint64(len(d.s)) && binary.BigEndian.Uint32(d.s[d.pos:]) == fdtNop {
		d.pos += 4
	}
}

func (d *fdtDecoder) align() { d.pos = (d.pos + 3) &^ 3 }

// node reads a node whose begin token was just consumed.
func (d *fdtDecoder) node(depth int) (*node, error) {
	if depth > fdtMaxDepth {
		return nil, fdtError(d.base+d.pos, "nodes nested deeper than %d", fdtMaxDepth)
	}
	start := d.pos
	end := bytes.IndexByte(d.s[d.pos:], 0)
	if end < 0 {
		return nil, fdtError(d.base+start, "node name not terminated")
	}
	n := &node{name: string(d.s[d.pos : d.pos+uint64(end)])}
	d.pos += uint64(end) + 1
	d.align()
	if depth > 0 && !validNodeName(n.name) {
		return nil, fdtError(d.base+start, "invalid node name %q", n.name)
	}
	for {
		if d.items++; d.items > fdtMaxItems {
			return nil, fdtError(d.base+d.pos, "more than %d nodes and properties", fdtMaxItems)
		}
		tokPos := d.pos
		tok, err := d.u32()
		if err != nil {
			return nil, err
		}
		switch tok {
		case fdtNop:
		case fdtEndNode:
			return n, nil
		case fdtProp:
			if len(n.children) > 0 {
				return nil, fdtError(d.base+tokPos, "node %q: property after a subnode", n.name)
			}
			p, err := d.prop()
			if err != nil {
				return nil, fmt.Errorf("node %q: %w", n.name, err)
			}
			if _, dup := n.prop(p.name); dup {
				return nil, fdtError(d.base+tokPos, "node %q: duplicate property %q", n.name, p.name)
			}
			n.props = append(n.props, p)
		case fdtBeginNode:
			c, err := d.node(depth + 1)
			if err != nil {
				return nil, err
			}
			if n.child(c.name) != nil {
				return nil, fdtError(d.base+tokPos, "node %q: duplicate subnode %q", n.name, c.name)
			}
			n.children = append(n.children, c)
		default:
			return nil, fdtError(d.base+tokPos, "node %q: unexpected token %#x", n.name, tok)
		}
	}
}

func (d *fdtDecoder) prop() (prop, error) {
	at := d.pos
	length, err := d.u32()
	if err != nil {
		return prop{}, err
	}
	nameOff, err := d.u32()
	if err != nil {
		return prop{}, err
	}
	if uint64(length) > uint64(len(d.s))-d.pos {
		return prop{}, fdtError(d.base+at, "property value of %d bytes overruns the structure block", length)
	}
	if uint64(nameOff) >= uint64(len(d.strs)) {
		return prop{}, fdtError(d.base+at, "property name offset %d outside the %d-byte strings block", nameOff, len(d.strs))
	}
	end := bytes.IndexByte(d.strs[nameOff:], 0)
	if end < 0 {
		return prop{}, fdtError(d.base+at, "property name at strings offset %d not terminated", nameOff)
	}
	name := string(d.strs[nameOff : nameOff+uint32(end)]) // #nosec G115 -- end < len(strs) ≤ 2^32
	if !validPropName(name) {
		return prop{}, fdtError(d.base+at, "invalid property name %q", name)
	}
	value := d.s[d.pos : d.pos+uint64(length) : d.pos+uint64(length)]
	d.pos += uint64(length)
	d.align()
	if d.pos > uint64(len(d.s)) {
		return prop{}, fdtError(d.base+at, "property %q padding overruns the structure block", name)
	}
	return prop{name: name, value: value}, nil
}

// validNodeName: node-name[@unit-address] with the Devicetree Specification's characters.
func validNodeName(s string) bool {
	if len(s) == 0 || len(s) > fdtMaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) || bytes.IndexByte([]byte(",._+-@"), c) >= 0) {
			return false
		}
	}
	return true
}

func validPropName(s string) bool {
	if len(s) == 0 || len(s) > fdtMaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) || bytes.IndexByte([]byte(",._+?#-"), c) >= 0) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
