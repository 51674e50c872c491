package pefseal

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Layout of the ESM cpio (svm-tools svm/svm.py `svm add`; the ultravisor's svm/svm-esm.c
// svm_esm_cpio_esmb reads it).
const (
	// CPIODir is where the ultravisor looks for the blob: the first non-empty file of the
	// prepended archive must be under it.
	CPIODir = "opt/ibm/pef"
	// BlobName is the blob's file name in CPIODir (the ultravisor does not care).
	BlobName = "sealpod-esm.dtb"
	// cpioBlock is the size the archive is padded to (GNU cpio's block; the ultravisor
	// hashes the initrd from the next 512-byte boundary after the trailer).
	cpioBlock     = 512
	newcMagic     = "070701"
	newcHeaderLen = 110
	cpioTrailer   = "TRAILER!!!"
	// MaxCPIO bounds the archive SplitInitrd scans for the blob.
	MaxCPIO = 2 << 20
)

// ErrNoESM is returned by SplitInitrd when the initrd does not start with an ESM cpio.
var ErrNoESM = errors.New("no ESM blob cpio at the start of the initrd")

func align4(n int) int { return (n + 3) &^ 3 }

// ESMCpio returns the newc archive `svm add` prepends to the initrd: the directories ".",
// "opt", "opt/ibm", "opt/ibm/pef" and the blob, the trailer, zero-padded to 512 bytes. Inode
// numbers count from 1 and times are 0, so equal blobs give equal archives.
func ESMCpio(blob []byte) []byte {
	var b bytes.Buffer
	ino := 0
	entry := func(name string, mode, nlink int, data []byte) {
		ino++
		fmt.Fprintf(&b, "%s%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			newcMagic, ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
		b.WriteString(name)
		b.WriteByte(0)
		b.Write(make([]byte, align4(b.Len())-b.Len()))
		b.Write(data)
		b.Write(make([]byte, align4(b.Len())-b.Len()))
	}
	entry(".", 0o40755, 3, nil)
	entry("opt", 0o40755, 3, nil)
	entry("opt/ibm", 0o40755, 3, nil)
	entry(CPIODir, 0o40755, 2, nil)
	entry(CPIODir+"/"+BlobName, 0o100644, 1, blob)
	// The trailer has inode 0 and one link, as GNU cpio writes it.
	fmt.Fprintf(&b, "%s%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\x00",
		newcMagic, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(cpioTrailer)+1, 0, cpioTrailer)
	b.Write(make([]byte, align4(b.Len())-b.Len()))
	b.Write(make([]byte, (cpioBlock-b.Len()%cpioBlock)%cpioBlock))
	return b.Bytes()
}

func parseHex8(b []byte) (uint32, error) {
	var v uint32
	if len(b) != 8 {
		return 0, errors.New("short field")
	}
	for _, c := range b {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, fmt.Errorf("%q is not hex", b)
		}
		v = v<<4 | uint32(d)
	}
	return v, nil
}

// SplitInitrd finds the ESM blob in an initrd as the ultravisor does: newc entries from the
// start; the first non-empty file must be under opt/ibm/pef and is the blob; after the
// trailer, the rest of the initrd starts at the next 512-byte boundary. It returns the blob
// and the rest (what the initrd digest covers). It is stricter than the ultravisor: the blob
// must start with the devicetree magic, and the archive must end within MaxCPIO bytes.
func SplitInitrd(initrd []byte) (blob, rest []byte, err error) {
	off := 0
	for {
		if off > MaxCPIO {
			return nil, nil, fmt.Errorf("%w: no trailer in the first %d bytes", ErrNoESM, MaxCPIO)
		}
		if len(initrd)-off < newcHeaderLen || string(initrd[off:off+6]) != newcMagic {
			return nil, nil, fmt.Errorf("%w: no newc header at offset %d", ErrNoESM, off)
		}
		h := initrd[off : off+newcHeaderLen]
		nameSize, err := parseHex8(h[94:102])
		if err != nil {
			return nil, nil, fmt.Errorf("%w: entry at offset %d: c_namesize: %v", ErrNoESM, off, err)
		}
		fileSize, err := parseHex8(h[54:62])
		if err != nil {
			return nil, nil, fmt.Errorf("%w: entry at offset %d: c_filesize: %v", ErrNoESM, off, err)
		}
		if nameSize == 0 || int64(nameSize) > MaxCPIO || int64(fileSize) > MaxCPIO {
			return nil, nil, fmt.Errorf("%w: entry at offset %d: name of %d or file of %d bytes", ErrNoESM, off, nameSize, fileSize)
		}
		nameEnd := off + newcHeaderLen + int(nameSize)
		dataOff := align4(nameEnd)
		next := align4(dataOff + int(fileSize))
		if next > len(initrd) {
			return nil, nil, fmt.Errorf("%w: entry at offset %d runs past the end of the initrd", ErrNoESM, off)
		}
		name := string(initrd[off+newcHeaderLen : nameEnd-1])
		if initrd[nameEnd-1] != 0 || strings.IndexByte(name, 0) >= 0 {
			return nil, nil, fmt.Errorf("%w: entry at offset %d: name not NUL-terminated", ErrNoESM, off)
		}
		if name == cpioTrailer {
			if blob == nil {
				return nil, nil, fmt.Errorf("%w: the archive holds no file", ErrNoESM)
			}
			end := (next + cpioBlock - 1) / cpioBlock * cpioBlock
			if end > len(initrd) {
				return nil, nil, fmt.Errorf("%w: archive padding runs past the end of the initrd", ErrNoESM)
			}
			return blob, initrd[end:], nil
		}
		if fileSize > 0 && blob == nil {
			if !strings.HasPrefix(name, CPIODir) {
				return nil, nil, fmt.Errorf("%w: first file %q is not under %s", ErrNoESM, name, CPIODir)
			}
			blob = initrd[dataOff : dataOff+int(fileSize)]
			if len(blob) < 4 || string(blob[:4]) != "\xd0\x0d\xfe\xed" {
				return nil, nil, fmt.Errorf("%w: %s is not a devicetree", ErrNoESM, name)
			}
		}
		off = next
	}
}
