// Package vsock is a net.Listener on an AF_VSOCK stream socket, for guests whose host offers
// a vhost-vsock device (KVM hosts). The agent serves its API on it in addition to the
// virtio-serial port when /dev/vsock exists. Sockets are non-blocking and use Go's poller, so
// Close interrupts Accept and connections support deadlines.
package vsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// DefaultPort is the agent API's vsock port (Kata's agent uses the same).
const DefaultPort = 1024

// Addr is a vsock address.
type Addr struct{ CID, Port uint32 }

// Network is "vsock".
func (a Addr) Network() string { return "vsock" }
func (a Addr) String() string {
	return strconv.FormatUint(uint64(a.CID), 10) + ":" + strconv.FormatUint(uint64(a.Port), 10)
}

// Listener accepts vsock connections.
type Listener struct {
	f      *os.File
	addr   Addr
	closed atomic.Bool
}

// Listen binds port on any CID (VMADDR_CID_ANY); port 0 picks one.
func Listen(port uint32) (*Listener, error) {
	if port == 0 {
		port = unix.VMADDR_PORT_ANY
	}
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vsock bind port %d: %w", port, err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vsock listen: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vsock getsockname: %w", err)
	}
	vm, _ := sa.(*unix.SockaddrVM)
	l := &Listener{f: os.NewFile(uintptr(fd), "vsock-listener")}
	if vm != nil {
		l.addr = Addr{CID: vm.CID, Port: vm.Port}
	}
	return l, nil
}

// Accept waits for a connection.
func (l *Listener) Accept() (net.Conn, error) {
	if l.closed.Load() {
		return nil, net.ErrClosed
	}
	rc, err := l.f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("vsock accept: %w", err)
	}
	var nfd int
	var sa unix.Sockaddr
	var aerr error
	err = rc.Read(func(fd uintptr) bool {
		nfd, sa, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		return !errors.Is(aerr, unix.EAGAIN)
	})
	if err != nil {
		if l.closed.Load() {
			return nil, net.ErrClosed
		}
		return nil, fmt.Errorf("vsock accept: %w", err)
	}
	if aerr != nil {
		return nil, fmt.Errorf("vsock accept: %w", aerr)
	}
	c := &Conn{File: os.NewFile(uintptr(nfd), "vsock-conn"), local: l.addr}
	if vm, ok := sa.(*unix.SockaddrVM); ok {
		c.remote = Addr{CID: vm.CID, Port: vm.Port}
	}
	return c, nil
}

// Close stops listening; a blocked Accept returns net.ErrClosed.
func (l *Listener) Close() error {
	l.closed.Store(true)
	return l.f.Close()
}

// Addr is the bound address.
func (l *Listener) Addr() net.Addr { return l.addr }

// Conn is an accepted connection.
type Conn struct {
	*os.File
	local, remote Addr
}

// LocalAddr / RemoteAddr name the ends.
func (c *Conn) LocalAddr() net.Addr  { return c.local }
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

var _ net.Conn = (*Conn)(nil)
