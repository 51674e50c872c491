package initrd

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"

	"github.com/pierrec/lz4/v4"
)

// lz4LegacyMagic starts an LZ4 legacy frame (CompressLZ4).
const lz4LegacyMagic = 0x184c2102

// ErrFormat is returned by Read for input that is not a well-formed newc archive.
var ErrFormat = errors.New("not a newc cpio archive")

// Read limits: an initrd is at most MaxSize compressed; these bound what a hostile input can
// make Read allocate.
const (
	maxReadTotal   = 256 << 20
	maxReadName    = 4096
	maxReadEntries = 1 << 20
)

// Read parses an initrd written by this package (or any single newc archive, optionally
// gzip- or LZ4-compressed) and returns its entries in archive order, without the trailer. It is used
// by tests and by tools that inspect a guest bundle, so it treats its input as untrusted:
// sizes are bounded and paths validated.
func Read(data []byte) ([]Entry, error) {
	var r io.Reader = bytes.NewReader(data)
	if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("initrd gzip: %w", err)
		}
		zr.Multistream(false)
		r = zr
	} else if len(data) >= 4 && binary.LittleEndian.Uint32(data) == lz4LegacyMagic {
		r = lz4.NewReader(r)
	}
	br := bufio.NewReader(io.LimitReader(r, maxReadTotal+1))
	var (
		out   []Entry
		total int
	)
	for {
		var hdr [headerLen]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return nil, fmt.Errorf("initrd entry %d header: %w: %v", len(out), ErrFormat, err)
		}
		total += headerLen
		if string(hdr[:6]) != magic {
			return nil, fmt.Errorf("initrd entry %d: magic %q: %w", len(out), hdr[:6], ErrFormat)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("initrd entry %d: header field %d: %w", len(out), i, ErrFormat)
			}
			f[i] = uint32(v)
		}
		mode, size, rmaj, rmin, namesize := f[1], int(f[6]), f[9], f[10], int(f[11])
		if namesize < 2 || namesize > maxReadName {
			return nil, fmt.Errorf("initrd entry %d: name size %d: %w", len(out), namesize, ErrFormat)
		}
		name := make([]byte, namesize)
		if _, err := io.ReadFull(br, name); err != nil {
			return nil, fmt.Errorf("initrd entry %d name: %w: %v", len(out), ErrFormat, err)
		}
		if name[namesize-1] != 0 || bytes.IndexByte(name[:namesize-1], 0) >= 0 {
			return nil, fmt.Errorf("initrd entry %d: name not NUL-terminated: %w", len(out), ErrFormat)
		}
		if err := skipPad(br, headerLen+namesize); err != nil {
			return nil, err
		}
		total += namesize
		p := string(name[:namesize-1])
		if p == trailer {
			return out, nil
		}
		if size > maxReadTotal-total {
			return nil, fmt.Errorf("initrd entry %q: size %d: %w", p, size, ErrTooLarge)
		}
		data := make([]byte, size)
		if _, err := io.ReadFull(br, data); err != nil {
			return nil, fmt.Errorf("initrd entry %q data: %w: %v", p, ErrFormat, err)
		}
		if err := skipPad(br, size); err != nil {
			return nil, err
		}
		total += size
		if len(out) >= maxReadEntries {
			return nil, fmt.Errorf("initrd: more than %d entries: %w", maxReadEntries, ErrTooLarge)
		}
		if p == "." {
			continue // some writers emit the root directory; ours does not
		}
		clean, err := CleanPath(p)
		if err != nil || clean != p {
			return nil, fmt.Errorf("initrd entry %q: %w", p, ErrBadPath)
		}
		e := Entry{Path: p, Mode: fs.FileMode(mode & 0o777)}
		if mode&0o4000 != 0 {
			e.Mode |= fs.ModeSetuid
		}
		if mode&0o2000 != 0 {
			e.Mode |= fs.ModeSetgid
		}
		if mode&0o1000 != 0 {
			e.Mode |= fs.ModeSticky
		}
		switch mode & modeTypeMask {
		case modeRegular:
			e.Data = data
		case modeDir:
			e.Mode |= fs.ModeDir
		case modeSymlink:
			e.Mode |= fs.ModeSymlink
			e.Data = data
		case modeCharDev:
			e.Mode |= fs.ModeDevice | fs.ModeCharDevice
			e.Major, e.Minor = rmaj, rmin
		default:
			return nil, fmt.Errorf("initrd entry %q: file type %#o: %w", p, mode&modeTypeMask, ErrFormat)
		}
		out = append(out, e)
	}
}

func skipPad(br *bufio.Reader, n int) error {
	for ; n%4 != 0; n++ {
		if _, err := br.ReadByte(); err != nil {
			return fmt.Errorf("initrd padding: %w: %v", ErrFormat, err)
		}
	}
	return nil
}
