package volume

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

const testIdentity = "db/data-web-0"

func testHeader() Header {
	return Header{IdentityDigest: sha256.Sum256([]byte(testIdentity)), Mode: ModeFilesystem, Generation: 7, DataOffset: HeaderSectors, DataSectors: 60000 - HeaderSectors}
}

// TestHeaderLayout checks the encoding against the byte offsets documented in docs/volumes.md,
// written out here independently of encode.
func TestHeaderLayout(t *testing.T) {
	h := testHeader()
	h.Mode = ModeBlock
	b := h.encode()
	if len(b) != HeaderSize {
		t.Fatalf("encoded %d bytes, want %d", len(b), HeaderSize)
	}
	want := make([]byte, HeaderSize)
	copy(want, "sealpodv")
	want[11] = 1 // version, u32be
	want[12] = 2 // mode Block
	d := sha256.Sum256([]byte("db/data-web-0"))
	copy(want[16:48], d[:])
	want[55] = 7    // generation, u64be
	want[63] = 8    // data offset in sectors
	want[70] = 0xea // 59992 = 0xea58
	want[71] = 0x58
	if !bytes.Equal(b, want) {
		t.Fatalf("header bytes differ from the documented layout:\n got %x\nwant %x", b[:80], want[:80])
	}
	got, err := decodeHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if *got != h {
		t.Fatalf("round trip: %+v, want %+v", *got, h)
	}
}

func TestDecodeHeaderRejects(t *testing.T) {
	good := testHeader().encode()
	mut := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"short", good[:4095], "4095 bytes"},
		{"zero", make([]byte, HeaderSize), "no header"},
		{"magic", mut(func(b []byte) { b[0] = 'S' }), "magic"},
		{"version", mut(func(b []byte) { b[11] = 2 }), "version 2"},
		{"mode 0", mut(func(b []byte) { b[12] = 0 }), "mode 0"},
		{"mode 3", mut(func(b []byte) { b[12] = 3 }), "mode 3"},
		{"reserved 13", mut(func(b []byte) { b[13] = 1 }), "reserved"},
		{"data offset", mut(func(b []byte) { b[63] = 9 }), "data offset 9"},
		{"no data", mut(func(b []byte) { clear(b[64:72]) }), "data sectors 0"},
		{"huge data", mut(func(b []byte) { b[64] = 0x01 }), "data sectors"},
		{"tail", mut(func(b []byte) { b[4095] = 1 }), "reserved"},
		{"after fields", mut(func(b []byte) { b[72] = 1 }), "reserved"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeHeader(c.b)
			if err == nil || !errors.Is(err, ErrBadHeader) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrBadHeader containing %q", err, c.want)
			}
		})
	}
	if _, err := decodeHeader(make([]byte, HeaderSize)); !errors.Is(err, errNoHeader) {
		t.Fatalf("zero block: err = %v, want errNoHeader", err)
	}
}

func TestHeaderCheck(t *testing.T) {
	h := testHeader()
	cases := []struct {
		name     string
		identity string
		mode     Mode
		sectors  uint64
		want     error
		msg      string
	}{
		{"ok", testIdentity, ModeFilesystem, 60000, nil, ""},
		{"other identity", "db/data-web-1", ModeFilesystem, 60000, ErrWrongIdentity, "db/data-web-1"},
		{"mode", testIdentity, ModeBlock, 60000, ErrBadHeader, "formatted as Filesystem, opened as Block"},
		{"size", testIdentity, ModeFilesystem, 60008, ErrBadHeader, "60008"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := h.check(c.identity, c.mode, c.sectors)
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, c.want, c.msg)
			}
		})
	}
}

func FuzzHeader(f *testing.F) {
	f.Add(testHeader().encode())
	f.Add(make([]byte, HeaderSize))
	f.Add([]byte("sealpodv"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHeader(b)
		if err != nil {
			if h != nil {
				t.Fatal("header with error")
			}
			return
		}
		// Whatever decodes re-encodes to the same bytes (no ignored field).
		if !bytes.Equal(h.encode(), b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func TestDecide(t *testing.T) {
	cases := []struct {
		v, c, p uint64
		ok      bool
		msg     string
	}{
		{0, 0, 1, true, ""}, // new volume
		{1, 1, 2, true, ""}, // normal reopen
		{2, 1, 2, true, ""}, // crash after the header write, before Commit
		{5, 5, 6, true, ""},
		{1, 2, 3, false, "header generation 1 is older than the broker's committed generation 2"},
		{0, 4, 5, false, "header generation 0 is older than the broker's committed generation 4"},
		{4, 2, 3, false, "header generation 4 is newer than the broker's pending generation 3"},
	}
	for _, c := range cases {
		err := decide(testIdentity, c.v, c.c, c.p)
		if c.ok != (err == nil) {
			t.Errorf("decide(%d, %d, %d) = %v, want ok=%v", c.v, c.c, c.p, err, c.ok)
			continue
		}
		if err != nil && (!errors.Is(err, ErrRollback) || !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), "volume "+testIdentity)) {
			t.Errorf("decide(%d, %d, %d) = %v, want ErrRollback naming the claim and %q", c.v, c.c, c.p, err, c.msg)
		}
	}
}

func TestCheckBegin(t *testing.T) {
	cases := []struct {
		c, p uint64
		ok   bool
	}{
		{0, 1, true}, {41, 42, true}, {0, 0, false}, {3, 5, false}, {3, 3, false}, {1<<64 - 1, 0, false},
	}
	for _, c := range cases {
		err := checkBegin(testIdentity, c.c, c.p)
		if c.ok != (err == nil) {
			t.Errorf("checkBegin(%d, %d) = %v, want ok=%v", c.c, c.p, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), testIdentity) {
			t.Errorf("error does not name the claim: %v", err)
		}
	}
}

func TestPlanFormat(t *testing.T) {
	cases := []struct {
		name  string
		c     uint64
		allow bool
		want  error
	}{
		{"first use", 0, true, nil},
		{"not allowed", 0, false, ErrNotFormatted},
		// The volume was committed before: an empty device is the host wiping it, never formatted.
		{"wiped after use", 3, true, ErrRollback},
		{"wiped after use, not allowed", 3, false, ErrRollback},
	}
	for _, c := range cases {
		err := planFormat(testIdentity, c.c, c.allow)
		if !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
}

// fakeBroker is the broker's generation protocol (kbs volume begin/commit) in memory: Begin
// keeps one pending generation until it is committed; Commit accepts only the pending one.
// failBegin and failCommit simulate a crash right after Begin's answer (the broker recorded
// the pending generation, the guest never got further) and right before Commit.
type fakeBroker struct {
	committed, pending    uint64
	begins, commits       int
	failBegin, failCommit bool
}

var errCrash = errors.New("simulated crash")

func (b *fakeBroker) Begin(_ context.Context, identity string) (uint64, uint64, error) {
	b.begins++
	if b.pending == 0 {
		b.pending = b.committed + 1
	}
	if b.failBegin {
		return 0, 0, errCrash
	}
	return b.committed, b.pending, nil
}

func (b *fakeBroker) Commit(_ context.Context, identity string, gen uint64) error {
	if b.failCommit {
		return errCrash
	}
	if gen != b.pending {
		return errors.New("commit of a generation that is not pending")
	}
	b.committed, b.pending = gen, 0
	b.commits++
	return nil
}

// memHeader is a header block in memory; writes counts durable writes; failWrite makes the
// next write fail without writing (a crash during the write).
type memHeader struct {
	b         []byte
	writes    int
	failWrite bool
}

func (m *memHeader) readHeader() ([]byte, error) { return bytes.Clone(m.b), nil }
func (m *memHeader) writeHeader(b []byte) error {
	if m.failWrite {
		m.failWrite = false
		return errCrash
	}
	m.b = bytes.Clone(b)
	m.writes++
	return nil
}

func (m *memHeader) generation(t *testing.T) uint64 {
	t.Helper()
	h, err := decodeHeader(m.b)
	if err != nil {
		t.Fatal(err)
	}
	return h.Generation
}

// bumpOnce is one open's generation protocol: Begin, then advance.
func bumpOnce(b *fakeBroker, hdr *memHeader) (uint64, error) {
	ctx := context.Background()
	c, p, err := begin(ctx, b, testIdentity)
	if err != nil {
		return 0, err
	}
	return advance(ctx, b, testIdentity, c, p, hdr, ModeFilesystem, 60000)
}

// TestGenerationsProtocol runs the two-phase bump against the fake broker: normal opens,
// the two crash points, and a restored older copy of the header.
func TestGenerationsProtocol(t *testing.T) {
	h := testHeader()
	h.Generation = 0
	hdr := &memHeader{b: h.encode()} // as format leaves it
	b := &fakeBroker{}

	if g, err := bumpOnce(b, hdr); err != nil || g != 1 || b.committed != 1 || hdr.generation(t) != 1 {
		t.Fatalf("first open: gen %d, %v; broker %+v, header %d", g, err, b, hdr.generation(t))
	}
	old := bytes.Clone(hdr.b) // the host keeps a copy at generation 1
	if g, err := bumpOnce(b, hdr); err != nil || g != 2 {
		t.Fatalf("second open: gen %d, %v", g, err)
	}

	// Crash between Begin and the header write: the broker holds pending 3, the header says 2.
	b.failBegin = true
	if _, err := bumpOnce(b, hdr); !errors.Is(err, errCrash) {
		t.Fatalf("crash before write: %v", err)
	}
	b.failBegin = false
	if b.pending != 3 || hdr.generation(t) != 2 {
		t.Fatalf("after crash before write: broker %+v, header %d", b, hdr.generation(t))
	}
	if g, err := bumpOnce(b, hdr); err != nil || g != 3 || b.committed != 3 {
		t.Fatalf("open after crash before write: gen %d, %v, broker %+v", g, err, b)
	}

	// Crash during the header write: nothing may be committed before the header holds the
	// new generation, or the volume would be refused from now on.
	hdr.failWrite = true
	if _, err := bumpOnce(b, hdr); !errors.Is(err, errCrash) {
		t.Fatalf("crash during write: %v", err)
	}
	if b.committed != 3 || b.pending != 4 || hdr.generation(t) != 3 {
		t.Fatalf("after crash during write: broker %+v, header %d", b, hdr.generation(t))
	}

	// Crash after the header write, before Commit: the header says 4, the broker 3 (pending 4).
	b.failCommit = true
	if _, err := bumpOnce(b, hdr); !errors.Is(err, errCrash) {
		t.Fatalf("crash before commit: %v", err)
	}
	b.failCommit = false
	if b.committed != 3 || b.pending != 4 || hdr.generation(t) != 4 {
		t.Fatalf("after crash before commit: broker %+v, header %d", b, hdr.generation(t))
	}
	if g, err := bumpOnce(b, hdr); err != nil || g != 4 || b.committed != 4 || hdr.generation(t) != 4 {
		t.Fatalf("open after crash before commit: gen %d, %v, broker %+v", g, err, b)
	}

	// The host restores the copy at generation 1.
	writes := hdr.writes
	hdr.b = old
	_, err := bumpOnce(b, hdr)
	if !errors.Is(err, ErrRollback) || !strings.Contains(err.Error(), "header generation 1 is older than the broker's committed generation 4") {
		t.Fatalf("restored copy: err = %v, want ErrRollback naming 1 and 4", err)
	}
	if hdr.writes != writes || !bytes.Equal(hdr.b, old) {
		t.Fatal("a refused volume's header was written")
	}
	if b.committed != 4 {
		t.Fatalf("a refused open committed: %+v", b)
	}
}

// TestAdvanceRefusesForeignHeaders: a header of another identity, an unreadable or a zero
// header is refused before anything is written or committed.
func TestAdvanceRefusesForeignHeaders(t *testing.T) {
	other := testHeader()
	other.IdentityDigest = sha256.Sum256([]byte("db/data-web-1"))
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"other identity", other.encode(), ErrWrongIdentity},
		{"garbage", bytes.Repeat([]byte{0xaa}, HeaderSize), ErrBadHeader},
		{"zero after commit", make([]byte, HeaderSize), ErrRollback},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hdr := &memHeader{b: bytes.Clone(c.b)}
			b := &fakeBroker{committed: 7}
			_, err := bumpOnce(b, hdr)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if hdr.writes != 0 || b.commits != 0 {
				t.Fatalf("refused header: %d writes, %d commits", hdr.writes, b.commits)
			}
		})
	}
}

func TestHeaderBinaryFields(t *testing.T) {
	// Generation is the full u64 range.
	h := testHeader()
	h.Generation = 1<<64 - 2
	got, err := decodeHeader(h.encode())
	if err != nil || got.Generation != h.Generation || binary.BigEndian.Uint64(h.encode()[48:]) != h.Generation {
		t.Fatalf("generation %d: %+v, %v", h.Generation, got, err)
	}
}
