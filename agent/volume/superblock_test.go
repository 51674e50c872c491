package volume

import (
	"encoding/binary"
	"errors"
	"testing"
)

// testSuperblock builds a sector-0 area in the format Open creates, from the offsets in
// linux drivers/md/dm-integrity.c (struct superblock).
func testSuperblock(mut func(b []byte)) []byte {
	b := make([]byte, SuperblockSize)
	copy(b, "integrt\x00")
	b[8] = 5                                     // version (fix_hmac)
	b[9] = 15                                    // log2_interleave_sectors (32768)
	binary.LittleEndian.PutUint16(b[10:], 32)    // integrity_tag_size
	binary.LittleEndian.PutUint32(b[12:], 4)     // journal_sections
	binary.LittleEndian.PutUint64(b[16:], 60000) // provided_data_sectors
	binary.LittleEndian.PutUint32(b[24:], 0x19)  // journal MAC | fixed padding | fixed HMAC
	for i := 48; i < 64; i++ {
		b[i] = byte(i) // salt
	}
	for i := 480; i < 512; i++ {
		b[i] = 0xee // superblock MAC
	}
	if mut != nil {
		mut(b)
	}
	return b
}

func TestProbe(t *testing.T) {
	cases := []struct {
		name    string
		head    []byte
		state   State
		sectors uint64
		err     error
	}{
		{"zeros", make([]byte, SuperblockSize), StateEmpty, 0, nil},
		{"zeros, longer read", make([]byte, 2*SuperblockSize), StateEmpty, 0, nil},
		{"superblock", testSuperblock(nil), StateIntegrity, 60000, nil},
		{"one byte at the end of the area", testSuperblock(func(b []byte) { clear(b); b[SuperblockSize-1] = 1 }), 0, 0, ErrUnknownContent},
		{"ext4 at 1024", testSuperblock(func(b []byte) { clear(b); b[1024+56], b[1024+57] = 0x53, 0xef }), 0, 0, ErrUnknownContent},
		{"LUKS header", testSuperblock(func(b []byte) { clear(b); copy(b, "LUKS\xba\xbe") }), 0, 0, ErrUnknownContent},
		{"magic typo", testSuperblock(func(b []byte) { b[0] = 'I' }), 0, 0, ErrUnknownContent},
		{"version 4", testSuperblock(func(b []byte) { b[8] = 4 }), 0, 0, ErrBadSuperblock},
		{"tag size 4", testSuperblock(func(b []byte) { b[10] = 4 }), 0, 0, ErrBadSuperblock},
		{"no fixed hmac", testSuperblock(func(b []byte) { b[24] = 0x9 }), 0, 0, ErrBadSuperblock},
		{"no journal mac", testSuperblock(func(b []byte) { b[24] = 0x18 }), 0, 0, ErrBadSuperblock},
		{"4k blocks", testSuperblock(func(b []byte) { b[28] = 3 }), 0, 0, ErrBadSuperblock},
		{"no journal", testSuperblock(func(b []byte) { binary.LittleEndian.PutUint32(b[12:], 0) }), 0, 0, ErrBadSuperblock},
		{"no sectors", testSuperblock(func(b []byte) { binary.LittleEndian.PutUint64(b[16:], 0) }), 0, 0, ErrBadSuperblock},
		{"huge", testSuperblock(func(b []byte) { binary.LittleEndian.PutUint64(b[16:], 1<<63) }), 0, 0, ErrBadSuperblock},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, sb, err := Probe(c.head)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err = %v, want %v", err, c.err)
				}
				return
			}
			if err != nil || st != c.state {
				t.Fatalf("Probe = %v, %v; want %v", st, err, c.state)
			}
			if c.state == StateIntegrity && sb.ProvidedDataSectors != c.sectors {
				t.Fatalf("sectors = %d, want %d", sb.ProvidedDataSectors, c.sectors)
			}
		})
	}
	if _, _, err := Probe(make([]byte, SuperblockSize-1)); err == nil {
		t.Fatal("short read accepted")
	}
}

// FuzzProbe: the first 4 KiB of the device come from the host.
func FuzzProbe(f *testing.F) {
	f.Add(make([]byte, SuperblockSize))
	f.Add(testSuperblock(nil))
	f.Add(testSuperblock(func(b []byte) { b[8] = 9 }))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < SuperblockSize {
			b = append(b, make([]byte, SuperblockSize-len(b))...)
		}
		st, sb, err := Probe(b)
		if err != nil {
			if st != 0 || sb != nil {
				t.Fatalf("error with result: %v %v", st, sb)
			}
			return
		}
		switch st {
		case StateEmpty:
			for _, c := range b[:SuperblockSize] {
				if c != 0 {
					t.Fatal("non-zero area probed empty")
				}
			}
		case StateIntegrity:
			if sb.ProvidedDataSectors == 0 || sb.ProvidedDataSectors > maxSectors || sb.TagSize != tagSize || sb.Version != 5 {
				t.Fatalf("accepted %+v", sb)
			}
		default:
			t.Fatalf("state %v", st)
		}
	})
}

// FuzzParseSuperblock: any length, never panics, accepts only in-range values.
func FuzzParseSuperblock(f *testing.F) {
	f.Add(testSuperblock(nil)[:64])
	f.Add([]byte("integrt\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sb, err := ParseSuperblock(b)
		if err == nil && (sb.ProvidedDataSectors == 0 || sb.JournalSections == 0 || sb.Flags&0x11 != 0x11) {
			t.Fatalf("accepted %+v", sb)
		}
	})
}
