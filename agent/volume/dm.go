package volume

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A small, bounded device-mapper ioctl layer (linux include/uapi/linux/dm-ioctl.h, interface
// version 4): create a device, load a table, resume (activate) it, remove it. Only the
// commands and fields this package needs.

// ControlPath is the device-mapper control node (devtmpfs creates it as mapper/control).
const ControlPath = "/dev/mapper/control"

// struct dm_ioctl layout (dm-ioctl.h), native-endian, 312 bytes:
//
//	0   version[3]   u32 ×3  (4, 0, 0: the kernel accepts any minor ≥ ours)
//	12  data_size    u32     total buffer size, header included
//	16  data_start   u32     offset of the payload (target specs) from the buffer start
//	20  target_count u32
//	24  open_count   s32     (out)
//	28  flags        u32
//	32  event_nr     u32
//	36  padding      u32
//	40  dev          u64     (out) huge_encode_dev(major, minor)
//	48  name[128]
//	176 uuid[129]
//	305 data[7]              padding to 312
//
// struct dm_target_spec, 40 bytes, followed by the NUL-terminated parameter string, the whole
// padded to 8 bytes; next = bytes from this spec to the next:
//
//	0   sector_start u64
//	8   length       u64
//	16  status       s32
//	20  next         u32
//	24  target_type[16]
const (
	dmHeaderSize   = 312
	dmSpecSize     = 40
	dmNameLen      = 128
	dmUUIDLen      = 129
	dmTypeLen      = 16
	dmVersionMajor = 4
	// dmBufferSize is the buffer for commands that return data (libdevmapper's default).
	dmBufferSize = 16 << 10
	// dmMaxParams bounds one target's parameter string.
	dmMaxParams = 4096
)

// Command numbers: _IOWR(0xfd, nr, struct dm_ioctl).
const (
	dmDevCreate  = unix.DM_DEV_CREATE
	dmDevRemove  = unix.DM_DEV_REMOVE
	dmDevSuspend = unix.DM_DEV_SUSPEND
	dmTableLoad  = unix.DM_TABLE_LOAD
)

// dmSecureDataFlag makes the kernel wipe its copy of the buffer (it holds keys). Without
// DM_SUSPEND_FLAG, DM_DEV_SUSPEND resumes.
const dmSecureDataFlag = unix.DM_SECURE_DATA_FLAG

// encodeIoctl builds the ioctl buffer for device name (and uuid, for create) with the given
// flags and targets. The result holds the targets' parameters (keys): wipe it after use.
func encodeIoctl(name, uuid string, flags uint32, targets []target) ([]byte, error) {
	if name == "" || len(name) >= dmNameLen {
		return nil, fmt.Errorf("device-mapper name %q: want 1..%d bytes", name, dmNameLen-1)
	}
	if len(uuid) >= dmUUIDLen {
		return nil, fmt.Errorf("device-mapper uuid %q: want at most %d bytes", uuid, dmUUIDLen-1)
	}
	size := dmHeaderSize
	for i, t := range targets {
		if t.Type == "" || len(t.Type) >= dmTypeLen {
			return nil, fmt.Errorf("target %d: type %q: want 1..%d bytes", i, t.Type, dmTypeLen-1)
		}
		if len(t.Params) >= dmMaxParams {
			return nil, fmt.Errorf("target %d: parameters: %d bytes, limit %d", i, len(t.Params), dmMaxParams)
		}
		size += specSize(t)
	}
	if len(targets) == 0 && size < dmBufferSize {
		size = dmBufferSize // room for what the kernel returns
	}
	b := make([]byte, size)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], dmVersionMajor)
	ne.PutUint32(b[12:], uint32(size))
	ne.PutUint32(b[16:], dmHeaderSize)
	ne.PutUint32(b[20:], uint32(len(targets)))
	ne.PutUint32(b[28:], flags)
	copy(b[48:48+dmNameLen], name)
	copy(b[176:176+dmUUIDLen], uuid)
	off := dmHeaderSize
	for _, t := range targets {
		n := specSize(t)
		ne.PutUint64(b[off:], t.Start)
		ne.PutUint64(b[off+8:], t.Length)
		ne.PutUint32(b[off+20:], uint32(n))
		copy(b[off+24:off+24+dmTypeLen], t.Type)
		copy(b[off+dmSpecSize:], t.Params)
		off += n
	}
	return b, nil
}

// specSize is a target spec's size: header, parameters, NUL, padded to 8.
func specSize(t target) int {
	return (dmSpecSize + len(t.Params) + 1 + 7) &^ 7
}

// decodeDev returns the dev field of an ioctl result.
func decodeDev(b []byte) uint64 { return binary.NativeEndian.Uint64(b[40:]) }

// ErrNoDeviceMapper is returned when the kernel has no device-mapper (no control node).
var ErrNoDeviceMapper = errors.New("no device-mapper in this kernel (" + ControlPath + ")")

// control is an open device-mapper control node.
type control struct{ f *os.File }

func openControl() (*control, error) {
	f, err := os.OpenFile(ControlPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoDeviceMapper
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", ControlPath, err)
	}
	return &control{f: f}, nil
}

func (c *control) Close() error { return c.f.Close() }

// DMError is a failed device-mapper command; Errno is what the kernel returned (a target's
// constructor error for a table load, e.g. EILSEQ for a dm-integrity superblock MAC mismatch).
type DMError struct {
	Op, Name string
	Errno    unix.Errno
}

func (e *DMError) Error() string {
	return fmt.Sprintf("device-mapper %s %s: %v", e.Op, e.Name, e.Errno)
}
func (e *DMError) Unwrap() error { return e.Errno }

func (c *control) do(op string, req uint, name, uuid string, flags uint32, targets []target) ([]byte, error) {
	b, err := encodeIoctl(name, uuid, flags, targets)
	if err != nil {
		return nil, fmt.Errorf("device-mapper %s: %w", op, err)
	}
	conn, err := c.f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var errno unix.Errno
	if err := conn.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(unsafe.Pointer(&b[0])))
	}); err != nil {
		return nil, err
	}
	runtime.KeepAlive(b)
	if errno != 0 {
		clear(b)
		return nil, &DMError{Op: op, Name: name, Errno: errno}
	}
	return b, nil
}

// create makes an empty device (no table).
func (c *control) create(name, uuid string) error {
	_, err := c.do("create", dmDevCreate, name, uuid, 0, nil)
	return err
}

// load loads targets as the device's inactive table (read-only: the device refuses writes).
// The kernel runs the targets' constructors now (dm-integrity reads, and for a new volume
// writes, its superblock here).
func (c *control) load(name string, targets []target, readOnly bool) error {
	flags := uint32(dmSecureDataFlag)
	if readOnly {
		flags |= unix.DM_READONLY_FLAG
	}
	b, err := c.do("load table", dmTableLoad, name, "", flags, targets)
	clear(b)
	return err
}

// resume activates the loaded table and returns the device number.
func (c *control) resume(name string) (uint64, error) {
	b, err := c.do("resume", dmDevSuspend, name, "", 0, nil)
	if err != nil {
		return 0, err
	}
	return decodeDev(b), nil
}

// remove removes the device (suspending it first: dm-integrity flushes its journal).
func (c *control) remove(name string) error {
	_, err := c.do("remove", dmDevRemove, name, "", 0, nil)
	return err
}
