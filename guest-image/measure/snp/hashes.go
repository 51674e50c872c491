package snp

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/sealpod/sealpod/guest-image/measure/ovmf"
)

// GUIDs of the SEV hashes table QEMU writes for measured direct kernel boot.
var (
	hashTableHeaderGUID = ovmf.MustGUID("9438d606-4f22-4cc9-b479-a793d411fd21")
	kernelEntryGUID     = ovmf.MustGUID("4de79437-abd2-427f-b835-d5b172d2045b")
	initrdEntryGUID     = ovmf.MustGUID("44baf731-3a2f-4bd7-9af1-41e29169781d")
	cmdlineEntryGUID    = ovmf.MustGUID("97d02dd8-bd20-4c94-aa78-e7714d36ab2a")
)

const (
	hashEntrySize   = 16 + 2 + sha256.Size       // GUID, u16 length, SHA-256
	hashTableSize   = 16 + 2 + 3*hashEntrySize   // 168 bytes
	paddedTableSize = (hashTableSize + 15) &^ 15 // 176 bytes, as QEMU pads it
)

// BootHashes are the SHA-256 digests QEMU puts into the SEV hashes table.
type BootHashes struct {
	Kernel  [sha256.Size]byte
	Initrd  [sha256.Size]byte
	Cmdline [sha256.Size]byte
}

// HashBoot hashes the direct-boot artifacts as QEMU does: the command line with its
// terminating NUL (an empty command line is a single NUL), an absent initrd as empty. Large
// kernel and initrd are hashed concurrently.
func HashBoot(kernel, initrd []byte, cmdline string) BootHashes {
	h := BootHashes{Cmdline: sha256.Sum256(append([]byte(cmdline), 0))}
	if len(kernel) < 1<<20 || len(initrd) < 1<<20 {
		h.Kernel, h.Initrd = sha256.Sum256(kernel), sha256.Sum256(initrd)
		return h
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Initrd = sha256.Sum256(initrd)
	}()
	h.Kernel = sha256.Sum256(kernel)
	<-done
	return h
}

// table returns the padded SEV hashes table (cmdline, initrd, kernel entries, in QEMU's order).
func (h *BootHashes) table() []byte {
	t := make([]byte, paddedTableSize)
	copy(t[0:16], hashTableHeaderGUID[:])
	binary.LittleEndian.PutUint16(t[16:], hashTableSize)
	off := 18
	for _, e := range []struct {
		guid ovmf.GUID
		sum  *[sha256.Size]byte
	}{{cmdlineEntryGUID, &h.Cmdline}, {initrdEntryGUID, &h.Initrd}, {kernelEntryGUID, &h.Kernel}} {
		copy(t[off:], e.guid[:])
		binary.LittleEndian.PutUint16(t[off+16:], hashEntrySize)
		copy(t[off+18:], e.sum[:])
		off += hashEntrySize
	}
	return t
}

// page returns the 4 KiB page holding the table at offsetInPage (which must leave room for it).
func (h *BootHashes) page(offsetInPage int) []byte {
	p := make([]byte, pageSize)
	copy(p[offsetInPage:], h.table())
	return p
}
