// Package vport finds and serves virtio-serial ports inside the guest. QEMU names a port
// (`-device virtserialport,name=sealpod.agent`); the kernel exposes the name in
// /sys/class/virtio-ports/vportNpM/name and the port as /dev/vportNpM (there is no udev in the
// guest to make /dev/virtio-ports/<name> links).
package vport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SysClass is where the kernel lists virtio-serial ports.
const SysClass = "/sys/class/virtio-ports"

// ErrNotFound: no port has that name.
var ErrNotFound = errors.New("virtio-serial port not found")

// Find returns the device path of the port named name, looking under sysDir (SysClass) and
// devDir (/dev).
func Find(sysDir, devDir, name string) (string, error) {
	entries, err := os.ReadDir(sysDir)
	if err != nil {
		return "", fmt.Errorf("find port %s: %w", name, err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(sysDir, e.Name(), "name"))
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(b)) == name {
			return filepath.Join(devDir, e.Name()), nil
		}
	}
	return "", fmt.Errorf("port %s: %w", name, ErrNotFound)
}

// Wait polls for the port until it appears or ctx ends (the driver probes asynchronously).
func Wait(ctx context.Context, name string) (string, error) {
	for {
		p, err := Find(SysClass, "/dev", name)
		if err == nil {
			if _, err = os.Stat(p); err == nil {
				return p, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("wait for port %s: %w (last: %v)", name, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Open opens a port for reading and writing.
func Open(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open port %s: %w", path, err)
	}
	return f, nil
}

// ttrpc framing: a 10-byte header (length, stream id, type, flags; big endian) and the payload.
const (
	frameHeader     = 10
	frameMax        = 4 << 20
	typeRequest     = 1
	firstClientSeed = 1 // a new ttrpc client's first stream id
)

// Listener serves a port as a stream of ttrpc connections, one at a time.
//
// A virtio-serial port is one byte stream for the life of the guest, but the host may close
// and re-open its end (a shim restart). Two signs end a connection so that the next Accept
// starts a fresh ttrpc session: reads return EOF (the guest saw the host disconnect; the
// device is closed and reopened), or a request with stream id 1 arrives on a connection that
// already carried requests (the host reconnected before the guest noticed: a new ttrpc
// client always starts at stream 1; that frame is handed to the next connection).
type Listener struct {
	open func() (io.ReadWriteCloser, error)
	name string
	// MinLife: a connection that ends sooner than this delays the next Accept by Backoff
	// (the host side is not connected and reads return EOF at once).
	MinLife, Backoff time.Duration

	mu      sync.Mutex
	dev     io.ReadWriteCloser // open device, nil when closed
	pending []byte             // bytes read for the next connection
	cur     *conn
	closed  chan struct{}
	once    sync.Once
}

// NewListener returns a listener on the port device path.
func NewListener(path string) *Listener {
	return NewListenerFunc(path, func() (io.ReadWriteCloser, error) { return Open(path) })
}

// NewListenerFunc returns a listener that opens its device with open (tests).
func NewListenerFunc(name string, open func() (io.ReadWriteCloser, error)) *Listener {
	return &Listener{open: open, name: name, MinLife: time.Second, Backoff: 200 * time.Millisecond, closed: make(chan struct{})}
}

// Accept waits for the previous connection to end and returns the next one.
func (l *Listener) Accept() (net.Conn, error) {
	l.mu.Lock()
	prev := l.cur
	l.mu.Unlock()
	if prev != nil {
		select {
		case <-prev.done:
		case <-l.closed:
			return nil, net.ErrClosed
		}
		if !prev.restart.Load() && time.Since(prev.opened) < l.MinLife {
			select {
			case <-time.After(l.Backoff):
			case <-l.closed:
				return nil, net.ErrClosed
			}
		}
	}
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dev == nil {
		d, err := l.open()
		if err != nil {
			return nil, err
		}
		l.dev = d
	}
	c := &conn{l: l, dev: l.dev, partial: l.pending, opened: time.Now(), done: make(chan struct{})}
	l.pending = nil
	l.cur = c
	return c, nil
}

// Close stops Accept and closes the device.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	l.mu.Lock()
	c, d := l.cur, l.dev
	l.dev = nil
	l.mu.Unlock()
	if c != nil {
		c.Close()
	}
	if d != nil {
		return d.Close()
	}
	return nil
}

// Addr names the port.
func (l *Listener) Addr() net.Addr { return addr(l.name) }

type addr string

func (a addr) Network() string { return "virtio-serial" }
func (a addr) String() string  { return string(a) }

type conn struct {
	l      *Listener
	dev    io.ReadWriteCloser
	opened time.Time
	done   chan struct{}
	once   sync.Once

	rmu      sync.Mutex
	buf      []byte // rest of the current, checked frame
	partial  []byte // bytes of the next frame read ahead (from a restart)
	requests int
	eof      bool

	restart atomic.Bool // ended by a new client's first request (device stays open)

	wmu    sync.Mutex
	closed bool
}

// fill reads the next whole frame into c.buf (caller holds rmu, c.buf is empty), or detects
// a restart.
func (c *conn) fill() error {
	var hdr [frameHeader]byte
	n := copy(hdr[:], c.partial)
	c.partial = c.partial[n:]
	if _, err := io.ReadFull(c.dev, hdr[n:]); err != nil {
		return err
	}
	length := binary.BigEndian.Uint32(hdr[0:4])
	sid := binary.BigEndian.Uint32(hdr[4:8])
	if length > frameMax {
		return fmt.Errorf("vport %s: frame of %d bytes", c.l.name, length)
	}
	if hdr[8] == typeRequest {
		if sid == firstClientSeed && c.requests > 0 {
			c.restart.Store(true)
			c.l.mu.Lock()
			c.l.pending = append(hdr[:], c.partial...)
			c.l.mu.Unlock()
			c.partial = nil
			return io.EOF
		}
		c.requests++
	}
	frame := make([]byte, frameHeader+int(length))
	copy(frame, hdr[:])
	m := copy(frame[frameHeader:], c.partial)
	c.partial = c.partial[m:]
	if _, err := io.ReadFull(c.dev, frame[frameHeader+m:]); err != nil {
		return err
	}
	c.buf = frame
	return nil
}

func (c *conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.eof {
		return 0, io.EOF
	}
	if len(c.buf) == 0 {
		if err := c.fill(); err != nil {
			c.eof = true
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			return 0, err
		}
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.dev.Write(p)
}

// Close ends the connection; the device is closed too unless a restart was detected.
func (c *conn) Close() error {
	var err error
	c.once.Do(func() {
		c.wmu.Lock()
		c.closed = true
		c.wmu.Unlock()
		if !c.restart.Load() {
			c.l.mu.Lock()
			if c.l.dev == c.dev {
				c.l.dev = nil
				c.l.pending = nil
			}
			c.l.mu.Unlock()
			err = c.dev.Close()
		}
		close(c.done)
	})
	return err
}

func (c *conn) LocalAddr() net.Addr              { return addr(c.l.name) }
func (c *conn) RemoteAddr() net.Addr             { return addr("host") }
func (c *conn) SetDeadline(time.Time) error      { return nil }
func (c *conn) SetReadDeadline(time.Time) error  { return nil }
func (c *conn) SetWriteDeadline(time.Time) error { return nil }
