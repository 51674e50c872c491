// Package qmptest is a fake QEMU QMP server for tests: it greets, answers qmp_capabilities,
// records every command (without its id) and the descriptors passed with it, and answers the
// others with a handler's reply.
package qmptest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/sealpod/sealpod/internal/golden"
)

// Command is one command the server received.
type Command struct {
	Execute   string         `json:"execute"`
	Arguments map[string]any `json:"arguments,omitempty"`
	// FDs is the number of descriptors that came with it (SCM_RIGHTS).
	FDs int `json:"fds,omitempty"`
}

// Reply is a handler's answer: Return (a JSON value, "" = {}), or Error (a QMP error desc),
// or Raw (sent verbatim, a protocol test's malformed line; "\n" is appended). Events are sent
// before the reply.
type Reply struct {
	Return string
	Error  string
	Raw    string
	Events []string
	// Hang: send nothing (the client's deadline ends the command).
	Hang bool
}

// Handler answers a command; files are the descriptors received with it (closed afterwards).
type Handler func(c Command, files []*os.File) Reply

// Server is a fake QMP server on a unix socket in a test's temporary directory.
type Server struct {
	Path string

	mu       sync.Mutex
	commands []Command
}

// Start starts a server answering with h (nil: {} to everything); it stops at the test's end.
func Start(t testing.TB, h Handler) *Server {
	t.Helper()
	dir, err := os.MkdirTemp("", "qmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{Path: filepath.Join(dir, "qmp.sock")}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.Path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if h == nil {
		h = func(Command, []*os.File) Reply { return Reply{} }
	}
	go func() {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			go s.serve(c, h)
		}
	}()
	return s
}

// Commands returns the commands received so far (qmp_capabilities included).
func (s *Server) Commands() []Command {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Command(nil), s.commands...)
}

// JSON is Commands as indented JSON (for golden files).
func (s *Server) JSON() []byte {
	b, _ := json.MarshalIndent(s.Commands(), "", "  ")
	return append(b, '\n')
}

// CheckGolden compares JSON with the golden file at path (golden.Check); with update (the
// test package's -update flag) it first writes the file.
func (s *Server) CheckGolden(t testing.TB, path string, update bool) {
	t.Helper()
	golden.Check(t, path, s.JSON(), update)
}

func (s *Server) serve(c *net.UnixConn, h Handler) {
	defer c.Close()
	w := bufio.NewWriter(c)
	send := func(line string) bool {
		_, err := w.WriteString(line + "\n")
		return err == nil && w.Flush() == nil
	}
	if !send(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "qmptest"}, "capabilities": ["oob"]}}`) {
		return
	}
	var pending []byte
	buf, oob := make([]byte, 4096), make([]byte, syscall.CmsgSpace(16*4))
	var files []*os.File
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		if oobn > 0 {
			msgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				fds, _ := syscall.ParseUnixRights(&m)
				for _, fd := range fds {
					files = append(files, os.NewFile(uintptr(fd), "qmp-fd"))
				}
			}
		}
		pending = append(pending, buf[:n]...)
		for {
			i := indexNL(pending)
			if i < 0 {
				break
			}
			line := pending[:i]
			pending = pending[i+1:]
			var req struct {
				Command
				ID json.RawMessage `json:"id"`
			}
			if err := json.Unmarshal(line, &req); err != nil {
				send(fmt.Sprintf(`{"error": {"class": "GenericError", "desc": "qmptest: %v"}}`, err))
				continue
			}
			cmd := req.Command
			cmd.FDs = len(files)
			s.mu.Lock()
			s.commands = append(s.commands, cmd)
			s.mu.Unlock()
			var r Reply
			if cmd.Execute != "qmp_capabilities" {
				r = h(cmd, files)
			}
			for _, f := range files {
				f.Close()
			}
			files = nil
			id := "null"
			if len(req.ID) > 0 {
				id = string(req.ID)
			}
			for _, e := range r.Events {
				send(e)
			}
			switch {
			case r.Hang:
			case r.Raw != "":
				send(r.Raw)
			case r.Error != "":
				desc, _ := json.Marshal(r.Error)
				send(fmt.Sprintf(`{"error": {"class": "GenericError", "desc": %s}, "id": %s}`, desc, id))
			default:
				ret := r.Return
				if ret == "" {
					ret = "{}"
				}
				send(fmt.Sprintf(`{"return": %s, "id": %s}`, ret, id))
			}
		}
	}
}

func indexNL(b []byte) int {
	for i, c := range b {
		if c == '\n' {
			return i
		}
	}
	return -1
}

// Hotplug answers as QEMU does to the commands of a disk hot-plug (qemu.Hotplug): add-fd
// returns the fd set it was asked for (an error if no descriptor came with it), every other
// command {}; the command named fail gets an error reply instead.
func Hotplug(fail string) Handler {
	return func(c Command, files []*os.File) Reply {
		if c.Execute == fail {
			return Reply{Error: "qmptest: " + fail + " refused"}
		}
		if c.Execute == "add-fd" {
			if len(files) != 1 {
				return Reply{Error: fmt.Sprintf("add-fd with %d descriptors", len(files))}
			}
			id, _ := c.Arguments["fdset-id"].(float64)
			return Reply{Return: fmt.Sprintf(`{"fdset-id": %d, "fd": 42}`, int(id))}
		}
		return Reply{}
	}
}
