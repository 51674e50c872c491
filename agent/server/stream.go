package server

import (
	"context"
	"io"
	"sync"
)

// maxBuffered bounds the output buffered per stream; a full buffer blocks the producer (the
// container's pipe fills and its writes block) until the host reads.
const maxBuffered = 1 << 20

// stream buffers one output stream of a process for ReadStdout/ReadStderr.
type stream struct {
	mu     sync.Mutex
	buf    []byte
	eof    bool
	denied bool
	change chan struct{} // closed and replaced on every change
	ended  func()        // called once the reader has ended (nil: nothing)
}

func newStream(r io.Reader, denied bool, ended func()) *stream {
	s := &stream{denied: denied, change: make(chan struct{}), ended: ended}
	if r == nil {
		s.eof = true
		return s
	}
	go s.fill(r)
	return s
}

func (s *stream) signal() {
	close(s.change)
	s.change = make(chan struct{})
}

func (s *stream) fill(r io.Reader) {
	if s.denied {
		// `logs: deny`: the output is consumed inside the guest and never buffered.
		_, _ = io.Copy(io.Discard, r)
		s.mu.Lock()
		s.eof = true
		s.signal()
		s.mu.Unlock()
		s.end()
		return
	}
	chunk := make([]byte, 32<<10)
	for {
		n, err := r.Read(chunk)
		s.mu.Lock()
		for n > 0 && len(s.buf) >= maxBuffered {
			ch := s.change
			s.mu.Unlock()
			<-ch
			s.mu.Lock()
		}
		if n > 0 {
			s.buf = append(s.buf, chunk[:n]...)
		}
		if err != nil {
			s.eof = true
		}
		s.signal()
		s.mu.Unlock()
		if err != nil {
			s.end()
			return
		}
	}
}

func (s *stream) end() {
	if s.ended != nil {
		s.ended()
	}
}

// read returns up to n buffered bytes, blocking until there are some or the stream ends.
func (s *stream) read(ctx context.Context, n int) (data []byte, eof, denied bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.denied {
		return nil, true, true, nil
	}
	for len(s.buf) == 0 && !s.eof {
		ch := s.change
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			s.mu.Lock()
			return nil, false, false, ctx.Err()
		}
		s.mu.Lock()
	}
	if len(s.buf) == 0 {
		return nil, true, false, nil
	}
	n = min(n, len(s.buf))
	data = append([]byte(nil), s.buf[:n]...)
	s.buf = s.buf[n:]
	if len(s.buf) == 0 {
		s.buf = nil
	}
	s.signal()
	return data, false, false, nil
}

// drained reports whether the stream has ended and everything buffered was read (or, with
// `logs: deny`, discarded): the host has nothing more to get from it.
func (s *stream) drained() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.eof && len(s.buf) == 0
}
