package esm

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
)

func TestFDTRoundTripSVMTools(t *testing.T) {
	// Our decoder reads libfdt's output; our encoder's output decodes to the same tree.
	for _, name := range []string{"make.esm", "steps.esm"} {
		root, err := decodeFDT(readFixture(t, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		again, err := decodeFDT(encodeFDT(root))
		if err != nil || !reflect.DeepEqual(normal(root), normal(again)) {
			t.Fatalf("%s: round trip: %v", name, err)
		}
	}
}

func TestFDTDecodeRejects(t *testing.T) {
	good := func() *node {
		r := &node{}
		r.addString("compatible", "ibm,esm")
		r.addChild("a").addProp("p", []byte{1, 2, 3})
		return r
	}
	enc := encodeFDT(good())
	setU32 := func(off int, v uint32) []byte {
		b := append([]byte(nil), enc...)
		binary.BigEndian.PutUint32(b[off:], v)
		return b
	}
	structOff := int(binary.BigEndian.Uint32(enc[8:]))
	deep := &node{}
	n := deep
	for i := 0; i < fdtMaxDepth+2; i++ {
		n = n.addChild("d")
	}
	dupProp := good()
	dupProp.addProp("compatible", nil)
	dupNode := good()
	dupNode.addChild("a")
	badName := good()
	badName.children[0].name = "a b"
	for _, tc := range []struct {
		name, want string
		data       []byte
	}{
		{"bad magic", "bad magic", setU32(0, 0xd00dfeee)},
		{"old version", "unsupported version", setU32(20, 16)},
		{"totalsize too big", "truncated", setU32(4, uint32(len(enc)+1))},
		{"struct outside", "structure block", setU32(36, uint32(len(enc)))},
		{"strings outside", "strings block", setU32(32, 1<<31)},
		{"rsvmap unterminated", "reservation map", setU32(16, uint32(len(enc)-8))},
		{"bad root token", "does not start with the root node", setU32(structOff, fdtProp)},
		{"prop value overrun", "overruns", setU32(structOff+8+4, 1<<20)}, // root: begin(4)+name pad(4), then prop len
		{"name offset outside", "strings block", setU32(structOff+8+8, 1<<20)},
		{"too deep", "nested deeper", encodeFDT(deep)},
		{"duplicate property", "duplicate property", encodeFDT(dupProp)},
		{"duplicate node", "duplicate subnode", encodeFDT(dupNode)},
		{"bad node name", "invalid node name", encodeFDT(badName)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeFDT(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
