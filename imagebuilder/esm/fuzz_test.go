package esm

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzOpen: Open never panics, every error is typed, and whatever decodes as a devicetree
// re-encodes to the same tree.
func FuzzOpen(f *testing.F) {
	blob, err := Write(sealpodSpec(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(blob)
	f.Add(readFixture(f, "make.esm"))
	f.Add(readFixture(f, "steps.esm"))
	f.Add(blob[:len(blob)/2])
	f.Add(mutate(f, blob, "/digest/digests-fdt/mac", flipLast))
	key := privKey(f, "host1")
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Open(data, key)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("untyped error %v", err)
			}
			for _, kind := range []error{ErrMalformed, ErrTooLarge, ErrNoLockbox, ErrWrongKey, ErrDecrypt} {
				if errors.Is(err, kind) {
					goto typed
				}
			}
			t.Fatalf("error of unknown kind: %v", err)
		typed:
		} else if c == nil || c.Lockbox == "" {
			t.Fatalf("nil contents without error")
		}
		if root, err := decodeFDT(data); err == nil {
			again, err := decodeFDT(encodeFDT(root))
			if err != nil || !reflect.DeepEqual(normal(root), normal(again)) {
				t.Fatalf("re-encoded tree differs: %v", err)
			}
		}
	})
}

// normal drops aliasing differences (nil vs empty values) for comparison.
func normal(n *node) *node {
	out := &node{name: n.name}
	for _, p := range n.props {
		out.props = append(out.props, prop{p.name, bytes.Clone(append([]byte{}, p.value...))})
	}
	for _, c := range n.children {
		out.children = append(out.children, normal(c))
	}
	return out
}
