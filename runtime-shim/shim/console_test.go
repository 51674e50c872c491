package shim

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConsoleLogRing checks the bound, the counter and that the newest output is kept, for
// small lines, lines that straddle a rotation and single writes larger than the bound.
func TestConsoleLogRing(t *testing.T) {
	cases := []struct {
		name   string
		keep   int64
		writes [][]byte
	}{
		{"under the bound", 1024, [][]byte{[]byte("short\n")}},
		{"many lines", 1024, func() [][]byte {
			var w [][]byte
			for i := range 1000 {
				w = append(w, fmt.Appendf(nil, "line %04d\n", i))
			}
			return w
		}()},
		{"one huge write", 1024, [][]byte{bytes.Repeat([]byte("x"), 5000), []byte("tail\n")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "console.log")
			c, err := openConsoleLog(p, tc.keep)
			if err != nil {
				t.Fatal(err)
			}
			var total int64
			for _, w := range tc.writes {
				if n, err := c.Write(w); err != nil || n != len(w) {
					t.Fatalf("Write = %d, %v", n, err)
				}
				total += int64(len(w))
			}
			c.Close()
			var kept int64
			for _, f := range []string{p, p + ".1"} {
				if st, err := os.Stat(f); err == nil {
					kept += st.Size()
				}
			}
			if kept > tc.keep+200 { // + the dropped-count lines
				t.Errorf("%d bytes kept, bound %d", kept, tc.keep)
			}
			cur, _ := os.ReadFile(p)
			last := tc.writes[len(tc.writes)-1]
			if !bytes.HasSuffix(cur, last) {
				t.Errorf("newest output %q not at the end of %q", last, cur)
			}
			if total > tc.keep && (c.Dropped() == 0 || !strings.Contains(string(cur), "dropped")) {
				t.Errorf("%d bytes written, %d dropped, marker in %q", total, c.Dropped(), cur)
			}
			if total <= tc.keep/2 && c.Dropped() != 0 {
				t.Errorf("nothing should be dropped, counter %d", c.Dropped())
			}
		})
	}
}
