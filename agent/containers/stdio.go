package containers

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// stdio is one process's standard streams as the agent sees them: pipes, or a pty master.
type stdio struct {
	tty bool

	// Our ends.
	stdinW  *os.File // nil unless stdin was asked for (pipe mode)
	stdoutR *os.File
	stderrR *os.File // nil in tty mode
	master  *os.File // tty mode: the pty master (stdout and, with stdin, stdin)
	wantIn  bool

	// The child's ends, closed after start.
	child []*os.File
	// Console socket (tty mode): parent end receives the master.
	consParent *os.File

	closeOnce sync.Once
	// outEOF / errEOF are closed once the agent has read the stream to its end.
	outEOF, errEOF   chan struct{}
	outOnce, errOnce sync.Once
}

func newStdio(tty, stdin bool) (*stdio, error) {
	s := &stdio{tty: tty, wantIn: stdin, outEOF: make(chan struct{}), errEOF: make(chan struct{})}
	if tty {
		s.errOnce.Do(func() { close(s.errEOF) }) // no separate stderr
	}
	if tty {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("console socket: %w", err)
		}
		s.consParent = os.NewFile(uintptr(fds[0]), "console-parent")
		s.child = append(s.child, os.NewFile(uintptr(fds[1]), "console-child"))
		return s, nil
	}
	if stdin {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("stdin pipe: %w", err)
		}
		s.stdinW = w
		s.child = append(s.child, r)
	} else {
		null, err := os.Open(os.DevNull)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
		}
		s.child = append(s.child, null)
	}
	for _, dst := range []**os.File{&s.stdoutR, &s.stderrR} {
		r, w, err := os.Pipe()
		if err != nil {
			s.closeAll()
			return nil, fmt.Errorf("output pipe: %w", err)
		}
		*dst = r
		s.child = append(s.child, w)
	}
	return s, nil
}

// attach wires the child's ends into a libcontainer process.
func (s *stdio) attach(p *libcontainer.Process) {
	if s.tty {
		p.ConsoleSocket = s.child[0]
		p.ConsoleWidth, p.ConsoleHeight = 80, 24
		return
	}
	p.Stdin, p.Stdout, p.Stderr = s.child[0], s.child[1], s.child[2]
}

// afterStart closes the child's ends in this process and, in tty mode, receives the pty master.
func (s *stdio) afterStart() error {
	for _, f := range s.child {
		f.Close()
	}
	s.child = nil
	if !s.tty {
		return nil
	}
	m, err := recvFile(s.consParent)
	s.consParent.Close()
	s.consParent = nil
	if err != nil {
		return fmt.Errorf("receive pty master: %w", err)
	}
	s.master = m
	return nil
}

func (s *stdio) closeAll() {
	s.closeOnce.Do(func() {
		for _, f := range append(s.child, s.stdinW, s.stdoutR, s.stderrR, s.master, s.consParent) {
			if f != nil {
				f.Close()
			}
		}
		s.outOnce.Do(func() { close(s.outEOF) })
		s.errOnce.Do(func() { close(s.errEOF) })
	})
}

// stdout returns the reader of the process's standard output (the pty in tty mode).
func (s *stdio) stdout() io.Reader {
	if s.tty {
		return eofNotifier{ptyReader{s.master}, func() { s.outOnce.Do(func() { close(s.outEOF) }) }}
	}
	return eofNotifier{s.stdoutR, func() { s.outOnce.Do(func() { close(s.outEOF) }) }}
}

func (s *stdio) stderr() io.Reader {
	if s.tty {
		return nil
	}
	return eofNotifier{s.stderrR, func() { s.errOnce.Do(func() { close(s.errEOF) }) }}
}

// releaseAfterExit closes everything once the process has exited and the agent has read
// both outputs to EOF, or grace after the exit at the latest (a daemonised child may keep
// the pipes open; nobody reading for that long is not going to).
func (s *stdio) releaseAfterExit(exited <-chan struct{}, grace time.Duration) {
	<-exited
	if s.stdinW != nil {
		s.stdinW.Close() // nobody is left to read it
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	for _, ch := range []chan struct{}{s.outEOF, s.errEOF} {
		select {
		case <-ch:
		case <-t.C:
			s.closeAll()
			return
		}
	}
	s.closeAll()
}

// eofNotifier calls eof when the stream ends (or fails).
type eofNotifier struct {
	r   io.Reader
	eof func()
}

func (e eofNotifier) Read(b []byte) (int, error) {
	n, err := e.r.Read(b)
	if err != nil {
		e.eof()
	}
	return n, err
}

func (s *stdio) stdin() io.WriteCloser {
	switch {
	case !s.wantIn:
		return nil
	case s.tty:
		return ptyWriter{s.master}
	default:
		return s.stdinW
	}
}

func (s *stdio) resize(width, height uint16) error {
	if !s.tty || s.master == nil {
		return errors.New("resize: not a terminal")
	}
	return unix.IoctlSetWinsize(int(s.master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: width, Row: height})
}

// ptyReader turns the EIO a pty master returns once the slave side is closed into io.EOF.
type ptyReader struct{ f *os.File }

func (r ptyReader) Read(b []byte) (int, error) {
	n, err := r.f.Read(b)
	if err != nil && errors.Is(err, unix.EIO) {
		return n, io.EOF
	}
	return n, err
}

// ptyWriter: Close sends end-of-file (^D) to the terminal instead of closing the master,
// which would hang up the process.
type ptyWriter struct{ f *os.File }

func (w ptyWriter) Write(b []byte) (int, error) { return w.f.Write(b) }
func (w ptyWriter) Close() error {
	_, err := w.f.Write([]byte{4})
	return err
}

// recvFile receives one file descriptor (SCM_RIGHTS) from a unix socket.
func recvFile(sock *os.File) (*os.File, error) {
	name := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	var n, oobn int
	var err error
	for {
		n, oobn, _, _, err = unix.Recvmsg(int(sock.Fd()), name, oob, unix.MSG_CMSG_CLOEXEC)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for i := 1; i < len(fds); i++ {
			unix.Close(fds[i])
		}
		if len(fds) > 0 {
			return os.NewFile(uintptr(fds[0]), string(name[:n])), nil
		}
	}
	return nil, errors.New("no file descriptor received")
}
