package volume

import (
	"bytes"
	"strings"
	"testing"
)

func fixedKeys() *Keys {
	return &Keys{
		Crypt:      bytes.Repeat([]byte{0x11}, 64),
		Integrity:  bytes.Repeat([]byte{0x22}, 32),
		JournalMAC: bytes.Repeat([]byte{0x33}, 32),
	}
}

// TestTargets pins the kernel table lines (part of the on-disk format, docs/volumes.md).
func TestTargets(t *testing.T) {
	k := fixedKeys()
	cases := []struct {
		name string
		tg   target
		typ  string
		want string
	}{
		{"integrity", integrityTarget("254:16", 1000, k), "integrity",
			"254:16 0 32 J 4 internal_hash:hmac(sha256):" + strings.Repeat("22", 32) +
				" journal_mac:hmac(sha256):" + strings.Repeat("33", 32) + " fix_padding fix_hmac"},
		{"crypt", cryptTarget("253:0", 1000, k), "crypt",
			"aes-xts-plain64 " + strings.Repeat("11", 64) + " 0 253:0 0"},
		{"linear", linearTarget("253:1", 8, 1000), "linear", "253:1 8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.tg.Type != c.typ || c.tg.Start != 0 || c.tg.Length != 1000 {
				t.Errorf("target %s %d+%d", c.tg.Type, c.tg.Start, c.tg.Length)
			}
			if string(c.tg.Params) != c.want {
				t.Errorf("params\n got %s\nwant %s", c.tg.Params, c.want)
			}
			c.tg.wipe()
			if !bytes.Equal(c.tg.Params, make([]byte, len(c.tg.Params))) {
				t.Error("wipe left key material")
			}
		})
	}
}
