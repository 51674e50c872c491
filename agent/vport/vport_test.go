package vport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestFind(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	for port, name := range map[string]string{"vport1p1": "sealpod.agent\n", "vport1p2": "sealpod.sim-sp\n", "vport2p1": ""} {
		os.MkdirAll(filepath.Join(sys, port), 0o755)
		if name != "" {
			os.WriteFile(filepath.Join(sys, port, "name"), []byte(name), 0o644)
		}
	}
	p, err := Find(sys, dev, "sealpod.sim-sp")
	if err != nil || p != filepath.Join(dev, "vport1p2") {
		t.Fatalf("Find: %q %v", p, err)
	}
	if _, err := Find(sys, dev, "sealpod"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Find(prefix): %v", err)
	}
}

func TestListenerReopens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "port")
	os.WriteFile(path, []byte("x"), 0o600)
	l := NewListener(path)
	l.Backoff = 50 * time.Millisecond
	c1, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() {
		c2, err := l.Accept()
		if err == nil {
			c2.Close()
		}
		accepted <- err
	}()
	select {
	case <-accepted:
		t.Fatal("second Accept returned while the first connection was open")
	case <-time.After(100 * time.Millisecond):
	}
	start := time.Now()
	c1.Close()
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < l.Backoff {
		t.Fatal("a short-lived connection was reopened without backoff")
	}
	l.Close()
	if _, err := l.Accept(); err == nil {
		t.Fatal("Accept after Close")
	}
}

func frame(sid uint32, typ byte, payload string) []byte {
	b := make([]byte, frameHeader+len(payload))
	binary.BigEndian.PutUint32(b[0:], uint32(len(payload)))
	binary.BigEndian.PutUint32(b[4:], sid)
	b[8] = typ
	copy(b[frameHeader:], payload)
	return b
}

// readFrames reads n whole frames through c in small pieces.
func readFrames(t *testing.T, c io.Reader, n int) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, 3)
	for f := 0; f < n; f++ {
		var hdr [frameHeader]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			t.Fatalf("frame %d header: %v", f, err)
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[:4]))
		for got := 0; got < len(body); {
			m, err := c.Read(buf[:min(len(buf), len(body)-got)])
			if err != nil {
				t.Fatalf("frame %d body: %v", f, err)
			}
			copy(body[got:], buf[:m])
			got += m
		}
		out = append(append(out, hdr[:]...), body...)
	}
	return out
}

func TestListenerNewClientRestartsSession(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	guest, host := os.NewFile(uintptr(fds[0]), "guest"), os.NewFile(uintptr(fds[1]), "host")
	defer host.Close()
	opens := 0
	l := NewListenerFunc("test", func() (io.ReadWriteCloser, error) {
		opens++
		if opens > 1 {
			return nil, errors.New("reopened")
		}
		return guest, nil
	})
	defer l.Close()
	first := append(frame(1, typeRequest, "ping-1"), frame(3, typeRequest, "ping-2")...)
	host.Write(first)
	c1, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if got := readFrames(t, c1, 2); !bytes.Equal(got, first) {
		t.Fatalf("first session read %q", got)
	}
	if _, err := c1.Write([]byte("answer-1")); err != nil {
		t.Fatal(err)
	}
	// The host reconnects without the guest noticing: a new client's first request.
	again := frame(1, typeRequest, "ping-again")
	host.Write(again)
	if n, err := c1.Read(make([]byte, 64)); n != 0 || err != io.EOF {
		t.Fatalf("old session read %d, %v; want EOF", n, err)
	}
	c1.Close()
	if _, err := c1.Write([]byte("late")); err == nil {
		t.Fatal("write on a closed session succeeded")
	}
	c2, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept after restart: %v (the device must stay open)", err)
	}
	if got := readFrames(t, c2, 1); !bytes.Equal(got, again) {
		t.Fatalf("new session read %q", got)
	}
	c2.Write([]byte("answer-2"))
	got := make([]byte, 16)
	n, _ := io.ReadFull(host, got)
	if string(got[:n]) != "answer-1answer-2" {
		t.Fatalf("host read %q", got[:n])
	}
	// A response frame with stream 1 (not a request) does not restart.
	host.Write(frame(1, 2, "x"))
	if got := readFrames(t, c2, 1); !bytes.Equal(got, frame(1, 2, "x")) {
		t.Fatalf("non-request frame %q", got)
	}
	// Host disconnect: EOF, the device is closed and reopened by the next Accept.
	host.Close()
	if _, err := c2.Read(make([]byte, 8)); err != io.EOF {
		t.Fatalf("read after host close: %v", err)
	}
	c2.Close()
	if _, err := l.Accept(); err == nil || opens != 2 {
		t.Fatalf("Accept after disconnect: %v (opens %d), want a reopen", err, opens)
	}
}

type byteDev struct{ *bytes.Reader }

func (byteDev) Write(p []byte) (int, error) { return len(p), nil }
func (byteDev) Close() error                { return nil }

// FuzzConnFrames feeds arbitrary host bytes through the listener's frame reader: it must
// return only whole frames it checked, end sessions on a new client's first request, and
// never panic or allocate more than the frame limit.
func FuzzConnFrames(f *testing.F) {
	f.Add(append(frame(1, typeRequest, "a"), frame(3, typeRequest, "b")...))
	f.Add(append(append(frame(1, typeRequest, "a"), frame(1, typeRequest, "again")...), frame(3, 2, "x")...))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		dev := byteDev{bytes.NewReader(data)}
		l := NewListenerFunc("fuzz", func() (io.ReadWriteCloser, error) { return dev, nil })
		l.Backoff = 0
		for sessions := 0; sessions < 8; sessions++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			var got []byte
			buf := make([]byte, 7)
			for {
				n, err := c.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					break
				}
			}
			// Whatever was delivered is a sequence of whole frames.
			for len(got) > 0 {
				if len(got) < frameHeader {
					t.Fatalf("partial header delivered: %x", got)
				}
				n := frameHeader + int(binary.BigEndian.Uint32(got[:4]))
				if n > len(got) {
					t.Fatalf("partial frame delivered")
				}
				got = got[n:]
			}
			c.Close()
		}
	})
}
