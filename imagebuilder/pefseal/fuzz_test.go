package pefseal

import (
	"bytes"
	"testing"
)

// FuzzSplitInitrd: arbitrary initrds never panic, and whatever is accepted is a devicetree
// inside the input followed by a 512-aligned rest.
func FuzzSplitInitrd(f *testing.F) {
	blob := append([]byte("\xd0\x0d\xfe\xed"), bytes.Repeat([]byte{1}, 60)...)
	good := append(ESMCpio(blob), "initramfs"...)
	f.Add(good)
	f.Add(good[:300])
	f.Add(ESMCpio([]byte("not a dtb")))
	f.Add([]byte("070701"))
	f.Fuzz(func(t *testing.T, in []byte) {
		b, rest, err := SplitInitrd(in)
		if err != nil {
			return
		}
		if len(b) < 4 || string(b[:4]) != "\xd0\x0d\xfe\xed" || (len(in)-len(rest))%cpioBlock != 0 || !bytes.HasSuffix(in, rest) {
			t.Fatalf("accepted blob %q with %d bytes of rest from %d", b, len(rest), len(in))
		}
	})
}
